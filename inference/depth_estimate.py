"""Depth of panoramic frames from a monocular depth estimator, aligned across keyframes into one metric scale
(Matrix-3D's recipe for reconstructing a generated video, FACTS.md "Models"; Matrix-3D uses MoGe, which is not
on PyPI).

Estimator: any transformers depth-estimation folder (``AutoModelForDepthEstimation`` + ``AutoImageProcessor``:
Depth Anything V2, DPT/MiDaS, ZoeDepth, Depth Pro, ...), loaded ``local_files_only`` from safetensors weights, or
``tiny``: a small Depth Anything with random, seeded weights, written once as such a folder in the cache
(``$MATRIX_PANO_CACHE``, as ``inference.wan.tiny_folder``) and loaded by the same code.

Output kind: relative models (Depth Anything's ``relative`` checkpoints, DPT/MiDaS) predict affine-invariant
inverse depth ("disparity"); we take it as disparity up to a scale (its shift dropped, as is usual) and turn it
into depth by 1/x. A pixel whose disparity is under ``min_disparity`` times the panorama's largest disparity
(farther than 100x the nearest surface by default) counts as no surface, 0, as sky is in our depth convention:
that is how sky is told apart. Metric models (Depth Anything ``metric``, ZoeDepth, Depth Pro, GLPN, ...) predict
depth directly; they give sky a finite depth, so there sky cannot be told apart.

Panorama: the six cube faces (``CUBE_LAYOUT``, FOV 90) go through the estimator, each face's output becomes
planar depth and then range; since each face comes at its own unknown scale, the faces' scales are solved
together by least squares on their shared border pixels (log-ratios, geometric mean 1), and the faces are
stitched into an equirect of range (DESIGN.md: depth is range along the ray).

Keyframes: keyframe 0 is aligned to a reference depth when there is one (the generation's input depth), else
kept as is; each next keyframe is aligned by scale + shift to the previous aligned one, reprojected through the
poses. The poses' translations must be in the reference depth's units (metres for our data; a generated video's
``cameras.json`` is in the units of the depth it was generated from); without a reference, in keyframe 0's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.core.conventions import (
    CUBE_LAYOUT,
    as_c2w_array,
    check_equirect_size,
    direction_to_pixel,
    equirect_directions,
    equirect_to_crops,
    intrinsics,
    perspective_directions,
    perspective_to_equirect,
    planar_to_range,
)
from inference.guidance import invisible_pixels
from inference.wan import ModelFolderError, cached_folder, check_processor_folder, default_device

TINY = "tiny"
"""The preset name ``load_depth_estimator`` accepts instead of a folder."""
TINY_REVISION = 1
"""Bumped whenever the tiny config changes, so an old cached tiny folder is not reused."""
KINDS = ("depth", "disparity")
"""What an estimator's output is: planar depth, or inverse planar depth (up to a scale)."""
MIN_DISPARITY = 0.01
"""Default disparity floor, relative to the panorama's largest disparity: below it a pixel has no surface."""
FACE_FOV = 90.0
"""Field of view of the cube faces, degrees."""

_DEFAULT_KIND = {"dpt": "disparity", "depth_pro": "depth", "glpn": "depth", "prompt_depth_anything": "depth",
                 "tipsv2_dpt": "depth", "zoedepth": "depth"}
"""transformers ``model_type`` -> what its checkpoints predict (``depth_anything`` reads its config)."""
_EXPECTED = ("a transformers depth-estimation folder with config.json, preprocessor_config.json and *.safetensors "
             "weights (e.g. a download of depth-anything/Depth-Anything-V2-Small-hf), or 'tiny'")


