"""LoRA training of the panoramic video model (Wan2.1 I2V + peft LoRA) on latent-cache samples.

One loop serves every way of running it: a single process, ``torchrun`` (DDP over ``torch.distributed``: gloo on
CPUs, nccl on GPUs) and Ray Train (``train_video_ray``: Ray's ``TorchTrainer`` starts the processes and the
process group, then each runs the same loop). ``sharding: ddp`` keeps the whole bf16 base (16.4 B parameters,
33 GB) on every GPU, which fits H100/H200-class cards; ``sharding: fsdp`` shards the base and the LoRA over the
processes with FSDP2 (``fully_shard`` per transformer block, then the root; compute in the base's dtype,
gradients reduced in fp32), for cards that cannot hold the whole base. Both give the single-process run's losses.

The loss is Matrix-3D's (DiffSynth's Wan trainer): per sample a noise level drawn uniformly from the 1000-point
shifted grid (``inference.flow.draw_training_points``), ``x_sigma = (1 - sigma) x0 + sigma noise``, the target
velocity ``noise - x0``, ``loss = mean_b(weight_b * MSE_b(pred, target))`` with the grid's Gaussian weighting.
The noise and noise level of a sample depend only on (seed, step, its index in the global batch), so a run on N
processes draws exactly what a single process draws for the same global batch, and a resumed run what the
uninterrupted one would have.

Precision: the base transformer in bf16 on a GPU (fp32 on a CPU), LoRA weights and their optimiser state in fp32
always; gradient checkpointing through diffusers' ``enable_gradient_checkpointing``.

Output folder::

    OUT/train_spec.json                   the spec as run (a rerun must match it, except steps and intervals)
    OUT/condition.json                    the ConditionSpec of the data (inference reads it back)
    OUT/metrics.jsonl                     one JSON object per step: step, loss, grad_norm, lr, seconds
    OUT/checkpoints/step-N/               adapter.safetensors, optimizer.pt (fsdp: optimizer-rank-R.pt per
                                          process), state.pt (step, RNG states, world size)
    OUT/pytorch_lora_weights.safetensors  the final LoRA, diffusers' ``load_lora_weights`` format

A rerun with the same OUT resumes from the newest checkpoint (written to a temporary folder and renamed, so a
checkpoint folder is always complete) and drops metrics lines logged after it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dataset.core.jobspec import JobError, StrictModel
from inference.condition import ConditionSpec, write_condition_spec
from inference.flow import NUM_TRAIN_TIMESTEPS, SHIFT, add_noise, draw_training_points, velocity_target
from inference.wan import compute_dtype
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

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
"""LoRA targets: diffusers' names of Matrix-3D's (DiffSynth's) ``q, k, v, o, ffn.0, ffn.2``, in the self- and the
cross-attention of every block. The image K/V of the cross-attention (``add_k_proj``, ``add_v_proj``; Wan's
``k_img``/``v_img``) are not matched by those names in DiffSynth either, so the image branch stays frozen as in
Matrix-3D's recipe; add them to ``lora.targets`` to train it too."""
LORA_FILE = "pytorch_lora_weights.safetensors"
"""The final LoRA in diffusers' format (``pipeline.load_lora_weights(OUT)`` reads it)."""
METRICS_FILE = "metrics.jsonl"
SPEC_FILE = "train_spec.json"
CHECKPOINTS = "checkpoints"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.pt"
_RESUME_FREE = ("steps", "out", "data", "log_every", "checkpoint_every", "keep_checkpoints")
"""Spec fields a resumed run may change."""


class TrainVideoError(JobError):
    """Training cannot start or continue; the message says what to change."""


class LoraSpec(StrictModel):
    """The LoRA adapter on the transformer (peft)."""

    rank: int = Field(16, ge=1, le=1024)
    """Rank r of every adapted projection (Matrix-3D: 16)."""
    alpha: float = Field(16.0, gt=0)
    """peft's lora_alpha: the update is scaled by alpha / rank (Matrix-3D: 16, i.e. scale 1)."""
    targets: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    """Module name suffixes to adapt (diffusers' WanTransformer3DModel names, e.g. to_q, ffn.net.2, add_k_proj)."""


class OptimiserSpec(StrictModel):
    """AdamW over the LoRA weights."""

    lr: float = Field(1e-4, gt=0, le=1)
    """Learning rate (constant; Matrix-3D: 1e-4)."""
    weight_decay: float = Field(0.01, ge=0, le=1)
    """AdamW's decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decay rates."""
    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this (0 = no clipping)."""


class TrainVideoSpec(StrictModel):
    """A ``matrix-pano train-video`` run."""

    data: list[str] = []
    """Latent-cache folders (``matrix-pano cache-latents``) to train on."""
    model: str = "tiny"
    """Wan2.1 I2V folder (diffusers or Wan-AI layout) or ``tiny``; the caches must have been encoded with it."""
    lora: LoraSpec = LoraSpec()
    """The adapter."""
    optimiser: OptimiserSpec = OptimiserSpec()
    """The optimiser."""
    steps: int = Field(1000, ge=1)
    """Optimiser steps in total (a resumed run continues up to this)."""
    batch_size: int = Field(1, ge=1)
    """Global batch: samples per step over all processes (must divide by the number of processes)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Base weights' dtype: ``auto`` = bf16 on a GPU, fp32 on a CPU; LoRA weights are fp32 always."""
    sharding: Literal["ddp", "fsdp"] = "ddp"
    """Several processes: ``ddp`` replicates the base on each, ``fsdp`` shards it (and the LoRA) over them."""
    gradient_checkpointing: bool = True
    """Recompute the blocks' activations in the backward pass (much less memory, ~30% more time)."""
    checkpoint_every: int = Field(500, ge=1)
    """Write a resumable checkpoint every this many steps (and at the last step)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk; older ones are deleted."""
    log_every: int = Field(10, ge=1)
    """Print a progress line every this many steps (metrics.jsonl gets every step)."""
    shuffle: bool = True
    """Shuffle the data each epoch (deterministic in ``seed``)."""
    overfit_batch: bool = False
    """Sanity check: train on the first batch with step 1's noise and noise levels every step (loss must drop)."""
    shift: float = Field(SHIFT, gt=0)
    """Sigma shift of the training grid (Matrix-3D: 5)."""
    seed: int = Field(0, ge=0)
    """Seed of the noise, noise levels and data order."""
    device: str | None = None
    """torch device; default: this process's GPU (LOCAL_RANK) when there is one, else the CPU."""
    out: str | None = None
    """Output folder (checkpoints, metrics, the LoRA)."""


@dataclass
class TrainResult:
    """What a run did (on this process)."""

    out: Path
    """The output folder."""
    step: int
    """The last step reached."""
    resumed_from: int
    """The checkpoint step the run started from (0 = fresh)."""
    losses: list[float] = field(default_factory=list)
    """Global-batch loss of every step this run made."""
    seconds_per_step: float = float("nan")
    """Mean wall time of this run's steps after the first (the first includes warm-up)."""


def lora_config(spec: LoraSpec):
    """peft ``LoraConfig`` of ``spec``; B starts at zero, so the untrained adapter changes nothing."""
    from peft import LoraConfig

    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets), init_lora_weights=True,
                      lora_dropout=0.0)


