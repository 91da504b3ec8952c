"""Rendering one planned clip into a shard row: frames streamed into the MP4 encoder, depth packed,
quality scores and the automatic verdict computed inline (``annotation.filters``)."""

from __future__ import annotations

import numpy as np

from annotation.filters import StreamingScores, verdict
from dataset.core.codecs import Mp4Encoder, encode_depth
from dataset.core.jobspec import JobSpec
from dataset.render.base import Renderer
from dataset.store.rows import shard_row


def render_clip(renderer: Renderer, spec: JobSpec, c2w: np.ndarray) -> dict:
    """The payload columns of one clip: rgb_mp4, depth, scores, status, reject_reasons."""
    width, height = spec.resolution
    enc = Mp4Encoder(width, height, spec.fps, spec.output.video_crf, spec.output.video_preset, threads=1)
    depth = np.empty((len(c2w), height, width), np.float16)
    scorer = StreamingScores(len(c2w), spec.annotation.near_limit_m)
    for i, pose in enumerate(c2w):
        frames = renderer.render(pose[None], width)
        enc.add(frames.rgb[0])
        scorer.add(frames.rgb[0], frames.depth[0], pose)
        depth[i] = frames.depth[0]
    scores = scorer.finish(c2w)
    status, reasons = verdict(scores, spec.annotation)
    return {"rgb_mp4": enc.finish(), "depth": encode_depth(depth), "scores": scores, "status": status,
            "reject_reasons": reasons}


def clip_row(renderer: Renderer, spec: JobSpec, source: str, scene_id: str, clip_id: str, trajectory_id: str,
             c2w: np.ndarray) -> dict:
    """The whole shard row of a planned clip, rendered with ``renderer``."""
    width, height = spec.resolution
    return shard_row(clip_id=clip_id, scene_id=scene_id, trajectory_id=trajectory_id, scene=source, width=width,
                     height=height, fps=spec.fps, c2w=c2w, renderer=renderer.kind, renderer_version=renderer.version,
                     config_hash=spec.config_hash(), seed=spec.seed, **render_clip(renderer, spec, c2w))
