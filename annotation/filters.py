"""Model-free quality filters of a clip: detail, exposure, void and depth sanity, camera and image motion.

They run inline in ``build`` (on frames still in memory) and again on demand in ``annotate`` (on
decoded frames); both call ``clip_scores`` and ``verdict``. Only ``ANALYSED_FRAMES`` evenly spaced
frames are analysed for the image scores, so a clip costs a few tens of milliseconds.

Scores (stored in the shards' ``scores`` column unless said otherwise):

- ``detail``: variance of the Laplacian of grey perspective crops (4 horizontal views, FOV 90, a
  quarter of the panorama width but at most ``CROP_SIZE`` px), median over analysed frames; blurred or
  flat renders score low.
- ``dark_fraction`` / ``saturated_fraction``: pixels with luma < 16 / > 250.
- ``sky_fraction``: pixels with no hit (depth 0) whose ray points at or above the horizon (non-negative
  world up component), mean over all frames: open sky. No threshold rejects it (outdoor clips are
  rightly half sky). Not a shard column yet (``dataset.store.shards.SCORE_NAMES``): rows drop it.
- ``void_fraction``: every other pixel without a usable hit: no hit below the horizon (the world ends,
  or the camera looks out of it), invalid depth, or a hit nearer than ``near_limit`` metres, mean over
  all frames: a camera stuck against a wall or looking into nothing. ``sky_fraction + void_fraction``
  is what this score counted before the split (data scored before it holds that sum here).
- ``near_fraction``: the part of ``void_fraction`` from nearer than ``near_limit`` only.
- ``mean_depth``: mean hit depth in metres; ``depth_invalid_fraction``: non-finite or negative depth.
- ``path_length_m`` / ``rotation_deg``: camera travel and total heading change, from the poses.
- ``flow_px``: mean optical-flow magnitude between consecutive frames (Farneback, at ``FLOW_WIDTH``
  px wide), in pixels of a ``FLOW_WIDTH``-wide panorama per frame.

Which rays point below the horizon comes from each frame's pose (the world direction of each pixel's ray
through ``c2w``); without poses the cameras are taken as level and upright, so the lower half of the
panorama is below the horizon.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from dataset.core.conventions import (
    crop_rotation,
    direction_to_pixel,
    equirect_directions,
    heading_of,
    perspective_directions,
)

ANALYSED_FRAMES = 8
"""Frames per clip used for the image and flow scores (evenly spaced, first and last included)."""
CROP_SIZE = 224
"""Side of the perspective crops the detail score is measured on."""
FLOW_WIDTH = 256
"""Width of the panorama the optical flow is computed on."""



def analysed_indices(num_frames: int) -> np.ndarray:
    """Indices of the frames the image scores look at."""
    return np.unique(np.linspace(0, num_frames - 1, min(ANALYSED_FRAMES, num_frames)).round().astype(int))


@lru_cache(maxsize=8)
def _crop_maps(width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """cv2.remap tables for 4 horizontal FOV-90 crops of a width x height equirect, at about the panorama's own
    resolution (a quarter of its width, at most CROP_SIZE) so that upsampling does not pass for blur."""
    size = max(16, min(CROP_SIZE, width // 4))
    d = perspective_directions(size, size, 90.0, dtype=np.float64)
    maps = []
    for yaw in (0.0, 90.0, 180.0, 270.0):
        u, v = direction_to_pixel(d @ crop_rotation(yaw, 0.0).T, width, height)
        maps.append(((u - 0.5).astype(np.float32), (v - 0.5).astype(np.float32)))
    return maps


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def image_scores(frames: np.ndarray) -> dict[str, float]:
    """Detail and exposure scores of a few (H, W, 3) uint8 equirect frames."""
    height, width = frames.shape[1:3]
    details, dark, saturated = [], [], []
    for rgb in frames:
        grey = _luma(rgb)
        dark.append(float((grey < 16).mean()))
        saturated.append(float((grey > 250).mean()))
        crops = [cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
                 for mx, my in _crop_maps(width, height)]
        details.append(float(np.mean([cv2.Laplacian(c, cv2.CV_32F).var() for c in crops])))
    return {"detail": float(np.median(details)), "dark_fraction": float(np.mean(dark)),
            "saturated_fraction": float(np.mean(saturated))}


def flow_score(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean optical-flow magnitude over (frame, next frame) pairs of (h, FLOW_WIDTH) grey images."""
    if not pairs:
        return 0.0
    mags = []
    for a, b in pairs:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mags.append(float(np.linalg.norm(flow, axis=2).mean()))
    return float(np.mean(mags))