def add_lora(transformer, spec: LoraSpec, seed: int = 0) -> list[torch.nn.Parameter]:
    """Attach the adapter to ``transformer`` (frozen base) and return its trainable fp32 parameters; its random A
    matrices are drawn from ``seed`` (every process and every rerun starts from the same adapter; the global RNG
    is left as it was). A target that matches no module is a ``ValueError`` naming it."""
    names = [n for n, _ in transformer.named_modules()]
    for target in spec.targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ValueError(f"lora target {target!r} matches no module of the transformer: use diffusers' names, "
                             f"e.g. {', '.join(DEFAULT_TARGETS)}, add_k_proj, add_v_proj")
    transformer.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(lora_config(spec))
    params = []
    for name, p in transformer.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
            params.append(p)
    return params


def _mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def sample_noise(seed: int, step: int, index: int, shape: torch.Size, shift: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise, sigma (1,), loss weight (1,)) of the sample at ``index`` of the global batch of ``step``: a function
    of these numbers only, whatever the number of processes."""
    gen = torch.Generator().manual_seed(_mix_seed(seed, step, index))
    sigma, weight = draw_training_points(1, gen, shift)
    return torch.randn(shape, generator=gen), sigma, weight


def flow_loss(transformer, batch: dict[str, torch.Tensor], noise: torch.Tensor, sigma: torch.Tensor,
              weight: torch.Tensor) -> torch.Tensor:
    """Matrix-3D's weighted flow-matching loss of one batch (fp32 scalar): ``mean_b(weight_b * MSE_b)``."""
    x0 = batch["latents"]
    dtype = compute_dtype(transformer)
    noisy = add_noise(x0, noise, sigma)
    pred = transformer(hidden_states=torch.cat([noisy, batch["condition"]], dim=1).to(dtype),
                       timestep=(sigma * NUM_TRAIN_TIMESTEPS).to(x0.device),
                       encoder_hidden_states=batch["text"].to(dtype),
                       encoder_hidden_states_image=batch["image"].to(dtype), return_dict=False)[0]
    mse = (pred.float() - velocity_target(x0, noise)).pow(2).flatten(1).mean(1)
    return (weight.to(mse.device) * mse).mean()


