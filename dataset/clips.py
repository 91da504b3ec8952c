"""Rendering one planned clip into a shard row: frames streamed into the MP4 encoder, depth packed,
quality scores and the automatic verdict computed inline (``annotation.filters``)."""

from __future__ import annotations

import numpy as np

from annotation.filters import StreamingScores, verdict

from .codecs import Mp4Encoder, encode_depth
from .jobspec import JobSpec
from .render.base import Renderer


def render_clip(renderer: Renderer, spec: JobSpec, c2w: np.ndarray) -> dict:
    """The payload columns of one clip: rgb_mp4, depth, c2w, scores, status, reject_reasons."""
    width, height = spec.resolution
    enc = Mp4Encoder(width, height, spec.fps, spec.output.video_crf, spec.output.video_preset, threads=1)
    depth = np.empty((len(c2w), height, width), np.float16)
    scorer = StreamingScores(len(c2w), spec.annotation.near_limit_m)
    for i, pose in enumerate(c2w):
        frames = renderer.render(pose[None], width)
        enc.add(frames.rgb[0])
        scorer.add(frames.rgb[0], frames.depth[0])
        depth[i] = frames.depth[0]
    scores = scorer.finish(c2w)
    status, reasons = verdict(scores, spec.annotation)
    return {"rgb_mp4": enc.finish(), "depth": encode_depth(depth), "c2w": [m.reshape(-1).tolist() for m in c2w],
            "scores": scores, "status": status, "reject_reasons": reasons}
