"""Training augmentations of the panoramic video model, applied when a clip is cached (``training.cache_job``):
a model trained on exact rendered depth should tolerate estimated depth (and its guidance) at inference.

Each augmented variant of a clip (``augment_inputs``) rolls every frame by one random whole number of columns with
the poses turned to match (``roll_yaw``: the seam moves, the scene does not), scales its frame-0 depth by one
random global factor times a smooth low-frequency field that wraps across the 360° seam (``jitter_depth``: what a
depth estimator aligned up to scale gets wrong), and after the guidance is rendered from that depth erodes its mask
by a random 0..N px (``erode_guidance``: guidance black outside). Variants are drawn from ``variant_rng``, a
generator seeded by a stable hash of (seed, clip id, variant index), so a rerun caches the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field
from scipy.ndimage import minimum_filter1d

from dataset.core.conventions import crop_rotation
from dataset.core.ids import stable_id
from dataset.core.jobspec import StrictModel

NOISE_CELLS = (4, 8)
"""Cells of the depth noise field's coarse grid: (pole to pole, around), 45° each: low frequency only."""


class AugmentSpec(StrictModel):
    """Augmented variants cached per clip besides the clean one, and how each is drawn."""

    copies: int = Field(0, ge=0)
    """Augmented variants cached per clip besides the clean row; 0 = no augmentation."""
    yaw_roll: bool = True
    """Roll every frame by one random whole number of columns, the poses rotated to match."""
    depth_scale: float = Field(0.1, ge=0)
    """Std of the log of one global depth scale factor per variant (depth estimators align up to scale)."""
    depth_noise: float = Field(0.05, ge=0)
    """Std of the log of a smooth multiplicative low-frequency depth field (≈ its relative std), seam-wrapping."""
    mask_erosion_px: int = Field(2, ge=0)
    """The guidance mask is eroded by a random 0..N px (wrapping in width), guidance black outside it."""
    seed: int = 0
    """Seed of the variants, hashed with each clip id and variant index."""


def variant_rng(seed: int, clip_id: str, index: int) -> np.random.Generator:
    """The random generator of variant ``index`` of clip ``clip_id`` (a stable hash, the same in every run)."""
    return np.random.default_rng(int(stable_id("augment", seed, clip_id, index), 16))


def roll_rotation(k: int, width: int) -> np.ndarray:
    """4x4 rotation R in the camera frame such that a camera ``c2w @ R`` sees ``np.roll(pano, k, axis=W)``.

    Column u looks along longitude λ_u; after the roll it shows what column u - k showed, longitude λ_u - 2πk/W,
    so R turns the camera about its vertical (y) axis by -360 k / W degrees: left for k > 0
    (``crop_rotation`` turns right for positive yaw)."""
    r = np.eye(4)
    r[:3, :3] = crop_rotation(-360.0 * k / width, 0.0)
    return r


def roll_yaw(frames: np.ndarray, c2w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W, ...) rolled by ``k`` columns along W and poses (N, 4, 4) ``c2w @ R`` to match: each rolled
    frame is what its camera sees turned by -360 k / W degrees about its vertical axis."""
    frames = np.asarray(frames)
    return np.roll(frames, int(k), axis=2), np.asarray(c2w, np.float64) @ roll_rotation(int(k), frames.shape[2])


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cells: tuple[int, int] = NOISE_CELLS
                 ) -> np.ndarray:
    """(H, W) smooth field, standard normal at every pixel: normals on a coarse grid (``cells[0] + 1`` rows pole
    to pole, ``cells[1]`` columns wrapping across the seam) blended with smoothstep weights and divided by the
    weights' norm, so every pixel has unit variance."""
    h, w = shape
    rows, cols = cells
    grid = rng.standard_normal((rows + 1, cols))
    y = (np.arange(h) + 0.5) / h * rows
    y0 = np.minimum(np.floor(y).astype(np.int64), rows - 1)
    ty = _smoothstep(y - y0)
    x = (np.arange(w) + 0.5) / w * cols
    x0 = np.floor(x).astype(np.int64)
    tx = _smoothstep(x - x0)
    wy, iy = (1.0 - ty, ty), (y0, y0 + 1)
    wx, ix = (1.0 - tx, tx), (x0 % cols, (x0 + 1) % cols)
    values = sum(wy[a][:, None] * wx[b][None, :] * grid[np.ix_(iy[a], ix[b])] for a in (0, 1) for b in (0, 1))
    norm = np.sqrt((wy[0] ** 2 + wy[1] ** 2)[:, None] * (wx[0] ** 2 + wx[1] ** 2)[None, :])
    return values / norm


