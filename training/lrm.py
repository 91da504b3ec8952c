"""Training of the feed-forward panorama reconstruction model (``inference.lrm``) on committed dataset shards:
``matrix-pano train-lrm CONFIG.yaml``.

Matrix-3D released the model but not its trainer; this one follows what its code prepares (depth supervision on
the half-resolution Gaussian grid, image losses on rendered views) in two stages:

1. ``stage1_steps`` steps of depth: log-depth L1 between the predicted and the clip's exact range depth (nearest
   samples on the half-resolution grid), on pixels with depth.
2. ``stage2_steps`` steps of images: every parameter the depth depends on frozen (``PanoLRM.depth_parameters``),
   the Gaussians of the context (every ``frame_stride``-th frame) rendered by ``inference.rasterize`` at the
   sample's reference views, MSE + ``lpips_weight`` x LPIPS (weights from ``lpips_weights``) against them.

A sample: one clip of the data, a context of ``frames`` (4k + 1) frames every ``context_stride`` frames from a
random start, encoded by the Wan VAE (frozen; memoised per clip and start), its poses relative to the context's
first frame as Plücker rays, and ``views`` reference views: perspective crops (``crop_size``, FOV drawn in
``fov_deg``, yaw anywhere, pitch within ±30°) of frames drawn from the context (seen), the frames it skips
(interpolated) and the frames after it (extrapolated), as the clip has them, and, with ``off_trajectory_views``,
panoramas its scene renders beside the trajectory (``inference.reconstruct.render_beside``, once per clip when the
clips are loaded; clips whose scene does not load here, or renders differently, train without them and the summary
says why). Panoramas are area-downsampled to ``width`` first (depth: one sample per block), so a CPU can train at a
small size. With ``latent_cache`` (``matrix-pano cache-latents`` of the same data), the clips it holds take their
context latents from its clean rows (the context is then the cached frames from frame 0) instead of the VAE.

Every draw depends only on (seed, step, rank), so a resumed run draws what the uninterrupted one would have. Under
``torchrun`` or Ray Train (``train_lrm_ray``, ``--ray-address``) each of the N processes draws its own sample per
step and DDP averages the gradients (a global batch of N samples); rank 0 writes the run folder. Precision: the
model's weights and optimiser state in fp32, its forward pass under bf16 autocast with ``precision: bf16`` (the
default on a GPU), the losses and the rasterizer in fp32.

Output folder::

    OUT/train_spec.json        the spec as run
    OUT/metrics.jsonl          per step: step, stage, loss, and depth_l1_m (stage 1) or mse (stage 2), seconds
                               (means over the processes)
    OUT/checkpoints/step-N/    lrm.safetensors + lrm_config.json, optimizer.pt, state.pt (resumable; the newest
                               and the end of stage 1 are kept)
    OUT/lrm.safetensors        the final model, with OUT/lrm_config.json beside it (``inference.lrm.load_lrm``)

A rerun with the same OUT resumes from the newest checkpoint and drops metrics lines logged after it; it must train
the same thing (only ``RESUME_FREE`` settings may change). Once stage 1 has run, a rerun keeps its length and gives
the rest of ``--steps`` to stage 2.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dataset.core.jobspec import JobError, StrictModel
from inference.lrm import (
    PRESETS,
    LRMConfig,
    PanoLRM,
    build_lrm,
    latent_frames,
    load_lrm,
    plucker_rays,
    relative_poses,
    save_lrm,
    to_gaussians,
)
from training.distributed import (
    Dist,
    barrier,
    check_rerun,
    close_distributed,
    global_mean,
    init_distributed,
    run_ray_train,
    truncate_metrics,
)


class TrainLRMSpec(StrictModel):
    """A ``matrix-pano train-lrm`` run."""

    data: list[str] = []
    """Dataset folders (``matrix-pano build`` output) whose committed clips are trained on."""
    vae: str = "tiny"
    """Wan2.1 folder (its VAE encodes the frames) or ``tiny``."""
    model: str = "tiny"
    """Where to start: a preset (``tiny``, ``published``) with random weights, or an LRM folder."""
    max_depth: float | None = Field(None, gt=0)
    """Override the preset's largest depth, metres (outdoor scenes)."""
    frames: int = Field(9, ge=1)
    """Context frames per sample (4k + 1)."""
    context_stride: int = Field(1, ge=1)
    """Clip frames between consecutive context frames."""
    width: int | None = Field(256, ge=16)
    """Panorama width to train at (area-downsampled; a divisor of the stored width); None: as stored."""
    views: int = Field(32, ge=1)
    """Reference views per sample (stage 2)."""
    crop_size: int = Field(64, ge=8)
    """Side of the reference crops, pixels."""
    fov_deg: tuple[float, float] = (60.0, 120.0)
    """Range of the reference crops' field of view, degrees."""
    frame_stride: int = Field(2, ge=1)
    """Keep the Gaussians of every this many context frames (as inference does)."""
    stage1_steps: int = Field(150, ge=0)
    """Depth steps."""
    stage2_steps: int = Field(300, ge=0)
    """Image steps, depth frozen."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate (both stages)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    lpips_weight: float = Field(0.0, ge=0)
    """Weight of LPIPS in the stage-2 loss (needs ``lpips_weights``)."""
    lpips_weights: str | None = None
    """LPIPS weights folder (as ``eval-video``'s)."""
    off_trajectory_views: int = Field(0, ge=0)
    """Per clip, panoramas its scene renders beside the trajectory (when the clips are loaded) that reference views
    are also cut from; 0: none."""
    off_trajectory_m: float = Field(0.5, gt=0)
    """How far beside the trajectory those panoramas are, metres."""
    latent_cache: list[str] = []
    """Latent caches of the data (``matrix-pano cache-latents``, same ``vae``): the clips they hold take their
    context latents from there (needs ``frames`` = the cached frames, ``context_stride`` 1, the stored width)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Forward pass under bf16 autocast (weights and optimiser state stay fp32) or in fp32; auto: bf16 on a GPU."""
    gradient_checkpointing: bool = False
    """Recompute transformer layers in the backward pass."""
    checkpoint_every: int = Field(100, ge=1)
    """Write a resumable checkpoint every this many steps (and at the end of each stage)."""
    log_every: int = Field(25, ge=1)
    """Print a progress line every this many steps."""
    seed: int = Field(0, ge=0)
    """Seed of the model's initial weights and of every draw."""
    device: str | None = None
    """torch device; default: the GPU when there is one."""
    out: str | None = None
    """Output folder."""

    def with_steps(self, steps: int) -> TrainLRMSpec:
        """This run in ``steps`` steps in all, split between the stages as the spec splits them (``--steps``)."""
        total = self.stage1_steps + self.stage2_steps
        first = round(steps * self.stage1_steps / total) if total else steps // 2
        return self.model_copy(update={"stage1_steps": first, "stage2_steps": steps - first})


RESUME_FREE = ("data", "latent_cache", "out", "device", "stage1_steps", "stage2_steps", "checkpoint_every",
               "log_every")
"""Settings a rerun into an existing OUT may change (the stage lengths as the module doc says)."""


def load_train_lrm_spec(path: str | Path) -> TrainLRMSpec:
    """A spec from YAML (``JobError`` naming the problem)."""
    from dataset.core.jobspec import load_yaml_spec

    return load_yaml_spec(path, TrainLRMSpec, "train-lrm config")


# --- data -----------------------------------------------------------------------------------------------------


@dataclass
class ClipData:
    """One clip at the training size."""

    clip_id: str
    frames: np.ndarray
    """(N, H, W, 3) uint8."""
    depth: np.ndarray
    """(N, H, W) float32 range, metres (0 = none)."""
    c2w: np.ndarray
    """(N, 4, 4)."""
    extra_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 2, 3), np.uint8))
    """(M, H, W, 3) uint8 panoramas rendered beside the trajectory."""
    extra_c2w: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    """(M, 4, 4) their poses."""
    cached: tuple[str, int] | None = None
    """(cache shard, row group) holding the clean latents of the clip's first frames, or None."""


