"""What panoramic reconstruction optimises against: keyframes, their perspective crops with planar depth, and the
initial Gaussians from the keyframes' depth (Matrix-3D's recipe, FACTS.md "Models").

A panoramic clip (equirect frames, range depth, c2w poses) becomes ``CropViews``: 12 pinhole crops per frame
(``CROP12_LAYOUT``: yaw 0/90/180/270 x pitch 0/+45/-45, FOV 90) through the conventions module, each with its
own c2w (the frame's pose times the crop's rotation) and planar depth (range turned into z along the crop's
axis). ``init_gaussians`` lifts the keyframes' depth into points, leaving out the invisible depth-edge pixels of
``inference.guidance.invisible_pixels`` (their depth mixes foreground and background), and sizes each Gaussian by
the distance to its nearest neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dataset.core.conventions import (
    CROP12_LAYOUT,
    as_c2w_array,
    equirect_directions,
    equirect_to_crops,
    intrinsics,
    range_to_planar,
)
from inference.gaussians import Gaussians, rgb_to_sh0
from inference.guidance import DEFAULT_THRESHOLD, invisible_pixels

EDGE_REFERENCE_WIDTH = 960
"""The panorama width at which depth edges use guidance's ``DEFAULT_THRESHOLD`` (Matrix-3D's 480p)."""
KEYFRAME_EVERY = 5
"""Keyframe stride of Matrix-3D's paper (its released script uses 10)."""
INIT_OPACITY = 0.1
"""Initial opacity of every Gaussian (the 3DGS default)."""


def keyframe_indices(num_frames: int, every: int = KEYFRAME_EVERY) -> np.ndarray:
    """Frames 0, every, 2 every, ... of a clip; the others are held out for evaluation."""
    if num_frames < 1 or every < 1:
        raise ValueError(f"need at least one frame and a stride of at least 1 (got {num_frames}, {every})")
    return np.arange(0, num_frames, every)


def held_out_indices(num_frames: int, every: int = KEYFRAME_EVERY) -> np.ndarray:
    """The frames that are not keyframes."""
    return np.setdiff1d(np.arange(num_frames), keyframe_indices(num_frames, every))


@dataclass
class CropViews:
    """Pinhole views cut from panoramic frames (all the same size, FOV and intrinsics)."""

    rgb: np.ndarray
    """(V, S, S, 3) uint8 colour."""
    depth: np.ndarray | None
    """(V, S, S) float32 planar depth in metres (0 = none), or None without depth."""
    c2w: np.ndarray
    """(V, 4, 4) float64 camera-to-world of each crop camera (OpenCV)."""
    K: np.ndarray
    """(3, 3) intrinsics shared by every view."""
    frame: np.ndarray
    """(V,) index of the clip frame each view was cut from."""
    names: list[str]
    """``{prefix}{frame:04d}_y{yaw}_p{pitch}`` per view (file names of the evaluation images; prefix ``f`` for clip
    frames)."""

    def __len__(self) -> int:
        return len(self.rgb)


def supersample_factor(width: int, size: int, fov_deg: float = 90.0) -> int:
    """Samples per crop pixel side that match an equirect ``width``'s resolution at a ``size``-pixel crop's centre
    (panorama pixels per crop pixel there, rounded up; 1 when the crop is at least as fine)."""
    crop_px_per_rad = size / (2 * np.tan(np.radians(fov_deg) / 2))
    return max(1, int(np.ceil(width / (2 * np.pi) / crop_px_per_rad - 1e-9)))


def crop_views(frames: np.ndarray, c2w: np.ndarray, indices: Sequence[int], size: int,
               depth: np.ndarray | None = None, fov_deg: float = 90.0,
               layout: Sequence[tuple[float, float]] = CROP12_LAYOUT, prefix: str = "f") -> CropViews:
    """The ``layout`` crops of ``frames[i]`` (N, H, W, 3) uint8 for each i in ``indices``, posed by ``c2w`` (N, 4, 4);
    with ``depth`` (N, H, W) range in metres, each crop's planar depth (nearest sampling, so depth edges stay
    sharp). Colour is area-averaged over ``supersample_factor`` x that many samples per crop pixel, so a crop
    coarser than the panorama is filtered rather than aliased (a point sample of a fine texture is noise no
    reconstruction could predict at another pose)."""
    c2w = as_c2w_array(c2w)
    f = supersample_factor(frames.shape[2], size, fov_deg)
    rgbs, depths, poses, frame_of, names = [], [], [], [], []
    for i in indices:
        crops, rots = equirect_to_crops(frames[i], size * f, fov_deg, layout)
        if f > 1:
            blocks = crops.reshape(len(crops), size, f, size, f, 3)
            crops = blocks.mean(axis=(2, 4), dtype=np.float32).round().astype(np.uint8)
        rgbs.append(crops)
        if depth is not None:
            rng, _ = equirect_to_crops(depth[i], size, fov_deg, layout, mode="nearest")
            depths.append(range_to_planar(rng, fov_deg).astype(np.float32))
        for (yaw, pitch), rot in zip(layout, rots, strict=True):
            pose = c2w[i].copy()
            pose[:3, :3] = c2w[i, :3, :3] @ rot
            poses.append(pose)
            frame_of.append(int(i))
            names.append(f"{prefix}{int(i):04d}_y{int(yaw):03d}_p{int(pitch):+03d}")
    return CropViews(np.concatenate(rgbs), np.concatenate(depths) if depth is not None else None, np.stack(poses),
                     intrinsics(size, size, fov_deg), np.asarray(frame_of), names)


