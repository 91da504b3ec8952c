"""Ingesting Movie Render Queue panoramas (``editor/mrq_panorama.py``) as dataset clips.

MRQ writes one EXR per frame and pass: ``<pass>.<frame>.exr``. The colour pass (linear HDR) is
converted to sRGB uint8; the depth pass holds range in cm in its first channel (the post-process
material of ``mrq_panorama.py``), converted to metres with the far value (>= 600 m) as 0 = no hit.
The clip is scored like a built one and committed as a new shard of the dataset in ``out``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from annotation.filters import clip_scores, verdict
from dataset.build import package_version
from dataset.codecs import encode_depth, encode_mp4
from dataset.ids import stable_id
from dataset.jobspec import AnnotationSpec
from dataset.shards import ShardWriter, committed_clip_ids, next_shard_number

FAR_CM = 60000.0


def read_exr(path: Path) -> np.ndarray:
    """An EXR's pixels as float32: (H, W, 3) for RGB(A) images, (H, W) for single-channel ones."""
    import OpenEXR

    try:
        channels = OpenEXR.File(str(path)).channels()
    except Exception as exc:  # the bindings raise plain exceptions for unreadable files
        raise ValueError(f"cannot read {path} as EXR: {exc}") from None
    if "RGBA" in channels or "RGB" in channels:
        return np.asarray(channels.get("RGB", channels.get("RGBA")).pixels, np.float32)[..., :3]
    if all(c in channels for c in "RGB"):
        return np.stack([np.asarray(channels[c].pixels, np.float32) for c in "RGB"], axis=-1)
    first = channels[sorted(channels)[0]].pixels
    return np.asarray(first, np.float32)


def _first_channel(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.ndim == 3 else img


def linear_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """Linear HDR colour to sRGB uint8 (clipped at 1)."""
    x = np.clip(rgb, 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(srgb * 255).astype(np.uint8)


def pass_frames(folder: Path, pass_name: str) -> list[Path]:
    """``<pass>.<frame>.exr`` files of one pass, in frame order."""
    pattern = re.compile(rf"^{re.escape(pass_name)}\.(\d+)\.exr$", re.I)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name)))
    return [p for _, p in found]


def ingest_mrq(frames_dir: str | Path, c2w: np.ndarray, fps: float, out_dir: str | Path, trajectory_id: str,
               scene: str, color_pass: str = "FinalImage", depth_pass: str = "M_RangeDepth",
               thresholds: AnnotationSpec | None = None, crf: int = 18) -> str:
    """Add one rendered trajectory to the dataset in ``out_dir`` as a committed shard; returns its clip id."""
    folder = Path(frames_dir)
    colours, depths = pass_frames(folder, color_pass), pass_frames(folder, depth_pass)
    if not colours or len(colours) != len(depths) or len(colours) != len(c2w):
        raise ValueError(f"{folder}: {len(colours)} '{color_pass}' and {len(depths)} '{depth_pass}' frames for "
                         f"{len(c2w)} poses: pass names (--color-pass/--depth-pass) or the trajectory do not match")
    clip = stable_id("clip", "unreal-mrq", scene, trajectory_id)
    if clip in committed_clip_ids(out_dir):
        return clip
    rgb = np.stack([linear_to_srgb8(read_exr(p)[..., :3]) for p in colours])
    depth = np.stack([_first_channel(read_exr(p)) for p in depths]) / 100.0
    depth = np.where((depth >= FAR_CM / 100.0) | ~np.isfinite(depth) | (depth < 0), 0.0, depth).astype(np.float32)
    n, h, w = depth.shape
    if rgb.shape[1:3] != (h, w) or w != 2 * h:
        raise ValueError(f"{folder}: colour {rgb.shape[1:3]} and depth {(h, w)} must be the same 2:1 equirect size")
    t = thresholds or AnnotationSpec()
    scores = clip_scores(rgb, depth, c2w, t.near_limit_m)
    status, reasons = verdict(scores, t)
    writer = ShardWriter(Path(out_dir) / "shards")
    writer.add({"clip_id": clip, "scene_id": stable_id("scene", scene), "trajectory_id": trajectory_id,
                "scene": scene, "width": w, "height": h, "num_frames": n, "fps": fps,
                "rgb_mp4": encode_mp4(rgb, fps, crf), "depth": encode_depth(depth),
                "c2w": [m.reshape(-1).tolist() for m in c2w], "caption": None, "scores": scores, "status": status,
                "reject_reasons": reasons, "renderer": "unreal-mrq", "renderer_version": "mrq-panoramic-1",
                "package_version": package_version(), "config_hash": stable_id("mrq", color_pass, depth_pass),
                "seed": 0})
    writer.commit(next_shard_number(out_dir))
    return clip
