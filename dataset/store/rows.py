"""The one builder of shard rows (``shards.SCHEMA``): every job that adds clips to a dataset calls it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import numpy as np

from dataset.core.conventions import poses_to_rows


def package_version() -> str:
    """This package's version, as stored in every row and manifest."""
    try:
        return version("matrix-pano")
    except PackageNotFoundError:
        return "0+unknown"


def shard_row(*, clip_id: str, scene_id: str, trajectory_id: str, scene: str, width: int, height: int, fps: float,
              c2w: np.ndarray, rgb_mp4: bytes, depth: bytes, scores: dict, status: str, reject_reasons: list[str],
              renderer: str, renderer_version: str, config_hash: str, seed: int, caption: str | None = None) -> dict:
    """A clip's row: ids, size, payloads (H.264 video, zstd float16 depth), poses (one 16-list per frame, validated),
    scores, verdict and provenance. ``num_frames`` is the number of poses."""
    return {"clip_id": clip_id, "scene_id": scene_id, "trajectory_id": trajectory_id, "scene": scene,
            "width": width, "height": height, "num_frames": len(c2w), "fps": fps, "rgb_mp4": rgb_mp4, "depth": depth,
            "c2w": poses_to_rows(c2w), "caption": caption, "scores": scores, "status": status,
            "reject_reasons": reject_reasons, "renderer": renderer, "renderer_version": renderer_version,
            "package_version": package_version(), "config_hash": config_hash, "seed": seed}
