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
(interpolated) and the frames after it (extrapolated), as the clip has them. Panoramas are area-downsampled to
``width`` first (depth: one sample per block), so a CPU can train at a small size.

Output folder::

    OUT/train_spec.json        the spec as run
    OUT/metrics.jsonl          per step: step, stage, loss, and depth_l1_m (stage 1) or mse (stage 2), seconds
    OUT/checkpoints/step-N/    lrm.safetensors + lrm_config.json, optimizer.pt, state.pt (resumable; the newest
                               and the end of stage 1 are kept)
    OUT/lrm.safetensors        the final model, with OUT/lrm_config.json beside it (``inference.lrm.load_lrm``)

A rerun with the same OUT resumes from the newest checkpoint and drops metrics lines logged after it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

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


def downsample(clip_frames: np.ndarray, depth: np.ndarray, width: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Frames area-averaged and depth sampled once per block to ``width`` (a divisor of the stored width)."""
    w = clip_frames.shape[2]
    if width is None or width == w:
        return clip_frames, depth.astype(np.float32)
    if w % width or width > w:
        raise JobError(f"width {width} does not divide the clips' {w}: choose a divisor (e.g. {w // 2})")
    f = w // width
    n, h = clip_frames.shape[:2]
    small = clip_frames.reshape(n, h // f, f, width, f, 3).mean(axis=(2, 4), dtype=np.float32)
    return small.round().astype(np.uint8), depth[:, f // 2::f, f // 2::f].astype(np.float32)


def load_clips(folders: list[str], width: int | None) -> list[ClipData]:
    """Every committed clip of ``folders`` at the training size."""
    from dataset.store.reader import PanoDataset

    clips = []
    for folder in folders:
        for clip in PanoDataset(folder).clips():
            frames, depth = downsample(clip.frames(), clip.depth(), width)
            clips.append(ClipData(clip.clip_id, frames, depth, clip.c2w))
    if not clips:
        raise JobError(f"no committed clips in {', '.join(folders) or '(no data given)'}: give dataset folders in "
                       "data (or --data)")
    return clips


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
        self.vae, self.spec, self.cfg, self.device, self.span = vae, spec, cfg, device, span
        self._latents: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()

    def _encode(self, c: int, start: int) -> torch.Tensor:
        from inference.condition import encode_video, to_pixels

        key = (c, start)
        if key not in self._latents:
            idx = start + self.spec.context_stride * np.arange(self.spec.frames)
            lat = encode_video(self.vae, to_pixels(self.clips[c].frames[idx]))
            self._latents[key] = lat.permute(0, 2, 1, 3, 4).to(self.device)
            if len(self._latents) > LATENT_MEMO:
                self._latents.popitem(last=False)
        self._latents.move_to_end(key)
        return self._latents[key]

    def draw(self, rng: np.random.Generator, with_views: bool) -> Sample:
        """One sample (reference views only ``with_views``)."""
        from dataset.core.conventions import crop_rotation, equirect_to_perspective, intrinsics

        spec = self.spec
        c = int(rng.integers(len(self.clips)))
        clip = self.clips[c]
        start = int(rng.integers(len(clip.frames) - self.span + 1))
        idx = start + spec.context_stride * np.arange(spec.frames)
        rel = relative_poses(clip.c2w[start:])  # poses from the context's first frame on
        ctx = torch.as_tensor(rel[idx - start]).to(self.device)
        h, w = clip.frames.shape[1:3]
        depth = torch.as_tensor(clip.depth[idx][:, ::2, ::2].copy()).to(self.device)
        rays = plucker_rays(ctx, h, w, self.cfg.ray_mapping)[None]
        rgb = torch.zeros(0)
        view_c2w = torch.zeros(0, 4, 4)
        ks = torch.zeros(0, 3, 3)
        if with_views:
            pool = np.arange(start, len(clip.frames))  # seen, interpolated and extrapolated frames
            picks = rng.choice(pool, spec.views, replace=len(pool) < spec.views)
            crops, poses, kk = [], [], []
            for f in picks:
                fov = float(rng.uniform(*spec.fov_deg))
                rot = crop_rotation(float(rng.uniform(0, 360)), float(rng.uniform(-30, 30)))
                crops.append(equirect_to_perspective(clip.frames[f], rot, spec.crop_size, spec.crop_size, fov))
                pose = rel[f - start].numpy().astype(np.float64)
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


def _optimiser(params: list[torch.nn.Parameter], spec: TrainLRMSpec) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _stage_optimiser(model: PanoLRM, stage: int, spec: TrainLRMSpec) -> torch.optim.AdamW:
    """The optimiser of a stage: every parameter in stage 1; in stage 2 the depth's frozen and the rest trained."""
    for p in model.parameters():
        p.requires_grad_(True)
    if stage == 2:
        for p in model.depth_parameters():
            p.requires_grad_(False)
    return _optimiser([p for p in model.parameters() if p.requires_grad], spec)


def _stage_of(step: int, spec: TrainLRMSpec) -> int:
    """1 for steps 1..stage1_steps, 2 after."""
    return 1 if step <= spec.stage1_steps else 2


def _newest_checkpoint(out: Path) -> Path | None:
    steps = sorted((int(p.name.split("-")[1]), p) for p in (out / "checkpoints").glob("step-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())  # step-N.tmp is an interrupted write
    return steps[-1][1] if steps else None


def _save_checkpoint(out: Path, model: PanoLRM, opt, step: int, rng: np.random.Generator, keep: int) -> None:
    """``OUT/checkpoints/step-N`` (written aside and renamed); older ones deleted except ``step-keep`` (the end of
    stage 1: the depth model stage 2 starts from)."""
    final = out / "checkpoints" / f"step-{step}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_lrm(model, tmp)
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    torch.save({"step": step, "rng": json.dumps(rng.bit_generator.state)}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in (out / "checkpoints").glob("step-*"):
        if old != final and old.name != f"step-{keep}" and not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)


def train_lrm(spec: TrainLRMSpec, progress: bool = True) -> dict:
    """Run (or resume) both stages; returns a summary (steps, final losses, seconds, out)."""
    from inference.wan import default_device, load_wan

    if spec.out is None:
        raise JobError("train-lrm needs an output folder: set out in the config or pass --out")
    if spec.lpips_weight > 0 and spec.lpips_weights is None:
        raise JobError("lpips_weight > 0 needs lpips_weights (a folder of LPIPS weights, as eval-video's)")
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(spec.device) if spec.device else default_device()
    clips = load_clips(spec.data, spec.width)
    model = _model(spec, device)
    vae = load_wan(spec.vae, device=device, parts=("vae",)).vae
    source = SampleSource(clips, vae, spec, model.cfg, device)
    lpips_net = None
    if spec.lpips_weight > 0:
        from inference.metrics import load_lpips

        lpips_net = load_lpips(spec.lpips_weights, device=str(device))
    (out / "train_spec.json").write_text(spec.model_dump_json(indent=1) + "\n")
    total = spec.stage1_steps + spec.stage2_steps
    step, rng = 0, np.random.default_rng(spec.seed)
    resume = _newest_checkpoint(out)
    if resume is not None:
        state = torch.load(resume / "state.pt", weights_only=True)
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["rng"])
        model = load_lrm(resume, device).train()
    model.train()
    opt = None
    metrics_path = out / "metrics.jsonl"
    kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.exists() else [])
            if json.loads(line)["step"] <= step]
    metrics_path.write_text("".join(line + "\n" for line in kept))
    last: dict = {}
    start = time.perf_counter()
    with metrics_path.open("a") as log:
        while step < total:
            stage = _stage_of(step + 1, spec)
            if opt is None or (stage == 2 and _stage_of(step, spec) == 1):
                opt = _stage_optimiser(model, stage, spec)
                if resume is not None and step > 0 and _stage_of(step, spec) == stage:
                    opt.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
                resume = None
            t = time.perf_counter()
            sample = source.draw(rng, with_views=stage == 2)
            out_ = model(sample.latents, sample.rays)
            if stage == 1:
                loss, depth_err = depth_loss(out_.depth[0], sample.depth)
                terms = {"depth_l1_m": depth_err}
            else:
                loss, terms = image_loss(out_, sample, spec, lpips_net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            last = {"step": step, "stage": stage, "loss": float(loss.detach()), **terms,
                    "seconds": round(time.perf_counter() - t, 4)}
            if not math.isfinite(last["loss"]):
                raise JobError(f"the loss became {last['loss']} at step {step}: lower lr")
            log.write(json.dumps(last) + "\n")
            log.flush()
            if progress and (step % spec.log_every == 0 or step == total):
                print(f"train-lrm step {step}/{total} stage {stage} " + " ".join(
                    f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "stage")), flush=True)
            if step % spec.checkpoint_every == 0 or step in (spec.stage1_steps, total):
                _save_checkpoint(out, model, opt, step, rng, keep=spec.stage1_steps)
    save_lrm(model, out)
    return {"steps": step, "last": last, "seconds": round(time.perf_counter() - start, 2), "out": str(out)}


__all__ = ["ClipData", "Sample", "SampleSource", "TrainLRMSpec", "depth_loss", "downsample", "image_loss",
           "load_clips", "load_train_lrm_spec", "train_lrm"]