def small_grey(rgb: np.ndarray) -> np.ndarray:
    """Grey panorama FLOW_WIDTH pixels wide (the optical-flow input)."""
    h, w = rgb.shape[:2]
    return cv2.resize(_luma(rgb), (FLOW_WIDTH, max(1, round(h * FLOW_WIDTH / w))), interpolation=cv2.INTER_AREA)


LEVEL_UP = np.array([0.0, -1.0, 0.0])
"""World up in the frame of a level, upright camera (DESIGN.md: y_cam points down)."""


@lru_cache(maxsize=4)
def _pixel_rays(width: int, height: int) -> np.ndarray:
    """(H * W, 3) camera-frame ray of every equirect pixel (cached: the horizon test runs on every frame)."""
    return equirect_directions(width, height).reshape(-1, 3)


def below_horizon(c2w: np.ndarray | None, height: int, width: int) -> np.ndarray | None:
    """(H, W) mask of the equirect pixels whose world ray points below the horizontal plane.

    None for no pose or a level, upright camera: then the below-horizon pixels are exactly the lower half
    of the rows (a middle row of an odd height lies on the horizon and counts as above), which callers
    slice instead of masking.
    """
    if c2w is None:
        return None
    up = np.asarray(c2w, np.float64)[2, :3]  # world +Z in camera coordinates
    if np.abs(up - LEVEL_UP).max() < 1e-7:  # tilts this small move no pixel centre across the horizon
        return None
    return (_pixel_rays(width, height) @ up.astype(np.float32) < 0).reshape(height, width)