def _stack(samples: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for key in ("latents", "condition", "text", "image"):
        shapes = {tuple(s[key].shape) for s in samples}
        if len(shapes) > 1:
            raise ValueError(f"a batch mixes {key} shapes {sorted(shapes)}: cache clips of one size and frame count "
                             "per run, or use batch_size 1 per process")
        out[key] = torch.stack([s[key].float() for s in samples]).to(device)
    return out


def _stream(data: Iterable[dict], rank: int, world: int, shuffle: bool, seed: int) -> Iterator[dict]:
    """This rank's endless sample stream: epochs one after another. A ``Sequence`` is shuffled (the same
    permutation on every rank) and sliced ``[rank::world]``; an object with ``set_epoch`` (``LatentCacheDataset``)
    shards and shuffles itself; any other iterable is taken as this rank's share as it is."""
    epoch = 0
    while True:
        if isinstance(data, Sequence):
            order = list(range(len(data)))
            if shuffle:
                random.Random(_mix_seed(seed, epoch)).shuffle(order)
            items: Iterable[dict] = (data[i] for i in order[rank::world])
        else:
            if hasattr(data, "set_epoch"):
                data.set_epoch(epoch)
            items = data
        count = 0
        for sample in items:
            count += 1
            yield sample
        if count == 0:
            raise TrainVideoError(f"the training data yield no samples for process {rank} of {world}: give more "
                                  "clips (at least one per process) or fewer processes")
        epoch += 1


def _checkpoint_steps(out: Path) -> list[int]:
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    steps = [int(p.name.removeprefix("step-")) for p in folder.iterdir()
             if p.is_dir() and p.name.startswith("step-") and p.name.removeprefix("step-").isdigit()]
    return sorted(steps)


def _lora_params(transformer) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by peft's state-dict key (the parameter name without the adapter name)."""
    return {name.replace(".default.", "."): p for name, p in transformer.named_parameters() if "lora_" in name}


def lora_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The adapter's full fp32 CPU tensors, keyed as peft's ``get_peft_model_state_dict``. Under FSDP every
    process must call it (the shards are gathered)."""
    from torch.distributed.tensor import DTensor

    return {k: (p.full_tensor() if isinstance(p, DTensor) else p).detach().to("cpu", torch.float32).contiguous()
            for k, p in _lora_params(transformer).items()}


def _set_lora(transformer, adapter: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy full adapter tensors into the (possibly FSDP-sharded) LoRA parameters."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = _lora_params(transformer)
    if set(adapter) != set(params):
        extra = sorted(set(adapter) ^ set(params))[0]
        raise TrainVideoError(f"{folder} and this adapter differ in LoRA weight {extra}: use a new --out, or the lora "
                              "settings it was trained with")
    with torch.no_grad():
        for key, p in params.items():
            full = adapter[key].to(p.dtype)
            if isinstance(p, DTensor):
                p.to_local().copy_(distribute_tensor(full.to(p.device), p.device_mesh, p.placements).to_local())
            else:
                p.copy_(full)


def _optimizer_file(d: Dist, sharding: str) -> str:
    return f"optimizer-rank-{d.rank}.pt" if sharding == "fsdp" and d.world > 1 else OPTIMIZER_FILE


def _save_checkpoint(out: Path, step: int, transformer, optimizer, keep: int, d: Dist, sharding: str) -> Path:
    """Write ``OUT/checkpoints/step-N`` atomically (temporary folder, then rename) and prune old ones. Every
    process calls it: under FSDP each writes its optimizer shard, rank 0 the rest."""
    from safetensors.torch import save_file

    folder = out / CHECKPOINTS
    tmp, final = folder / f".tmp-step-{step}", folder / f"step-{step}"
    adapter = lora_state_dict(transformer)
    if d.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(d)
    if d.rank == 0 or _optimizer_file(d, sharding) != OPTIMIZER_FILE:
        torch.save(optimizer.state_dict(), tmp / _optimizer_file(d, sharding))
    barrier(d)
    if d.rank == 0:
        save_file(adapter, tmp / ADAPTER_FILE)
        state = {"step": step, "world": d.world, "sharding": sharding, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in _checkpoint_steps(out)[:-keep]:
            shutil.rmtree(folder / f"step-{old}", ignore_errors=True)
    barrier(d)
    return final


def _load_checkpoint(folder: Path, transformer, optimizer, d: Dist, sharding: str) -> int:
    from safetensors.torch import load_file

    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    sharded = _optimizer_file(d, sharding) != OPTIMIZER_FILE
    if sharded and (state.get("world") != d.world or state.get("sharding") != sharding):
        raise TrainVideoError(f"{folder} was written by {state.get('world')} processes with sharding "
                              f"{state.get('sharding')}: resume an fsdp run with the same number of processes")
    _set_lora(transformer, load_file(folder / ADAPTER_FILE), folder)
    optimizer.load_state_dict(torch.load(folder / _optimizer_file(d, sharding), map_location=d.device,
                                         weights_only=True))
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def save_lora(out: Path, transformer, layers: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``OUT/pytorch_lora_weights.safetensors`` through diffusers' ``save_lora_weights``, with the adapter's
    peft config as metadata (so alpha != rank loads right), replacing any older file atomically. ``layers``: the
    adapter's ``lora_state_dict`` when it was gathered already (FSDP)."""
    from diffusers import WanImageToVideoPipeline

    layers = lora_state_dict(transformer) if layers is None else layers
    with tempfile.TemporaryDirectory(prefix=".tmp-lora-", dir=out) as tmp:
        WanImageToVideoPipeline.save_lora_weights(
            tmp, transformer_lora_layers=layers, safe_serialization=True,
            transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict())
        os.replace(Path(tmp) / LORA_FILE, out / LORA_FILE)
    return out / LORA_FILE


def _resolve_data(spec: TrainVideoSpec, data: Iterable[dict] | None, condition: ConditionSpec | None, d: Dist
                  ) -> tuple[Iterable[dict], ConditionSpec]:
    if data is not None:
        if condition is None:
            raise ValueError("in-memory training data need the ConditionSpec they were encoded with (condition=)")
        return data, condition
    if not spec.data:
        raise TrainVideoError("no training data: give latent-cache folders in the config's data list or with --data")
    from training.latent_cache import LatentCacheDataset

    dataset = LatentCacheDataset(spec.data, rank=d.rank, world_size=d.world, shuffle=spec.shuffle, seed=spec.seed)
    if dataset.model != spec.model:
        warnings.warn(f"the caches were encoded with model {dataset.model!r}, training uses {spec.model!r}: they must "
                      "be the same weights", stacklevel=3)
    if condition is not None and condition != dataset.spec:
        raise ValueError(f"condition {condition} differs from the caches' {dataset.spec}")
    return dataset, dataset.spec


def train_video(spec: TrainVideoSpec, data: Iterable[dict] | None = None, condition: ConditionSpec | None = None,
                out: str | Path | None = None) -> TrainResult:
    """Train the LoRA of ``spec`` (resuming from OUT's newest checkpoint) and write the LoRA; returns what ran.

    ``data``: latent-cache sample dicts (``clip_id``, ``latents``, ``condition``, ``text``, ``image``), with
    ``condition`` the ConditionSpec they were made with; without it, the caches in ``spec.data``. Runs alone, or
    as one process of a torchrun / Ray Train group (WORLD_SIZE > 1): the global batch is split over the processes
    and the data sharded by rank (see ``_stream``)."""
    from inference.wan import load_wan

    out = Path(out if out is not None else spec.out or "")
    if not str(out):
        raise TrainVideoError("no output folder: set out in the config or give --out")
    d = init_distributed(spec.device)
    try:
        return _train(spec, data, condition, out, d, load_wan)
    finally:
        close_distributed(d)


def _train(spec: TrainVideoSpec, data, condition, out: Path, d: Dist, load_wan) -> TrainResult:
    if spec.batch_size % d.world:
        raise TrainVideoError(f"batch_size {spec.batch_size} does not split over {d.world} processes: use a multiple "
                              f"of {d.world}")
    local_batch = spec.batch_size // d.world
    data, condition = _resolve_data(spec, data, condition, d)
    if d.rank == 0:
        check_rerun(out / SPEC_FILE, spec.model_dump(mode="json"), _RESUME_FREE, TrainVideoError)
        out.mkdir(parents=True, exist_ok=True)
        (out / SPEC_FILE).write_text(json.dumps(spec.model_dump(mode="json"), indent=2) + "\n")
        write_condition_spec(out, condition)
    barrier(d)

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(spec.precision)
    if dtype is None:
        dtype = torch.bfloat16 if d.device.type == "cuda" else torch.float32
    fsdp = spec.sharding == "fsdp" and d.world > 1
    transformer = load_wan(spec.model, dtype=dtype, device="cpu" if fsdp else d.device,
                           parts=("transformer",)).transformer
    params = add_lora(transformer, spec.lora, spec.seed)
    if spec.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if fsdp:
        params = _shard(transformer, d, dtype)
    transformer.train()
    opt = spec.optimiser
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)

    start = 0
    done = _checkpoint_steps(out)
    if done:
        start = _load_checkpoint(out / CHECKPOINTS / f"step-{done[-1]}", transformer, optimizer, d, spec.sharding)
    metrics = out / METRICS_FILE
    if d.rank == 0:
        truncate_metrics(metrics, start)
    barrier(d)
    model = transformer
    if d.world > 1 and not fsdp:
        model = torch.nn.parallel.DistributedDataParallel(
            transformer, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    stream = _stream(data, d.rank, d.world, spec.shuffle, spec.seed)
    for _ in range(0 if spec.overfit_batch else start * local_batch):  # what the checkpointed steps consumed
        next(stream)
    first: list[dict] | None = None
    result = TrainResult(out=out, step=start, resumed_from=start)
    times = []
    log = open(metrics, "a") if d.rank == 0 else None
    try:
        for step in range(start + 1, spec.steps + 1):
            t0 = time.perf_counter()
            samples = first or [next(stream) for _ in range(local_batch)]
            if spec.overfit_batch:
                first = samples
            batch = _stack(samples, d.device)
            draw_step = 1 if spec.overfit_batch else step
            draws = [sample_noise(spec.seed, draw_step, j * d.world + d.rank, batch["latents"].shape[1:], spec.shift)
                     for j in range(local_batch)]
            noise = torch.stack([n for n, _, _ in draws]).to(d.device)
            sigma = torch.cat([s for _, s, _ in draws]).to(d.device)
            weight = torch.cat([w for _, _, w in draws]).to(d.device)
            loss = flow_loss(model, batch, noise, sigma, weight)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, opt.grad_clip if opt.grad_clip > 0 else float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = global_mean(loss.detach(), d)
            seconds = time.perf_counter() - t0
            times.append(seconds)
            result.losses.append(value)
            result.step = step
            if log is not None:
                log.write(json.dumps({"step": step, "loss": value, "grad_norm": float(grad_norm), "lr": opt.lr,
                                      "seconds": round(seconds, 4)}) + "\n")
                log.flush()
                if step % spec.log_every == 0 or step == spec.steps:
                    print(f"train-video step {step}/{spec.steps} loss {value:.4f} ({seconds:.2f} s)",
                          file=sys.stderr, flush=True)
            if step % spec.checkpoint_every == 0 or step == spec.steps:
                _save_checkpoint(out, step, transformer, optimizer, spec.keep_checkpoints, d, spec.sharding)
    finally:
        if log is not None:
            log.close()
    layers = lora_state_dict(transformer)  # every process: FSDP gathers the shards
    if d.rank == 0:
        save_lora(out, transformer, layers)
    barrier(d)
    if len(times) > 1:
        result.seconds_per_step = float(np.mean(times[1:]))
    return result


def _shard(transformer, d: Dist, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    """FSDP2 over the process group: each transformer block, then the root, sharded onto this process's device;
    compute in ``dtype`` (the base's), gradients reduced in fp32. Returns the trainable (sharded) LoRA parameters."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in transformer.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(transformer, mesh=mesh, mp_policy=policy)
    return [p for p in transformer.parameters() if p.requires_grad]


def _ray_worker(config: dict) -> None:
    """One Ray Train worker: the same loop, in the process group Ray Train set up."""
    train_video(TrainVideoSpec.model_validate(config["spec"]), out=config["out"])


def train_video_ray(spec: TrainVideoSpec, address: str | None, workers: int, out: str | Path | None = None) -> Path:
    """Run ``train_video`` on ``workers`` Ray Train workers (one GPU each when the cluster has GPUs) of the cluster
    at ``address`` (None: a local one). The caches and OUT must be on storage every worker sees."""
    out = Path(out if out is not None else spec.out or "")
    if not str(out) or not spec.data:
        raise TrainVideoError("Ray Train runs need an output folder and latent-cache data folders in the spec")
    out = out.resolve()
    data = [str(Path(p).resolve()) for p in spec.data]
    config = {"spec": {**spec.model_dump(mode="json"), "data": data}, "out": str(out)}
    run_ray_train(_ray_worker, config, address, workers, out, "train-video", TrainVideoError)
    return out