@dataclass
class Sample:
    """What one step trains on."""

    latents: torch.Tensor
    """(1, T, 16, h, w) normalised VAE latents of the context."""
    rays: torch.Tensor
    """(1, F, H, W, 6) Plücker rays of the context poses relative to its first frame."""
    c2w: torch.Tensor
    """(F, 4, 4) the context poses relative to its first frame (the Gaussians' frame)."""
    depth: torch.Tensor
    """(F, H/2, W/2) range depth of the context on the Gaussian grid."""
    view_rgb: torch.Tensor
    """(V, S, S, 3) float in [0, 1]: the reference crops."""
    view_c2w: torch.Tensor
    """(V, 4, 4) their cameras, relative to the context's first frame."""
    view_K: torch.Tensor
    """(V, 3, 3) their intrinsics."""


def downsample(clip_frames: np.ndarray, depth: np.ndarray | None, width: int | None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Frames area-averaged and depth sampled once per block to ``width`` (a divisor of the stored width)."""
    w = clip_frames.shape[2]
    depth = None if depth is None else depth.astype(np.float32)
    if width is None or width == w:
        return clip_frames, depth
    if w % width or width > w:
        raise JobError(f"width {width} does not divide the clips' {w}: choose a divisor (e.g. {w // 2})")
    f = w // width
    n, h = clip_frames.shape[:2]
    small = clip_frames.reshape(n, h // f, f, width, f, 3).mean(axis=(2, 4), dtype=np.float32)
    return small.round().astype(np.uint8), None if depth is None else depth[:, f // 2::f, f // 2::f]


def cache_index(caches: list[str], vae: str, frames: int) -> dict[str, tuple[str, int]]:
    """clip_id -> (shard, row group) of its clean row in the latent caches ``caches``; ``JobError`` when a cache was
    encoded by another VAE or of another number of frames than the context's."""
    import pyarrow.parquet as pq

    from dataset.store.shards import committed_shards
    from training.latent_cache import read_cache_manifest

    index: dict[str, tuple[str, int]] = {}
    for folder in caches:
        try:
            manifest = read_cache_manifest(folder)
        except FileNotFoundError as e:
            raise JobError(str(e)) from None
        if manifest["model"] != vae:
            raise JobError(f"latent cache {folder} was encoded by {manifest['model']!r}, not the vae {vae!r}: give "
                           "the same vae, or leave latent_cache out")
        for shard, _ in committed_shards(folder):
            pf = pq.ParquetFile(shard)
            for g in range(pf.num_row_groups):
                for row in pf.read_row_group(g, columns=["clip_id", "augment", "num_frames"]).to_pylist():
                    if row["augment"]:
                        continue
                    if row["num_frames"] != frames:
                        raise JobError(f"latent cache {folder} holds {row['num_frames']} frames of {row['clip_id']}, "
                                       f"the context has {frames}: set frames: {row['num_frames']}, or leave "
                                       "latent_cache out")
                    index[row["clip_id"]] = (str(shard), g)
    return index


def cached_latents(where: tuple[str, int], clip_id: str) -> torch.Tensor:
    """(16, F_lat, h, w) clean latents of ``clip_id`` from its cache row group."""
    import pyarrow.parquet as pq

    from training.latent_cache import tensor_from_bytes

    rows = pq.ParquetFile(where[0]).read_row_group(where[1], columns=["clip_id", "augment", "latents",
                                                                      "latents_shape"]).to_pylist()
    row = next(r for r in rows if r["clip_id"] == clip_id and not r["augment"])
    return tensor_from_bytes(row["latents"], row["latents_shape"])


def load_clips(spec: TrainLRMSpec, progress: bool = False) -> tuple[list[ClipData], dict]:
    """Every committed clip of ``spec.data`` at the training size, with its off-trajectory panoramas and cache row
    where it has them; and a summary of those (clips and views that have them, why others do not)."""
    from dataset.store.reader import PanoDataset
    from dataset.store.shards import read_manifest
    from inference.reconstruct import render_beside

    index = cache_index(spec.latent_cache, spec.vae, spec.frames)
    clips, missing, views = [], {}, 0
    for folder in spec.data:
        renderer_spec = None
        for clip in PanoDataset(folder).clips():
            frames, depth = clip.frames(), clip.depth()
            small, small_depth = downsample(frames, depth, spec.width)
            data = ClipData(clip.clip_id, small, small_depth, clip.c2w, cached=index.get(clip.clip_id))
            if spec.off_trajectory_views:
                if renderer_spec is None:
                    renderer_spec = read_manifest(folder).get("spec", {}).get("renderer") or {}
                source = {"scene": clip.row["scene"], "renderer": clip.row["renderer"],
                          "renderer_spec": renderer_spec or None}
                pick = np.random.default_rng([spec.seed, len(clips)])
                picks = np.sort(pick.choice(len(frames), min(spec.off_trajectory_views, len(frames)), replace=False))
                off = render_beside(source, frames, depth, clip.c2w, picks, spec.off_trajectory_m)
                if off.rgb is None:
                    missing[off.missing] = missing.get(off.missing, 0) + 1
                    if progress:
                        print(f"train-lrm: {clip.clip_id} has no off-trajectory views: {off.missing}", flush=True)
                else:
                    data.extra_rgb, data.extra_c2w = downsample(off.rgb, None, spec.width)[0], off.c2w
                    views += len(off.c2w)
            clips.append(data)
    if not clips:
        raise JobError(f"no committed clips in {', '.join(spec.data) or '(no data given)'}: give dataset folders in "
                       "data (or --data)")
    return clips, {"clips": len(clips), "cached_clips": sum(c.cached is not None for c in clips),
                   "off_trajectory_views": views, "off_trajectory_missing": missing}


LATENT_MEMO = 256
"""Context latents kept in memory (least recently used dropped first; 10 MB each at 480p x 81 frames)."""


class SampleSource:
    """Draws samples from clips (see the module doc), the VAE latents of the ``LATENT_MEMO`` most recent
    (clip, start) contexts memoised."""

    def __init__(self, clips: list[ClipData], vae, spec: TrainLRMSpec, cfg: LRMConfig, device: torch.device):
        span = spec.context_stride * (spec.frames - 1) + 1
        self.clips = [c for c in clips if len(c.frames) >= span]
        if not self.clips:
            raise JobError(f"no clip has the {span} frames a context of {spec.frames} frames every "
                           f"{spec.context_stride} needs: lower frames or context_stride")
        latent_frames(spec.frames, cfg.vae_temporal)  # 4k + 1, or a clear error
        if any(c.cached for c in self.clips) and spec.context_stride != 1:
            raise JobError("a latent cache holds consecutive frames: set context_stride: 1, or leave latent_cache out")
        self.vae, self.spec, self.cfg, self.device, self.span = vae, spec, cfg, device, span
        self._latents: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()

    def _encode(self, c: int, start: int) -> torch.Tensor:
        from inference.condition import encode_video, to_pixels

        key = (c, start)
        if key not in self._latents:
            clip = self.clips[c]
            if clip.cached is not None:
                lat = cached_latents(clip.cached, clip.clip_id)[None]
                if lat.shape[-1] * self.cfg.vae_stride != clip.frames.shape[2]:
                    raise JobError(f"the latent cache of {clip.clip_id} was encoded at width "
                                   f"{lat.shape[-1] * self.cfg.vae_stride}, training is at {clip.frames.shape[2]}: "
                                   "set width to the cache's, or leave latent_cache out")
            else:
                idx = start + self.spec.context_stride * np.arange(self.spec.frames)
                lat = encode_video(self.vae, to_pixels(clip.frames[idx]))
            self._latents[key] = lat.permute(0, 2, 1, 3, 4).to(self.device)
            if len(self._latents) > LATENT_MEMO:
                self._latents.popitem(last=False)
        self._latents.move_to_end(key)
        return self._latents[key]

    def draw(self, rng: np.random.Generator, with_views: bool) -> Sample:
        """One sample (reference views only ``with_views``)."""
        from dataset.core.conventions import c2w_to_w2c, crop_rotation, equirect_to_perspective, intrinsics

        spec = self.spec
        c = int(rng.integers(len(self.clips)))
        clip = self.clips[c]
        start = 0 if clip.cached is not None else int(rng.integers(len(clip.frames) - self.span + 1))
        idx = start + spec.context_stride * np.arange(spec.frames)
        to_first = c2w_to_w2c(clip.c2w[start].astype(np.float64))
        ctx = torch.as_tensor(relative_poses(clip.c2w[start:])[idx - start]).to(self.device)
        h, w = clip.frames.shape[1:3]
        depth = torch.as_tensor(clip.depth[idx][:, ::2, ::2].copy()).to(self.device)
        rays = plucker_rays(ctx, h, w, self.cfg.ray_mapping)[None]
        rgb = torch.zeros(0)
        view_c2w = torch.zeros(0, 4, 4)
        ks = torch.zeros(0, 3, 3)
        if with_views:
            # seen, interpolated and extrapolated frames (start on), then the panoramas beside the trajectory
            along = len(clip.frames) - start
            pool = along + len(clip.extra_rgb)
            picks = rng.choice(pool, spec.views, replace=pool < spec.views)
            crops, poses, kk = [], [], []
            for f in picks:
                fov = float(rng.uniform(*spec.fov_deg))
                rot = crop_rotation(float(rng.uniform(0, 360)), float(rng.uniform(-30, 30)))
                pano, pose = ((clip.frames[start + f], clip.c2w[start + f]) if f < along
                              else (clip.extra_rgb[f - along], clip.extra_c2w[f - along]))
                crops.append(equirect_to_perspective(pano, rot, spec.crop_size, spec.crop_size, fov))
                pose = to_first @ pose.astype(np.float64)
                pose[:3, :3] = pose[:3, :3] @ rot
                poses.append(pose)
                kk.append(intrinsics(spec.crop_size, spec.crop_size, fov))
            rgb = torch.tensor(np.stack(crops), dtype=torch.float32, device=self.device) / 255.0
            view_c2w = torch.tensor(np.stack(poses), dtype=torch.float32, device=self.device)
            ks = torch.tensor(np.stack(kk), dtype=torch.float32, device=self.device)
        return Sample(self._encode(c, start), rays, ctx, depth, rgb, view_c2w, ks)


# --- losses ---------------------------------------------------------------------------------------------------


def depth_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Log-depth L1 on pixels with depth, and the mean absolute depth error there (metres)."""
    valid = target > 0
    if not bool(valid.any()):
        raise JobError("a sample has no depth: train-lrm needs clips with depth")
    p, t = pred[valid], target[valid]
    return (p.log() - t.log()).abs().mean(), float((p.detach() - t).abs().mean())


def image_loss(model_out, sample: Sample, spec: TrainLRMSpec, lpips_net) -> tuple[torch.Tensor, dict]:
    """MSE (+ lpips_weight x LPIPS) of the Gaussians rendered at the sample's reference views."""
    from inference.rasterize import rasterize

    g = to_gaussians(model_out, sample.c2w, spec.frame_stride)
    render = rasterize(g, sample.view_c2w, sample.view_K, spec.crop_size, spec.crop_size, backend="auto").rgb
    mse = ((render - sample.view_rgb) ** 2).mean()
    loss, terms = mse, {"mse": float(mse.detach())}
    if lpips_net is not None and spec.lpips_weight > 0:
        lp = lpips_net(render.permute(0, 3, 1, 2) * 2 - 1, sample.view_rgb.permute(0, 3, 1, 2) * 2 - 1).mean()
        loss = loss + spec.lpips_weight * lp
        terms["lpips"] = float(lp.detach())
    return loss, terms


# --- the loop -------------------------------------------------------------------------------------------------


def _model(spec: TrainLRMSpec, device: torch.device) -> PanoLRM:
    if spec.model in PRESETS:
        cfg = PRESETS[spec.model].model_copy(update={"gradient_checkpointing": spec.gradient_checkpointing,
                                                      **({"max_depth": spec.max_depth} if spec.max_depth else {})})
        return build_lrm(cfg, seed=spec.seed).to(device)
    return load_lrm(spec.model, device).train()


def _stage_optimiser(model: PanoLRM, stage: int, spec: TrainLRMSpec) -> torch.optim.AdamW:
    """The optimiser of a stage: the depth parameters in stage 1 (nothing else reaches the depth loss); in stage 2
    the depth's frozen and the rest trained."""
    depth = {id(p) for p in model.depth_parameters()}
    for p in model.parameters():
        p.requires_grad_((id(p) in depth) == (stage == 1))
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr,
                             weight_decay=spec.weight_decay)