def _depth_sums(depth: np.ndarray, near_limit: float, below: np.ndarray | None = None) -> np.ndarray:
    """[pixels, sky, void, near, hit depth sum, hits, invalid] of (..., H, W) range depth.

    ``below``: (H, W) mask of the below-horizon pixels (``below_horizon``); None takes the lower half rows.
    """
    d = np.asarray(depth, np.float32)
    invalid = ~np.isfinite(d) | (d < 0)
    hit = ~invalid & (d > 0)
    near = hit & (d < near_limit)
    empty = d == 0
    if below is None:
        sky = empty[..., : (d.shape[-2] + 1) // 2, :].sum()
    else:
        sky = (empty & ~below).sum()
    hits, nears = hit.sum(), near.sum()
    void = d.size - sky - (hits - nears)  # everything but sky and usable hits
    return np.array([d.size, sky, void, nears, d[hit].sum(dtype=np.float64), hits, invalid.sum()], np.float64)


def _depth_scores_of(sums: np.ndarray) -> dict[str, float]:
    pixels, sky, void, near, hit_sum, hits, invalid = sums
    return {"sky_fraction": sky / pixels, "void_fraction": void / pixels, "near_fraction": near / pixels,
            "mean_depth": hit_sum / hits if hits else 0.0, "depth_invalid_fraction": invalid / pixels}


def depth_scores(depth: np.ndarray, near_limit: float, c2w: np.ndarray | None = None) -> dict[str, float]:
    """Sky, void, near, mean-depth and validity scores of (T, H, W) range depth in metres (0 = no hit).

    ``c2w`` (T, 4, 4) tells which rays point below the horizon; None takes level, upright cameras.
    """
    depth = np.asarray(depth)
    if c2w is None:
        return _depth_scores_of(_depth_sums(depth, near_limit))
    height, width = depth.shape[1:]
    sums = sum(_depth_sums(d, near_limit, below_horizon(p, height, width)) for d, p in zip(depth, c2w, strict=True))
    return _depth_scores_of(sums)


def pose_scores(c2w: np.ndarray) -> dict[str, float]:
    """Camera path length (m) and total heading change (degrees) of (T, 4, 4) c2w poses."""
    pos = c2w[:, :3, 3]
    heading = np.unwrap(heading_of(c2w))
    return {"path_length_m": float(np.linalg.norm(np.diff(pos, axis=0), axis=1).sum()),
            "rotation_deg": float(math.degrees(np.abs(np.diff(heading)).sum()))}


def clip_scores(frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray, near_limit: float) -> dict[str, float]:
    """Every model-free score of a whole clip: frames (T, H, W, 3) uint8, depth (T, H, W), c2w (T, 4, 4)."""
    idx = analysed_indices(len(frames))
    pairs = [(small_grey(frames[i]), small_grey(frames[i + 1])) for i in idx if i + 1 < len(frames)]
    return {**image_scores(frames[idx]), **depth_scores(depth, near_limit, c2w), **pose_scores(c2w),
            "flow_px": flow_score(pairs)}


class StreamingScores:
    """The same scores as ``clip_scores``, fed one frame at a time (the build renders frame by frame)."""

    def __init__(self, num_frames: int, near_limit: float) -> None:
        self.wanted = set(analysed_indices(num_frames).tolist())
        self.near_limit = near_limit
        self.frames: list[np.ndarray] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.depth_sums = np.zeros(7)
        self._prev_small: np.ndarray | None = None
        self._i = 0

    def add(self, rgb: np.ndarray, depth: np.ndarray, c2w: np.ndarray | None = None) -> None:
        """Look at the next frame: (H, W, 3) uint8, its (H, W) range depth and its (4, 4) pose (which rays
        point below the horizon; None: a level, upright camera)."""
        i = self._i
        small = small_grey(rgb) if i in self.wanted or i - 1 in self.wanted else None
        if i in self.wanted:
            self.frames.append(rgb.copy())
        if i - 1 in self.wanted:
            self.pairs.append((self._prev_small, small))
        self._prev_small = small
        self.depth_sums += _depth_sums(depth, self.near_limit, below_horizon(c2w, *depth.shape))
        self._i += 1

    def finish(self, c2w: np.ndarray) -> dict[str, float]:
        """All scores of the frames seen."""
        return {**image_scores(np.stack(self.frames)), **_depth_scores_of(self.depth_sums), **pose_scores(c2w),
                "flow_px": flow_score(self.pairs)}


def verdict(scores: dict[str, float], thresholds) -> tuple[str, list[str]]:
    """``accepted`` or ``rejected`` with one readable reason per failed threshold.

    ``thresholds`` is the job spec's ``annotation`` section (``dataset.jobspec.AnnotationSpec``).
    """
    t = thresholds
    s = scores
    checks = [
        (s["void_fraction"] > t.max_void_fraction,
         f"void_fraction {s['void_fraction']:.2f} > {t.max_void_fraction}: camera against a wall or facing nothing"),
        (s["mean_depth"] < t.min_mean_depth,
         f"mean_depth {s['mean_depth']:.2f} m < {t.min_mean_depth} m: camera too close to the geometry"),
        (s["depth_invalid_fraction"] > 0,
         f"depth_invalid_fraction {s['depth_invalid_fraction']:.3f} > 0: depth has negative or non-finite values"),
        (s["detail"] < t.min_detail, f"detail {s['detail']:.1f} < {t.min_detail}: blurred, flat or empty frames"),
        (s["dark_fraction"] > t.max_dark_fraction,
         f"dark_fraction {s['dark_fraction']:.2f} > {t.max_dark_fraction}: under-exposed or black frames"),
        (s["saturated_fraction"] > t.max_saturated_fraction,
         f"saturated_fraction {s['saturated_fraction']:.2f} > {t.max_saturated_fraction}: over-exposed frames"),
        (s["path_length_m"] < t.min_path_length_m and s["rotation_deg"] < t.min_rotation_deg,
         f"camera motion {s['path_length_m']:.2f} m / {s['rotation_deg']:.0f} deg < {t.min_path_length_m} m / "
         f"{t.min_rotation_deg} deg: the camera hardly moves"),
        (s["flow_px"] < t.min_flow_px, f"flow_px {s['flow_px']:.2f} < {t.min_flow_px}: no visible motion"),
    ]
    reasons = [reason for failed, reason in checks if failed]
    return ("rejected" if reasons else "accepted"), reasons