@dataclass
class DepthEstimator:
    """A transformers depth-estimation model with its image processor, in eval mode with frozen weights."""

    model: Any
    """An ``AutoModelForDepthEstimation`` model."""
    processor: Any
    """Its ``AutoImageProcessor`` (resizing, normalisation and the model's own post-processing)."""
    kind: str
    """``depth`` or ``disparity``: what ``predict`` returns (see the module doc)."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's raw output (N, h, w) float32 for images (N, h, w, 3) uint8, resized back to the images'
        size by the processor's post-processing."""
        images = np.asarray(images)
        sizes = [tuple(images.shape[1:3])] * len(images)
        device = next(self.model.parameters()).device
        inputs = self.processor(images=list(images), return_tensors="pt").to(device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        post = self.processor.post_process_depth_estimation
        extra = {"source_sizes": sizes} if "source_sizes" in inspect.signature(post).parameters else {}  # ZoeDepth
        results = post(outputs, target_sizes=sizes, **extra)
        return np.stack([r["predicted_depth"].float().cpu().numpy() for r in results]).astype(np.float32)


def load_depth_estimator(path_or_tiny: str | Path, device: torch.device | str | None = None,
                         kind: str | None = None) -> DepthEstimator:
    """A depth estimator from a local transformers folder (safetensors only, nothing downloads) or ``tiny``.

    ``device`` defaults to the GPU when there is one; the model runs in fp32. ``kind`` (``depth`` or
    ``disparity``) defaults by model type: disparity for DPT and relative Depth Anything checkpoints, depth for
    the metric ones; other model types must say it. The preset name ``tiny`` shadows a folder of that name.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation

    if kind is not None and kind not in KINDS:
        raise ValueError(f"depth estimator kind {kind!r} is not one of {', '.join(KINDS)}")
    folder = tiny_folder() if str(path_or_tiny) == TINY else Path(path_or_tiny).expanduser()
    check_processor_folder(folder, "depth model", _EXPECTED)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    kind = kind or _default_kind(config)
    if kind is None:
        raise ValueError(f"{folder} holds a {config.model_type!r} model, for which we do not know whether it "
                         f"predicts depth or disparity: pass kind='depth' or kind='disparity'")
    try:
        model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                            dtype=torch.float32)
    except ValueError as exc:
        raise ModelFolderError(f"{folder} is not a transformers depth-estimation model: {exc}") from None
    device = torch.device(device) if device is not None else default_device()
    model.to(device).eval().requires_grad_(False)
    return DepthEstimator(model=model, processor=AutoImageProcessor.from_pretrained(folder, local_files_only=True),
                          kind=kind)


def _default_kind(config) -> str | None:
    """What checkpoints of this config predict, or None when we do not know."""
    if config.model_type == "depth_anything":
        return "disparity" if config.depth_estimation_type == "relative" else "depth"
    return _DEFAULT_KIND.get(config.model_type)


# --- tiny preset -----------------------------------------------------------------------------------------------


def tiny_model(seed: int = 0):
    """A relative Depth Anything (Dinov2 backbone, 4 layers of width 32, patch 14, input 56 x 56) with random
    weights drawn from ``seed``; its head's last bias is 1 so that the disparity is positive, as a trained
    model's is. The global RNG is left as it was."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        model.head.conv3.bias.fill_(1.0)
    return model


def save_tiny(folder: str | Path, seed: int = 0) -> Path:
    """Write ``tiny_model(seed)`` and a Depth Anything image processor (56 x 56, ImageNet normalisation) as a
    transformers folder (safetensors)."""
    from transformers import DPTImageProcessor

    folder = Path(folder)
    tiny_model(seed).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def tiny_folder(seed: int = 0) -> Path:
    """The cached tiny depth folder for ``seed``, written on first use (built in a temporary folder and renamed
    into place, so concurrent first uses are safe)."""
    import transformers

    return cached_folder(f"depth-tiny-r{TINY_REVISION}-seed{seed}-t{transformers.__version__}", "config.json",
                         lambda folder: save_tiny(folder, seed))


# --- one panorama ------------------------------------------------------------------------------------------------


def estimate_panorama_depth(estimator: DepthEstimator, equirect_rgb: np.ndarray, face_size: int | None = None,
                            min_disparity: float = MIN_DISPARITY) -> np.ndarray:
    """(H, W) float32 relative range depth of an equirect (H, W, 3) uint8 panorama, 0 where there is no surface.

    The six cube faces (``face_size`` pixels, default W / 4: the equator's resolution) go through the estimator;
    their scales are made to agree on the shared borders. The result's overall scale is arbitrary for relative
    models (``align_keyframe_depths`` fixes it); ``min_disparity`` is the sky floor of disparity models.
    """
    rgb = np.asarray(equirect_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"the panorama must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    width, _ = check_equirect_size(rgb.shape[1], rgb.shape[0])
    faces, rots = equirect_to_crops(rgb, face_size or max(width // 4, 1), FACE_FOV, CUBE_LAYOUT)
    planar = _planar_depth(estimator.predict(faces).astype(np.float64), estimator.kind, min_disparity)
    ranges = planar_to_range(planar, FACE_FOV)
    ranges *= _face_scales(ranges, rots)[:, None, None]
    return perspective_to_equirect(list(ranges), rots, width, FACE_FOV, mode="nearest").astype(np.float32)


def _planar_depth(raw: np.ndarray, kind: str, min_disparity: float) -> np.ndarray:
    """Planar depth (0 = no surface) from an estimator's raw output of the given kind."""
    raw = np.where(np.isfinite(raw), raw, 0.0)
    if kind == "depth":
        return np.maximum(raw, 0.0)
    floor = min_disparity * raw.max()
    with np.errstate(divide="ignore"):
        return np.where((raw > floor) & (raw > 0), 1.0 / raw, 0.0)


def _face_scales(ranges: np.ndarray, rots: np.ndarray) -> np.ndarray:
    """(F,) scales making the faces' range agree on their shared borders: each border pixel of a face against the
    neighbouring face that sees its ray, sampled there (linearly extrapolated past that face's edge, so both sit
    on the same ray); least squares on log-ratios, geometric mean 1."""
    n, size = len(ranges), ranges.shape[-1]
    ring = np.zeros((size, size), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    k = intrinsics(size, size, FACE_FOV)
    rays = perspective_directions(size, size, FACE_FOV, dtype=np.float64)[ring]
    rows, rhs = [], []
    for i in range(n):
        local = np.einsum("nji,pj->npi", rots, rays @ rots[i].T)  # every face's frame: R^T d
        local[i, :, 2] = -np.inf
        j = np.argmax(local[..., 2], axis=0)
        lj = local[j, np.arange(len(rays))]
        a = ranges[i][ring]
        b = _sample_extrapolated(ranges, j, k[0, 0] * lj[:, 0] / lj[:, 2] + k[0, 2],
                                 k[1, 1] * lj[:, 1] / lj[:, 2] + k[1, 2])
        ok = (a > 0) & (b > 0)
        row = np.zeros((int(ok.sum()), n))
        row[:, i] = 1.0
        row[np.arange(len(row)), j[ok]] -= 1.0
        rows.append(row)
        rhs.append(np.log(b[ok] / a[ok]))  # log s_i - log s_j = log(b / a)
    rows.append(np.ones((1, n)))
    rhs.append(np.zeros(1))
    log_scale = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
    return np.exp(log_scale)


def _sample_extrapolated(images: np.ndarray, index: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``images[index]`` (N, S, S) at continuous pixel coordinates (centres at + 0.5), linear
    beyond the outermost pixel centres; 0 where a corner has no depth."""
    size = images.shape[-1]
    xs, ys = x - 0.5, y - 0.5
    x0 = np.clip(np.floor(xs), 0, size - 2).astype(np.int64)
    y0 = np.clip(np.floor(ys), 0, size - 2).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    c00, c01 = images[index, y0, x0], images[index, y0, x0 + 1]
    c10, c11 = images[index, y0 + 1, x0], images[index, y0 + 1, x0 + 1]
    value = (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy
    return np.where(np.minimum(np.minimum(c00, c01), np.minimum(c10, c11)) > 0, value, 0.0)


# --- alignment ---------------------------------------------------------------------------------------------------


def align_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(scale, shift) minimising sum(mask * (scale * pred + shift - target)^2): weighted least squares in closed
    form. ``mask`` is bool or non-negative weights of the same shape. Raises ValueError when the fit is not
    determined (fewer than two pixels, constant ``pred``) or the inputs are not finite on the mask."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    w = np.asarray(mask, np.float64)
    if not p.shape == t.shape == w.shape:
        raise ValueError(f"pred {p.shape}, target {t.shape} and mask {w.shape} must have the same shape")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("the mask's weights must be finite and non-negative")
    sel = w > 0
    p, t, w = p[sel], t[sel], w[sel]
    if len(p) < 2:
        raise ValueError(f"scale and shift need at least two pixels on the mask, got {len(p)}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("pred and target must be finite on the mask")
    w = w / w.sum()
    mp, mt = w @ p, w @ t
    var = w @ (p - mp) ** 2
    if var <= 1e-18 * np.max(p * p):
        raise ValueError("pred is constant on the mask: scale and shift are not determined")
    scale = float(w @ ((p - mp) * (t - mt)) / var)
    return scale, float(mt - scale * mp)


def align_keyframe_depths(depths: np.ndarray, c2w: np.ndarray, reference_depth: np.ndarray | None = None,
                          sky_factor: float | None = None) -> np.ndarray:
    """(K, H, W) float32 metric range depth of keyframes from relative depths (K, H, W) (0 = no surface) and their
    poses ``c2w`` (K, 4, 4).

    Keyframe 0 is fitted to ``reference_depth`` (H, W) (the generation's input depth) when given, else kept at
    scale 1, shift 0; each next keyframe is fitted to the previous aligned one: the previous keyframe's points
    (its rays times its depth, through the poses; depth-edge pixels left out) are projected into the current
    keyframe's equirect, the nearest point per pixel kept, and scale + shift solved on the pixels hit, weighted
    by 1 / target^2 (every pixel counts by its relative error). Translations must be in the reference depth's
    units (module doc). Pixels the fit puts behind the camera become 0. ``sky_factor`` (Matrix-3D: 2) sets the
    pixels without a surface to that factor times the keyframe's largest depth; None keeps them 0.
    """
    d = np.asarray(depths, np.float64)
    poses = as_c2w_array(c2w)
    if d.ndim != 3 or len(d) != len(poses) or not len(d):
        raise ValueError(f"need depths (K, H, W) and one pose per keyframe, got {d.shape} and {len(poses)} poses")
    height, width = d.shape[1:]
    check_equirect_size(width, height)
    rays = equirect_directions(width, height, dtype=np.float64)
    out = np.zeros_like(d)
    for k in range(len(d)):
        if k == 0 and reference_depth is None:
            scale, shift = 1.0, 0.0
        elif k == 0:
            ref = np.asarray(reference_depth, np.float64)
            if ref.shape != d.shape[1:]:
                raise ValueError(f"reference depth {ref.shape} must have the keyframes' size {d.shape[1:]}")
            scale, shift = _fit(d[0], ref, ~invisible_pixels(ref), "the reference depth")
        else:
            target = _reprojected_range(out[k - 1], poses[k - 1], poses[k], rays)
            scale, shift = _fit(d[k], target, np.isfinite(target), f"keyframe {k - 1}")
        out[k] = np.where(d[k] > 0, np.maximum(scale * d[k] + shift, 0.0), 0.0)
    if sky_factor is not None:
        for k in range(len(d)):
            out[k][d[k] <= 0] = sky_factor * out[k].max()
    return out.astype(np.float32)


def _fit(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, against: str) -> tuple[float, float]:
    """Scale and shift of ``pred`` onto ``target`` on ``valid`` pixels off ``pred``'s depth edges, 1/target^2
    weighted; a non-positive scale (the depths disagree) raises."""
    mask = valid & ~invisible_pixels(pred)
    weights = np.where(mask, 1.0 / np.where(mask, target, 1.0) ** 2, 0.0)
    try:
        scale, shift = align_scale_shift(pred, np.where(mask, target, 0.0), weights)
    except ValueError as exc:
        raise ValueError(f"cannot align a keyframe's depth to {against}: {exc}") from None
    if scale <= 0:
        raise ValueError(f"a keyframe's depth does not agree with {against}: the fitted scale is {scale:.3g}")
    return scale, shift


def _reprojected_range(depth: np.ndarray, c2w_from: np.ndarray, c2w_to: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """(H, W) range from camera ``c2w_to`` of the nearest point of ``depth`` (seen from ``c2w_from``, depth edges
    left out) landing on each pixel; inf where none lands."""
    height, width = depth.shape
    keep = ~invisible_pixels(depth)
    world = (rays[keep] * depth[keep][:, None]) @ c2w_from[:3, :3].T + c2w_from[:3, 3]
    local = (world - c2w_to[:3, 3]) @ c2w_to[:3, :3]
    rng = np.linalg.norm(local, axis=1)
    u, v = direction_to_pixel(local, width, height)
    index = np.clip(np.floor(v).astype(np.int64), 0, height - 1) * width + np.floor(u).astype(np.int64) % width
    zbuf = np.full(height * width, np.inf)
    np.minimum.at(zbuf, index, rng)
    return zbuf.reshape(height, width)