def jitter_depth(depth: np.ndarray, rng: np.random.Generator, scale: float, noise: float
                 ) -> tuple[np.ndarray, float]:
    """Depth (..., H, W) times exp(N(0, ``scale``)), one global factor, times exp(``noise`` x ``smooth_noise``)
    over the panorama; returns the jittered float32 depth and the global factor. Zero depth (sky) stays zero."""
    depth = np.asarray(depth, np.float32)
    factor = float(np.exp(rng.normal(0.0, scale)))
    relative = np.exp(noise * smooth_noise(depth.shape[-2:], rng))
    return (depth * (factor * relative)).astype(np.float32), factor


def erode_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """Mask (..., H, W) bool eroded by a (2 px + 1)-square: a pixel stays only if all within ``px`` columns
    (wrapping across the 360° seam) and rows (clamped at the poles) are set."""
    out = np.asarray(mask, bool)
    if px <= 0:
        return out.copy()
    out = minimum_filter1d(out, 2 * px + 1, axis=-1, mode="wrap")
    return minimum_filter1d(out, 2 * px + 1, axis=-2, mode="nearest")


def erode_guidance(guidance: np.ndarray, mask: np.ndarray, px: int) -> tuple[np.ndarray, np.ndarray]:
    """Guidance frames (N, H, W, 3) and masks (N, H, W) with the mask eroded by ``px`` and the guidance black
    outside it (as ``render_guidance`` leaves unknown pixels)."""
    mask = erode_mask(mask, px)
    return np.where(mask[..., None], guidance, 0).astype(guidance.dtype), mask


@dataclass
class AugmentedInputs:
    """One variant of a clip: what guidance is rendered from and along, the erosion its mask gets, and what was
    applied (JSON-able)."""

    frames: np.ndarray
    """(N, H, W, 3) uint8 frames, rolled."""
    c2w: np.ndarray
    """(N, 4, 4) poses, rotated to match the roll."""
    depth0: np.ndarray
    """(H, W) float32 frame-0 depth, rolled and jittered."""
    erosion_px: int
    """Pixels to erode the rendered guidance mask by (``erode_guidance``)."""
    applied: dict = field(default_factory=dict)
    """``roll_px``, ``depth_factor`` (the global scale), ``depth_noise`` (its field's std) and ``erosion_px``."""


def augment_inputs(frames: np.ndarray, c2w: np.ndarray, depth0: np.ndarray, spec: AugmentSpec,
                   rng: np.random.Generator) -> AugmentedInputs:
    """A variant of a clip's frames (N, H, W, 3), poses (N, 4, 4) and frame-0 depth (H, W) under ``spec``, drawn
    from ``rng`` (always in the same order: roll, depth, erosion)."""
    width = np.asarray(frames).shape[2]
    k = int(rng.integers(width)) if spec.yaw_roll else 0
    frames, c2w = roll_yaw(frames, c2w, k)
    depth0 = np.roll(np.asarray(depth0), k, axis=1)
    depth0, factor = jitter_depth(depth0, rng, spec.depth_scale, spec.depth_noise)
    erosion = int(rng.integers(spec.mask_erosion_px + 1))
    return AugmentedInputs(frames, c2w, depth0, erosion, {"roll_px": k, "depth_factor": factor,
                                                          "depth_noise": spec.depth_noise, "erosion_px": erosion})


__all__ = ["AugmentSpec", "AugmentedInputs", "augment_inputs", "erode_guidance", "erode_mask", "jitter_depth",
           "roll_rotation", "roll_yaw", "smooth_noise", "variant_rng"]