def edge_threshold(width: int) -> float:
    """The 1-ring depth variation above which a pixel of a ``width``-wide panorama is a depth edge: guidance's 5 %
    at 960 px and above, growing as the pixels do below (a floor seen at a grazing angle varies by more than 5 %
    between neighbours at 256 px: 29 % of a room panorama's pixels would count as edges, none at 0.19)."""
    return DEFAULT_THRESHOLD * max(1.0, EDGE_REFERENCE_WIDTH / width)


def depth_points(frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray, indices: Sequence[int],
                 threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World points (P, 3) float64 and their colours (P, 3) uint8 of every keyframe pixel with depth that is not an
    invisible depth edge (``threshold``: default ``edge_threshold`` of the panorama's width)."""
    c2w = as_c2w_array(c2w)
    h, w = depth.shape[1:]
    threshold = edge_threshold(w) if threshold is None else threshold
    dirs = equirect_directions(w, h, dtype=np.float64)
    points, colours = [], []
    for i in indices:
        keep = (depth[i] > 0) & ~invisible_pixels(depth[i], threshold)
        cam = dirs[keep] * depth[i][keep][:, None]
        points.append(cam @ c2w[i, :3, :3].T + c2w[i, :3, 3])
        colours.append(frames[i][keep])
    return np.concatenate(points), np.concatenate(colours)


def init_gaussians(frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray, indices: Sequence[int],
                   max_points: int = 200_000, threshold: float | None = None, seed: int = 0,
                   neighbours: int = 3, opacity: float = INIT_OPACITY) -> Gaussians:
    """Isotropic Gaussians on the keyframes' depth points (``depth_points``; at most ``max_points``, drawn
    uniformly with ``seed``): colour of their pixel, ``opacity`` (3DGS starts SfM points at ``INIT_OPACITY``; dense
    exact depth is a surface already and may start nearly opaque), standard deviation the mean
    distance to their ``neighbours`` nearest points of the same keyframe (as 3DGS initialises from SfM points;
    within one keyframe, because nearby keyframes see nearly the same points and would make every Gaussian far
    smaller than a pixel's footprint)."""
    from scipy.spatial import cKDTree

    points, colours, spacing = [], [], []
    for i in indices:
        p, c = depth_points(frames, depth, c2w, [i], threshold)
        if len(p) > 1:
            k = min(neighbours + 1, len(p))
            dist, _ = cKDTree(p).query(p, k=k)
            spacing.append(dist[:, 1:].mean(axis=1))
            points.append(p)
            colours.append(c)
    if not points:
        raise ValueError("the keyframes have no depth to initialise from (every pixel is sky or a depth edge)")
    points, colours, spacing = np.concatenate(points), np.concatenate(colours), np.concatenate(spacing)
    if len(points) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
        points, colours, spacing = points[pick], colours[pick], spacing[pick]
    spacing = np.maximum(spacing, 1e-4)
    n = len(points)
    if not 0 < opacity < 1:
        raise ValueError(f"initial opacity {opacity} must be between 0 and 1")
    logit = float(np.log(opacity / (1 - opacity)))
    return Gaussians(means=torch.tensor(points, dtype=torch.float32),
                     log_scales=torch.tensor(np.log(spacing), dtype=torch.float32)[:, None].repeat(1, 3),
                     quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                     opacity_logits=torch.full((n,), logit),
                     sh0=rgb_to_sh0(torch.tensor(colours, dtype=torch.float32) / 255.0))


__all__ = ["CropViews", "KEYFRAME_EVERY", "crop_views", "depth_points", "held_out_indices", "init_gaussians",
           "edge_threshold", "keyframe_indices", "supersample_factor"]
