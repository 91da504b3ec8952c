"""Dataset clips for the reconstruction tests: rendered along given poses and committed as a build commits them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def commit_clip(out: Path, scene: str, c2w: np.ndarray, clip_id: str = "walk", width: int = 512) -> Path:
    """A ``width`` x ``width / 2`` clip of ``scene`` along ``c2w``, committed into ``out`` as ``matrix-pano build``
    does."""
    from dataset.core.jobspec import JobSpec
    from dataset.jobs.clips import clip_row
    from dataset.render.embedded import EmbeddedRenderer
    from dataset.sources import load_scene
    from dataset.store.shards import ShardWriter

    spec = JobSpec.model_validate({"scenes": [scene], "frames_per_clip": len(c2w), "resolution": [width, width // 2]})
    writer = ShardWriter(out / "shards", rows_per_group=1)
    with EmbeddedRenderer(load_scene(scene)) as renderer:
        writer.add(clip_row(renderer, spec, scene, scene.split(":")[-1], clip_id, clip_id, c2w))
    writer.commit(0)
    return out
