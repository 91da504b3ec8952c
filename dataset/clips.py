"""Rendering one planned clip into a shard row: frames streamed into the MP4 encoder, depth packed,
heuristic scores and the automatic verdict computed inline."""

from __future__ import annotations

import math

import numpy as np

from .codecs import Mp4Encoder, encode_depth
from .jobspec import JobSpec
from .render.base import Renderer


def heuristic_scores(depth_void: float, mean_depth: float, c2w: np.ndarray) -> dict:
    """Cheap quality scores: void fraction, mean hit depth, path length and total heading change."""
    pos = c2w[:, :3, 3]
    fwd = c2w[:, :3, 2]
    heading = np.unwrap(np.arctan2(fwd[:, 1], fwd[:, 0]))
    return {"void_fraction": float(depth_void), "mean_depth": float(mean_depth),
            "path_length_m": float(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum()),
            "rotation_deg": float(math.degrees(np.abs(np.diff(heading)).sum()))}


def verdict(scores: dict, spec: JobSpec) -> tuple[str, list[str]]:
    """``accepted`` or ``rejected`` with readable reasons, from the spec's thresholds."""
    a = spec.annotation
    reasons = []
    if scores["void_fraction"] > a.max_void_fraction:
        reasons.append(f"void_fraction {scores['void_fraction']:.2f} > max_void_fraction {a.max_void_fraction}")
    if scores["mean_depth"] < a.min_mean_depth:
        reasons.append(f"mean_depth {scores['mean_depth']:.2f} m < min_mean_depth {a.min_mean_depth} m")
    return ("rejected" if reasons else "accepted"), reasons


def render_clip(renderer: Renderer, spec: JobSpec, c2w: np.ndarray) -> dict:
    """The payload columns of one clip: rgb_mp4, depth, c2w, scores, status, reject_reasons."""
    width, height = spec.resolution
    enc = Mp4Encoder(width, height, spec.fps, spec.output.video_crf, spec.output.video_preset, threads=1)
    depth = np.empty((len(c2w), height, width), np.float16)
    void = 0.0
    depth_sum, hits = 0.0, 0
    for i, pose in enumerate(c2w):
        frames = renderer.render(pose[None], width)
        enc.add(frames.rgb[0])
        d = frames.depth[0]
        depth[i] = d
        hit = d > 0
        void += 1.0 - hit.mean()
        depth_sum += float(d[hit].sum())
        hits += int(hit.sum())
    scores = heuristic_scores(void / len(c2w), depth_sum / max(hits, 1), c2w)
    status, reasons = verdict(scores, spec)
    return {"rgb_mp4": enc.finish(), "depth": encode_depth(depth), "c2w": [m.reshape(-1).tolist() for m in c2w],
            "scores": scores, "status": status, "reject_reasons": reasons}
