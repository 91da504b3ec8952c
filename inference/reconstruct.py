"""``matrix-pano reconstruct``: a panoramic clip becomes an explorable 3D Gaussian world, evaluated on frames it
was not fitted to.

Stages (each timed in ``metrics.json``): keyframes every ``keyframe_every`` frames (``inference.recon_views``);
their 12 perspective crops with planar depth; Gaussians initialised on the keyframes' depth without depth-edge
pixels; optimisation (``inference.gs_opt``, Matrix-3D's recipe); evaluation on crops of the held-out frames (the
non-keyframes; for a dataset clip whose scene this machine can render, also panoramas rendered at poses beside the
trajectory, ``off_trajectory``) against three baselines in the same run: ``init``, the initial point cloud rendered
as it is (Gaussians of ``init_opacity``), ``mesh``, the frame-0 panorama mesh of ``inference.guidance`` rendered at
the held-out crops (black where the mesh knows nothing, as in guidance), and ``mean_colour``. Method ``lrm``
replaces the initialisation and optimisation by the feed-forward model (``inference.lrm.predict``) on the whole
video; everything else is the same.

Output folder::

    DIR/scene.ply            the Gaussians (INRIA layout, metric world coordinates, Z up)
    DIR/cameras.json         the clip's poses, Matrix-3D format (world-to-camera OpenCV per frame, world frame)
    DIR/keyframes/NNNN.png   the keyframe panoramas (for the viewer)
    DIR/metrics.json         psnr, ssim, lpips (+ each baseline's) of the held-out frames, the same under
                             off_trajectory (or null, with the reason in missing), gaussians, seconds per stage
    DIR/eval/NAME_pred.png   held-out render, with NAME_gt.png, NAME_init.png and NAME_mesh.png beside it
                             (NAME = fFFFF_yYYY_pPP for clip frames, oMMMM_yYYY_pPP for off-trajectory poses)

``eval_folder`` recomputes the table from ``DIR/eval/`` alone (``matrix-pano eval-recon``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from dataset.core.jobspec import StrictModel
from inference.gs_opt import OptConfig, optimise, render_views
from inference.recon_views import (
    KEYFRAME_EVERY,
    CropViews,
    crop_views,
    held_out_indices,
    init_gaussians,
    keyframe_indices,
)

BASELINES = ("init", "mesh", "mean_colour")
"""The baselines rendered at the held-out views beside the reconstruction: the depth point cloud as it is, the
frame-0 panorama mesh, and the keyframes' mean colour everywhere (init and mesh need the keyframes' depth)."""
IMAGE_KINDS = ("pred", "gt") + BASELINES
"""The evaluation images per held-out view: ``eval/NAME_KIND.png``."""
OFF_PREFIX = "o"
"""Name prefix of the off-trajectory evaluation views (clip frames' views start with ``f``)."""
FREE_MARGIN_M = 0.3
"""Free space an off-trajectory pose needs beyond its move (along the move, in the frame's depth), metres."""
FREE_CONE_DEG = 10.0
"""Half-angle of the cone around the move that must be free, degrees."""
MATCH_PSNR_DB = 28.0
"""Below this PSNR between the scene re-rendered at a clip pose and the clip's own frame, the scene is not the one
the clip was rendered from (or not with the same settings) and no off-trajectory views are made."""


class ReconConfig(StrictModel):
    """A ``reconstruct`` run (the initialisation and ``opt`` fields serve method ``opt``; views and evaluation
    both)."""

    keyframe_every: int = Field(KEYFRAME_EVERY, ge=1)
    """Keyframe stride; the other frames are held out for evaluation."""
    crop_size: int = Field(512, ge=16, le=4096)
    """Side of the perspective crops (FOV 90) the Gaussians are fitted to and evaluated on, pixels."""
    max_points: int = Field(300_000, ge=1)
    """Initial Gaussians at most (drawn uniformly from the keyframes' depth points)."""
    init_opacity: float = Field(0.9, gt=0, lt=1)
    """Opacity of the initial Gaussians. 3DGS starts sparse SfM points at 0.1; dense exact depth is a surface
    already, and nearly opaque it is a strong baseline that optimisation improves in far fewer iterations (room
    clip, 32 px crops: 30.6 -> 34.3 dB held-out in 200 iterations from 0.99, 9.3 -> 21.4 dB in 300 from 0.1)."""
    eval_every: int = Field(1, ge=1)
    """Evaluate every this many held-out frames (all 12 crops of each)."""
    off_trajectory_views: int = Field(4, ge=0)
    """Extra held-out panoramas at poses beside the trajectory, rendered by the clip's scene (dataset clips of the
    embedded renderer whose scene loads here); 0 = none."""
    off_trajectory_m: float = Field(0.3, gt=0)
    """How far those poses lie beside the trajectory: held-out frames' poses moved along the camera's horizontal
    right (or left) axis, metres."""
    super_resolution: str | None = None
    """A transformers image super-resolution folder (Swin2SR, ...) or ``tiny``: the training crops are cut at
    ``crop_size`` / its scale and upscaled to ``crop_size`` (Matrix-3D's StableSR step; ``inference.super_resolution``).
    None: no super-resolution."""
    opt: OptConfig = OptConfig()
    """The optimisation recipe."""


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def mesh_baseline(rgb0: np.ndarray, depth0: np.ndarray, c2w0: np.ndarray, views: CropViews) -> np.ndarray:
    """(V, S, S, 3) uint8: the frame-0 panorama mesh (``inference.guidance``) rendered at ``views``, black where the
    mesh has no visible surface."""
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from inference.guidance import panorama_mesh

    mesh = panorama_mesh(rgb0, depth0, c2w0)
    size = views.rgb.shape[1]
    with EmbeddedRenderer(mesh.scene, RenderSettings(auto_gain=False, mipmaps=False)) as renderer:
        frames = renderer.render_perspective(views.c2w, size, size, 90.0)
    return np.where((frames.instance == 0)[..., None], frames.rgb, 0).astype(np.uint8)


def image_metrics(pred: np.ndarray, gt: np.ndarray, lpips_weights: str | Path | None = None) -> dict:
    """``psnr`` (capped), ``ssim`` and ``lpips`` (None without weights) of image batches (V, S, S, 3) uint8."""
    from inference.metrics import PSNR_CAP_DB, frame_lpips, frame_psnr, frame_ssim

    out = {"psnr": float(np.minimum(frame_psnr(pred, gt), PSNR_CAP_DB).mean()),
           "ssim": float(frame_ssim(pred, gt).mean()), "lpips": None}
    if lpips_weights is not None:
        out["lpips"] = float(frame_lpips(pred, gt, lpips_weights).mean())
    return out


def reconstruct_clip(frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray, out: str | Path, cfg: ReconConfig,
                     lpips_weights: str | Path | None = None, backend: str = "auto", progress: bool = True,
                     source: dict | None = None, device: str | None = None,
                     off_trajectory: OffTrajectory | None = None, lrm: LRMRun | None = None) -> dict:
    """Reconstruct a panoramic clip (frames (N, H, W, 3) uint8, range depth (N, H, W) metres of at least its
    keyframes, c2w (N, 4, 4)) into ``out``; returns metrics.json's content. The Gaussians live on ``device``
    (default: the GPU when there is one, where ``auto`` picks gsplat). ``off_trajectory`` adds held-out views
    beside the trajectory (``render_off_trajectory``). With ``lrm`` the feed-forward model predicts the Gaussians
    from the whole video (method ``lrm``; ``depth`` may then be None, which leaves out the depth baselines)
    instead of the optimisation fitting them to the keyframes (method ``opt``)."""
    import torch

    from dataset.core.conventions import save_matrix3d_cameras
    from inference.ply import save_ply

    out = Path(out)
    if len(frames) < 2:
        raise ValueError(f"a clip of {len(frames)} frame cannot be evaluated: reconstruction needs held-out frames")
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    keys = keyframe_indices(len(frames), cfg.keyframe_every)
    held = held_out_indices(len(frames), cfg.keyframe_every)[::cfg.eval_every]
    if len(held) == 0:
        raise ValueError(f"keyframe_every {cfg.keyframe_every} leaves no held-out frame in a {len(frames)}-frame clip")
    has_depth = depth is not None and bool((depth[keys] > 0).any())
    if lrm is None and not has_depth:
        raise ValueError("the optimisation needs the keyframes' depth (give --depth or --depth-model)")
    train = crop_views(frames, c2w, keys, cfg.crop_size, depth=depth) if lrm is None else None
    groups = {"held_out": crop_views(frames, c2w, held, cfg.crop_size)}
    off_trajectory = off_trajectory or OffTrajectory(missing="no scene to render it from")
    if off_trajectory.rgb is not None:
        groups["off_trajectory"] = crop_views(off_trajectory.rgb, off_trajectory.c2w, range(len(off_trajectory.rgb)),
                                              cfg.crop_size, prefix=OFF_PREFIX)
    seconds["views"] = time.perf_counter() - t
    if cfg.super_resolution is not None and train is not None:
        t = time.perf_counter()
        train.rgb = _super_resolved(frames, c2w, keys, cfg, device)
        seconds["super_resolution"] = time.perf_counter() - t
    init = None
    if has_depth:
        t = time.perf_counter()
        init = init_gaussians(frames, depth, c2w, keys, max_points=cfg.max_points,
                              opacity=cfg.init_opacity).to(device)
        seconds["init"] = time.perf_counter() - t
    extra: dict = {}
    if lrm is None:
        result = optimise(init, train, cfg.opt, backend=backend, progress=progress, device=device)
        seconds["optimise"] = result.seconds
        gaussians = result.gaussians
        extra = {"final_loss": result.losses[-1], "gaussians_init": len(init)}
    else:
        from inference.lrm import predict

        gaussians, timing, used = predict(lrm.model, lrm.vae, frames, c2w, lrm.frame_stride, device)
        seconds.update(timing)
        extra = {"frames_used": used, "checkpoint": lrm.checkpoint, "gaussians_init": None if init is None
                 else len(init)}
    t = time.perf_counter()
    mean = frames[keys].reshape(-1, 3).mean(0).round().astype(np.uint8)
    images = {}
    for group, views in groups.items():
        images[group] = {"gt": views.rgb, "pred": render_views(gaussians, views, backend),
                         "mean_colour": np.broadcast_to(mean, views.rgb.shape).copy()}
        if has_depth:
            images[group]["init"] = render_views(init, views, backend)
            images[group]["mesh"] = mesh_baseline(frames[0], depth[0], c2w[0], views)
    seconds["evaluate"] = time.perf_counter() - t

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval").mkdir(exist_ok=True)
    (out / "keyframes").mkdir(exist_ok=True)
    save_ply(out / "scene.ply", gaussians)  # save_ply moves to the CPU
    save_matrix3d_cameras(out / "cameras.json", c2w)
    for k in keys:
        _save_png(out / "keyframes" / f"{int(k):04d}.png", frames[k])
    for group, views in groups.items():
        for v, name in enumerate(views.names):
            for kind, batch in images[group].items():
                _save_png(out / "eval" / f"{name}_{kind}.png", batch[v])
    metrics = _table(images["held_out"], lpips_weights)
    if "off_trajectory" in images:
        metrics["off_trajectory"] = {**_table(images["off_trajectory"], lpips_weights, missing=False),
                                     "views": len(groups["off_trajectory"]),
                                     "poses": np.round(off_trajectory.c2w, 6).tolist()}
    else:
        metrics["off_trajectory"] = None
        metrics["missing"]["off_trajectory"] = off_trajectory.missing
    seconds["total"] = sum(seconds.values())
    metrics.update({"gaussians": len(gaussians), **extra,
                    "keyframes": [int(k) for k in keys], "held_out": [int(h) for h in held],
                    "views": {"train": 0 if train is None else len(train), "eval": len(groups["held_out"]),
                              "off_trajectory": len(groups.get("off_trajectory", ()))},
                    "seconds": {k: round(v, 3) for k, v in seconds.items()}, "method": "opt" if lrm is None else "lrm",
                    "config": cfg.model_dump(mode="json"), "source": source or {}})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics


def _super_resolved(frames: np.ndarray, c2w: np.ndarray, keys: np.ndarray, cfg: ReconConfig,
                    device: str) -> np.ndarray:
    """The training crops' colour cut at ``crop_size`` / the model's scale and upscaled by
    ``cfg.super_resolution``."""
    from inference.super_resolution import load_super_resolution

    sr = load_super_resolution(cfg.super_resolution, device)
    if cfg.crop_size % sr.scale:
        raise ValueError(f"crop size {cfg.crop_size} is not a multiple of the super-resolution model's scale "
                         f"{sr.scale}: choose a crop size divisible by it")
    small = crop_views(frames, c2w, keys, cfg.crop_size // sr.scale)
    return sr.upscale(small.rgb)


def _table(images: dict[str, np.ndarray], lpips_weights: str | Path | None, missing: bool = True) -> dict:
    """metrics.json's evaluation keys: the reconstruction's psnr/ssim/lpips at the top level, each baseline's under
    ``baselines`` (None where its images are absent), and (with ``missing``) ``missing`` naming every None."""
    ours = image_metrics(images["pred"], images["gt"], lpips_weights)
    table = {**ours, "baselines": {b: image_metrics(images[b], images["gt"], lpips_weights) if b in images else None
                                   for b in BASELINES}}
    if missing:
        table["missing"] = {} if lpips_weights is not None else {"lpips": "no --lpips-weights given"}
        for b in BASELINES:
            if b not in images:
                table["missing"][f"baselines.{b}"] = "needs the keyframes' depth"
    return table


def eval_folder(folder: str | Path, lpips_weights: str | Path | None = None) -> dict:
    """The evaluation table recomputed from ``folder/eval/`` (every ``NAME_KIND.png`` set) as ``reconstruct`` writes
    it: the clip frames' views at the top level with ``views``, the off-trajectory ones (``oMMMM_...``) under
    ``off_trajectory`` (None without them)."""
    from PIL import Image

    folder = Path(folder) / "eval"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: give a matrix-pano reconstruct output folder")
    names = sorted(p.name.removesuffix("_gt.png") for p in folder.glob("*_gt.png"))
    if not names:
        raise ValueError(f"{folder} holds no NAME_gt.png images")
    kinds = ["pred", "gt"]
    for kind in IMAGE_KINDS:
        missing = [n for n in names if not (folder / f"{n}_{kind}.png").is_file()]
        if kind in BASELINES and len(missing) == len(names):
            continue  # a baseline the run could not make
        if missing:
            raise ValueError(f"{folder} lacks {missing[0]}_{kind}.png (and {len(missing) - 1} more)")
        kinds += [kind] if kind in BASELINES else []

    def load(group: list[str]) -> dict[str, np.ndarray]:
        return {kind: np.stack([np.asarray(Image.open(folder / f"{n}_{kind}.png").convert("RGB")) for n in group])
                for kind in kinds}

    off = [n for n in names if n.startswith(OFF_PREFIX)]
    on = [n for n in names if not n.startswith(OFF_PREFIX)]
    if not on:
        raise ValueError(f"{folder} holds only off-trajectory views: the clip frames' NAME_gt.png are missing")
    table = {**_table(load(on), lpips_weights), "views": len(on), "off_trajectory": None}
    if off:
        table["off_trajectory"] = {**_table(load(off), lpips_weights, missing=False), "views": len(off)}
    return table


def clip_inputs(dataset: str | Path, clip_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Frames, range depth and poses of a committed dataset clip, and where they came from."""
    from dataset.store.reader import PanoDataset

    clip = next((c for c in PanoDataset(dataset).clips() if c.clip_id == clip_id), None)
    if clip is None:
        raise ValueError(f"{dataset} has no committed clip {clip_id!r} (see matrix-pano stats {dataset})")
    from dataset.store.shards import read_manifest

    renderer_spec = read_manifest(dataset).get("spec", {}).get("renderer")
    return clip.frames(), clip.depth(), clip.c2w, {"dataset": str(dataset), "clip_id": clip_id,
                                                    "scene": clip.row["scene"], "renderer": clip.row["renderer"],
                                                    "renderer_spec": renderer_spec}


@dataclass
class LRMRun:
    """What ``reconstruct --method lrm`` predicts with."""

    model: object
    """An ``inference.lrm.PanoLRM`` in eval mode."""
    vae: object
    """The Wan VAE that encodes the video into the model's latents."""
    checkpoint: str
    """Where the model's weights came from (for metrics.json)."""
    frame_stride: int = 2
    """Keep the Gaussians of every this many frames (Matrix-3D: 2)."""


@dataclass
class OffTrajectory:
    """Extra held-out panoramas rendered by a clip's scene at poses beside its trajectory, or why there are none."""

    rgb: np.ndarray | None = None
    """(M, H, W, 3) uint8 panoramas."""
    c2w: np.ndarray | None = None
    """(M, 4, 4) their poses."""
    missing: str | None = None
    """Why there are none (metrics.json's ``missing.off_trajectory``)."""


def free_along(range_depth: np.ndarray, c2w: np.ndarray, direction: np.ndarray, distance: float,
               cone_deg: float = FREE_CONE_DEG) -> bool:
    """Whether a range panorama (H, W; 0 = nothing hit) taken at ``c2w`` shows no surface nearer than ``distance``
    within ``cone_deg`` of the world ``direction``."""
    from dataset.core.conventions import equirect_directions

    h, w = range_depth.shape
    rays = equirect_directions(w, h, dtype=np.float64) @ np.asarray(c2w)[:3, :3].T
    near = rays @ (direction / np.linalg.norm(direction)) >= math.cos(math.radians(cone_deg))
    hits = range_depth[near]
    return bool(near.any()) and float(hits[hits > 0].min(initial=math.inf)) >= distance


def off_trajectory_poses(depth: np.ndarray, c2w: np.ndarray, frames: np.ndarray, offset_m: float) -> np.ndarray:
    """(M, 4, 4): the poses of ``frames`` moved ``offset_m`` along their camera's horizontal right axis
    (alternately left first), to whichever side the frame's range depth shows free for the move plus
    ``FREE_MARGIN_M``; frames free on neither side are left out."""
    poses = []
    for n, i in enumerate(frames):
        right = np.array([c2w[i, 0, 0], c2w[i, 1, 0], 0.0])
        if np.linalg.norm(right) < 1e-6:  # looking straight up or down: no horizontal right axis
            continue
        right /= np.linalg.norm(right)
        for side in ((1.0, -1.0) if n % 2 == 0 else (-1.0, 1.0)):
            if free_along(depth[i], c2w[i], side * right, offset_m + FREE_MARGIN_M):
                pose = c2w[i].copy()
                pose[:3, 3] += side * offset_m * right
                poses.append(pose)
                break
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def render_off_trajectory(source: dict, frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray,
                          cfg: ReconConfig) -> OffTrajectory:
    """Panoramas at ``cfg.off_trajectory_views`` poses beside a dataset clip's trajectory (``clip_inputs``'
    ``source``): beside held-out frames spread over the clip (``render_beside``)."""
    if cfg.off_trajectory_views == 0:
        return OffTrajectory(missing="off_trajectory_views is 0")
    held = held_out_indices(len(frames), cfg.keyframe_every)
    picks = np.unique(held[np.linspace(0, len(held) - 1, cfg.off_trajectory_views).round().astype(int)])
    return render_beside(source, frames, depth, c2w, picks, cfg.off_trajectory_m)


def render_beside(source: dict, frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray, picks: np.ndarray,
                  offset_m: float) -> OffTrajectory:
    """Panoramas rendered by a dataset clip's scene (``clip_inputs``' ``source``) with the build's renderer
    settings, at the poses of frames ``picks`` moved ``offset_m`` sideways (``off_trajectory_poses``). None, with
    the reason, where the scene cannot render them: a clip of another renderer, a scene that does not load here,
    or one whose render at a clip pose does not match the clip's frame (``MATCH_PSNR_DB``)."""
    from pydantic import TypeAdapter

    from dataset.core.jobspec import EmbeddedRendererSpec, RendererSpec
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.sources import load_scene
    from inference.metrics import psnr

    if source.get("renderer") != "embedded":
        return OffTrajectory(missing=f"the clip was rendered by {source.get('renderer')!r}; only clips of the "
                                     "embedded renderer are rendered again")
    try:
        scene = load_scene(source["scene"])
    except Exception as e:  # any loader error: the caller goes on without these views
        return OffTrajectory(missing=f"its scene {source['scene']!r} does not load here ({type(e).__name__}: {e})")
    spec = source.get("renderer_spec")
    spec = TypeAdapter(RendererSpec).validate_python(spec) if spec else EmbeddedRendererSpec()
    if not isinstance(spec, EmbeddedRendererSpec):
        return OffTrajectory(missing=f"the dataset's manifest names a {spec.kind!r} renderer for an embedded clip")
    poses = off_trajectory_poses(depth, c2w, picks, offset_m)
    if len(poses) == 0:
        return OffTrajectory(missing=f"no chosen frame's pose has {offset_m + FREE_MARGIN_M:.2f} m of free space "
                                     "to either side")
    width = frames.shape[2]
    with EmbeddedRenderer(scene, RenderSettings.from_spec(spec)) as renderer:
        match = psnr(renderer.render(c2w[picks[0]][None], width).rgb, frames[picks[0]][None])
        if match < MATCH_PSNR_DB:
            return OffTrajectory(missing=f"{source['scene']} renders frame {int(picks[0])} at {match:.1f} dB of the "
                                         f"clip's own (below {MATCH_PSNR_DB:.0f}): not the scene or settings it was "
                                         "built with")
        rendered = renderer.render(poses, width)
    return OffTrajectory(rgb=rendered.rgb, c2w=poses)


def video_inputs(video: str | Path, cameras: str | Path, cfg: ReconConfig, depth_dir: str | Path | None = None,
                 depth_model: str | Path | None = None, reference_depth: str | Path | None = None,
                 device: str | None = None,
                 require_depth: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict]:
    """Frames, keyframe range depth (other frames 0; None when neither source is given and ``require_depth`` is
    off, as for ``--method lrm``) and poses of a panoramic video (e.g. ``matrix-pano generate``'s
    ``video.mp4`` + ``cameras.json``). Depth comes from ``depth_dir`` (``NNNN.npy`` range in metres per keyframe,
    e.g. exact depth) or from the estimator at ``depth_model`` (a transformers folder or ``tiny``;
    ``inference.depth_estimate``), aligned across keyframes by scale and shift and, with ``reference_depth`` (an
    ``.npy`` of frame 0's metric range, e.g. ``generate --depth``), to metres."""
    from dataset.core.codecs import decode_mp4
    from dataset.core.trajectories import read_trajectory_file

    frames = decode_mp4(Path(video).read_bytes())
    c2w = read_trajectory_file(cameras).c2w
    if len(c2w) != len(frames):
        raise ValueError(f"{cameras} has {len(c2w)} poses for the {len(frames)} frames of {video}: give one per frame")
    keys = keyframe_indices(len(frames), cfg.keyframe_every)
    if depth_dir is not None and depth_model is not None:
        raise ValueError("give --depth DIR or --depth-model PATH|tiny, not both")
    if depth_dir is None and depth_model is None:
        if require_depth:
            raise ValueError("a video needs its depth: give --depth DIR (NNNN.npy per keyframe) or --depth-model "
                             "PATH|tiny")
        return frames, None, c2w, {"video": str(video), "cameras": str(cameras)}
    depth = np.zeros(frames.shape[:3], np.float32)
    if depth_dir is not None:
        for k in keys:
            path = Path(depth_dir) / f"{int(k):04d}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: --depth needs NNNN.npy range depth of every keyframe "
                                        f"({', '.join(f'{int(i):04d}' for i in keys)})")
            depth[k] = np.load(path, allow_pickle=False)
        source = {"depth": str(depth_dir)}
    else:
        from inference.depth_estimate import align_keyframe_depths, estimate_panorama_depth, load_depth_estimator

        estimator = load_depth_estimator(depth_model, device=device)
        relative = np.stack([estimate_panorama_depth(estimator, frames[k]) for k in keys])
        reference = None if reference_depth is None else np.load(reference_depth, allow_pickle=False)
        depth[keys] = align_keyframe_depths(relative, c2w[keys], reference)
        source = {"depth_model": str(depth_model), "reference_depth": None if reference_depth is None
                  else str(reference_depth)}
    return frames, depth, c2w, {"video": str(video), "cameras": str(cameras), **source}


__all__ = ["BASELINES", "LRMRun", "OffTrajectory", "ReconConfig", "clip_inputs", "eval_folder", "free_along",
           "image_metrics", "mesh_baseline", "off_trajectory_poses", "reconstruct_clip", "render_beside",
           "render_off_trajectory", "video_inputs"]