def _wrap(model: PanoLRM, d: Dist) -> torch.nn.Module:
    """DDP over the process group (built per stage, after its parameters are chosen), or the model alone."""
    if d.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda"
                                                     else None)


def _stage_of(step: int, spec: TrainLRMSpec) -> int:
    """1 for steps 1..stage1_steps, 2 after."""
    return 1 if step <= spec.stage1_steps else 2


def step_rng(spec: TrainLRMSpec, step: int, rank: int) -> np.random.Generator:
    """The generator of every draw of ``step`` on process ``rank``."""
    return np.random.default_rng([spec.seed, step, rank])


def _newest_checkpoint(out: Path) -> Path | None:
    steps = sorted((int(p.name.split("-")[1]), p) for p in (out / "checkpoints").glob("step-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())  # step-N.tmp is an interrupted write
    return steps[-1][1] if steps else None


def _save_checkpoint(out: Path, model: PanoLRM, opt, step: int, keep: int) -> None:
    """``OUT/checkpoints/step-N`` (written aside and renamed); older ones deleted except ``step-keep`` (the end of
    stage 1: the depth model stage 2 starts from)."""
    final = out / "checkpoints" / f"step-{step}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_lrm(model, tmp)
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    torch.save({"step": step}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in (out / "checkpoints").glob("step-*"):
        if old != final and old.name != f"step-{keep}" and not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)


def resumed_spec(spec: TrainLRMSpec, out: Path, step: int) -> TrainLRMSpec:
    """The spec a rerun resumed at ``step`` runs: once stage 1 has run (as OUT's recorded spec says), its length
    stays and the rest of the requested steps go to stage 2; ``JobError`` when fewer steps are asked for than ran."""
    total = spec.stage1_steps + spec.stage2_steps
    if total < step:
        raise JobError(f"{out} holds a run at step {step}, more than the {total} steps asked for: ask for more "
                       "steps (--steps), or use a new --out")
    recorded = out / "train_spec.json"
    stage1 = json.loads(recorded.read_text())["stage1_steps"] if recorded.is_file() else spec.stage1_steps
    if step >= stage1:
        first = stage1
    else:
        first = max(spec.stage1_steps, step)
    return spec.model_copy(update={"stage1_steps": first, "stage2_steps": total - first})


def train_lrm(spec: TrainLRMSpec, progress: bool = True) -> dict:
    """Run (or resume) both stages, alone or as one process of a torchrun / Ray Train group (WORLD_SIZE > 1);
    returns a summary (steps, final losses, seconds, out, the data's off-trajectory views and cached clips)."""
    if spec.out is None:
        raise JobError("train-lrm needs an output folder: set out in the config or pass --out")
    if spec.lpips_weight > 0 and spec.lpips_weights is None:
        raise JobError("lpips_weight > 0 needs lpips_weights (a folder of LPIPS weights, as eval-video's)")
    d = init_distributed(spec.device)
    try:
        return _train(spec, progress and d.rank == 0, d)
    finally:
        close_distributed(d)


def _train(spec: TrainLRMSpec, progress: bool, d: Dist) -> dict:
    from inference.wan import load_wan

    out = Path(spec.out)
    device = d.device
    resume = _newest_checkpoint(out) if out.is_dir() else None
    step = int(torch.load(resume / "state.pt", weights_only=True)["step"]) if resume is not None else 0
    if resume is not None:
        spec = resumed_spec(spec, out, step)
    if d.rank == 0:
        check_rerun(out / "train_spec.json", spec.model_dump(mode="json"), RESUME_FREE)
    clips, data_summary = load_clips(spec, progress)
    model = load_lrm(resume, device).train() if resume is not None else _model(spec, device)
    vae = load_wan(spec.vae, device=device, parts=("vae",)).vae
    source = SampleSource(clips, vae, spec, model.cfg, device)
    lpips_net = None
    if spec.lpips_weight > 0:
        from inference.metrics import load_lpips

        lpips_net = load_lpips(spec.lpips_weights, device=str(device))
    metrics_path = out / "metrics.jsonl"
    if d.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_spec.json").write_text(spec.model_dump_json(indent=1) + "\n")
        truncate_metrics(metrics_path, step)
    barrier(d)
    bf16 = spec.precision == "bf16" or (spec.precision == "auto" and device.type == "cuda")
    total = spec.stage1_steps + spec.stage2_steps
    opt = net = None
    last: dict = {}
    start = time.perf_counter()
    log = metrics_path.open("a") if d.rank == 0 else None
    try:
        while step < total:
            stage = _stage_of(step + 1, spec)
            if opt is None or (stage == 2 and _stage_of(step, spec) == 1):
                opt = _stage_optimiser(model, stage, spec)
                if resume is not None and step > 0 and _stage_of(step, spec) == stage:
                    opt.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
                resume = None
                net = _wrap(model, d)
            t = time.perf_counter()
            sample = source.draw(step_rng(spec, step + 1, d.rank), with_views=stage == 2)
            with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
                out_ = net(sample.latents, sample.rays)
            out_ = type(out_)(*(x.float() for x in (out_.depth, out_.scales, out_.quats, out_.sh0,
                                                     out_.opacity_logits)))
            if stage == 1:
                loss, depth_err = depth_loss(out_.depth[0], sample.depth)
                terms = {"depth_l1_m": depth_err}
            else:
                loss, terms = image_loss(out_, sample, spec, lpips_net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            last = {"step": step, "stage": stage, "loss": global_mean(loss.detach(), d),
                    **{k: global_mean(torch.tensor(v, device=device), d) for k, v in terms.items()},
                    "seconds": round(time.perf_counter() - t, 4)}
            if not math.isfinite(last["loss"]):
                raise JobError(f"the loss became {last['loss']} at step {step}: lower lr")
            if log is not None:
                log.write(json.dumps(last) + "\n")
                log.flush()
            if progress and (step % spec.log_every == 0 or step == total):
                print(f"train-lrm step {step}/{total} stage {stage} " + " ".join(
                    f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "stage")), flush=True)
            if step % spec.checkpoint_every == 0 or step in (spec.stage1_steps, total):
                if d.rank == 0:
                    _save_checkpoint(out, model, opt, step, keep=spec.stage1_steps)
                barrier(d)
    finally:
        if log is not None:
            log.close()
    if d.rank == 0:
        save_lrm(model, out)
    barrier(d)
    return {"steps": step, "last": last, "seconds": round(time.perf_counter() - start, 2), "out": str(out),
            "processes": d.world, **data_summary}


def _ray_worker(config: dict) -> None:
    """One Ray Train worker: the same loop, in the process group Ray Train set up."""
    train_lrm(TrainLRMSpec.model_validate(config), progress=True)


def train_lrm_ray(spec: TrainLRMSpec, address: str | None, workers: int) -> Path:
    """Run ``train_lrm`` on ``workers`` Ray Train workers (one GPU each when the cluster has them) of the cluster
    at ``address`` (None: a local one). The data, the caches and OUT must be on storage every worker sees."""
    if spec.out is None:
        raise JobError("train-lrm needs an output folder: set out in the config or pass --out")
    out = Path(spec.out).resolve()
    config = {**spec.model_dump(mode="json"), "out": str(out), "data": [str(Path(p).resolve()) for p in spec.data],
              "latent_cache": [str(Path(p).resolve()) for p in spec.latent_cache]}
    run_ray_train(_ray_worker, config, address, workers, out, "train-lrm")
    return out


__all__ = ["ClipData", "RESUME_FREE", "Sample", "SampleSource", "TrainLRMSpec", "cache_index", "cached_latents",
           "depth_loss", "downsample", "image_loss", "load_clips", "load_train_lrm_spec", "resumed_spec",
           "step_rng", "train_lrm", "train_lrm_ray"]
