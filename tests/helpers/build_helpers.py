"""Job specs and deliberately bad clips shared by the build, reader and annotation tests."""

from __future__ import annotations

import numpy as np

SMALL_BUILD = {"scenes": ["procedural:indoor:1", "procedural:room:6x8x3"], "trajectories_per_scene": 2,
               "frames_per_clip": 6, "resolution": [128, 64], "output": {"shard_size_mb": 0.001, "rows_per_group": 1}}
"""Four small clips in a few seconds; shards cut so small that each clip has its own (four shards)."""


class BlackFrames:
    """A renderer whose colour output is broken (all black), as a crashed GPU instance would give."""

    kind, version = "black", "1"

    def __init__(self, inner) -> None:
        self.inner = inner

    def render(self, c2w, width):
        from dataset.render.base import Frames

        f = self.inner.render(c2w, width)
        return Frames(np.zeros_like(f.rgb), f.depth, f.instance)


def inside_wall(scene, start: np.ndarray) -> np.ndarray:
    """A pose 4 cm behind the first wall hit horizontally from ``start`` (so inside that wall)."""
    from dataset.core.raycast import EmbreeCaster

    pos = start[:3, 3]
    caster = EmbreeCaster(scene.vertices, scene.faces)
    try:
        for direction in np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]):
            hits = caster.cast(pos[None].astype(np.float32), direction[None].astype(np.float32))
            if hits.prim[0] >= 0:
                pose = start.copy()
                pose[:3, 3] = pos + (float(hits.t[0]) + 0.04) * direction
                return pose
    finally:
        caster.close()
    raise AssertionError("no wall around the start point")


def bad_clips(scene, renderer, good_c2w: np.ndarray) -> dict[str, tuple]:
    """name -> (renderer, poses) of three broken clips next to a good trajectory: no motion, black frames,
    camera inside a wall."""
    n = len(good_c2w)
    still = np.repeat(good_c2w[:1], n, axis=0)
    wall = np.repeat(inside_wall(scene, good_c2w[0])[None], n, axis=0)
    wall[:, 2, 3] += np.linspace(0, 0.01, n)  # drifts inside the wall
    return {"no motion": (renderer, still), "black frames": (BlackFrames(renderer), good_c2w),
            "inside a wall": (renderer, wall)}


def add_bad_shard(out, status: str | None = None) -> list[str]:
    """Render the three bad clips of ``bad_clips`` in the first scene of a built dataset with its own spec and
    commit them as one more shard (with ``status`` instead of their inline verdicts, when given); returns their
    clip ids."""
    import json
    from pathlib import Path

    from dataset.core.jobspec import JobSpec
    from dataset.jobs.clips import clip_row
    from dataset.jobs.worker import plan_scene
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.store.shards import ShardWriter, next_shard_number

    out = Path(out)
    spec = JobSpec.model_validate(json.loads((out / "manifest.json").read_text())["spec"])
    scene, plan = plan_scene(spec, spec.scenes[0])
    good = plan.clips[0].c2w
    writer = ShardWriter(out / "shards", spec.output.rows_per_group)
    ids = []
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as renderer:
        for name, (r, poses) in bad_clips(scene, renderer, good).items():
            cid = f"bad-{name.replace(' ', '-')}"
            row = clip_row(r, spec, spec.scenes[0], plan.scene_id, cid, cid, poses)
            writer.add({**row, "status": status or row["status"]})
            ids.append(cid)
    writer.commit(next_shard_number(out))
    return ids
