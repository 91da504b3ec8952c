"""Panoramic video model throughput: latent caching, LoRA training and generation with the tiny model on the CPU,
and the real-size Wan2.1-I2V-14B transformer (random bf16 weights) on a GPU.

    python benchmarks/video.py [--clips 2] [--steps 10] [--gen-steps 10]     # CPU part, then the GPU part if any
    python benchmarks/video.py --only gpu [--gpu-steps 3] [--frames 81 --height 480 --width 960] [--peak-tflops 989]
    python benchmarks/video.py --only gpu --gpu-size tiny                       # the GPU code path, tiny config

CPU part: a small dataset is built (procedural scene, 9-frame 128x64 clips); ``run_cache`` caches it with the
tiny model on Ray actors (Ray's start-up is timed apart; actor start and model load are inside the job's time),
and ``cache_clip`` caches the same clips one by one in this process (the work alone, for the job's overhead);
``train_video`` runs configs/train_video_tiny.yaml on the cache; ``generate`` makes one clip with CFG.

GPU part (when CUDA is available; on a GPU machine use ``--only gpu``: the CPU part would put its actors and
training on the GPU): the transformer of Wan2.1-I2V-14B-480P (its diffusers config) built with random weights
directly on the device in bf16 (the modules diffusers keeps in fp32 stay so), the LoRA of
configs/train_video_480p.yaml added with ``add_lora``, gradient checkpointing on. Timed, after one untimed
warm-up each: forward + backward + AdamW steps through ``flow_loss`` on random latents of the requested size, then
denoising steps of the project's sampler (``sample_latents``: two transformer passes per step with CFG, no grad).
FLOPs are counted from the config (the formula is printed); the encoders and the VAE decode are not in the
per-clip figure. Matrix-3D reports "tens of minutes" per scene. ``--gpu-size tiny`` runs the same code with the
tiny transformer config on whatever device is present (the CPU included), at a small default size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

REPO = Path(__file__).resolve().parent.parent
WAN_I2V_14B = {"patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128, "in_channels": 36,
               "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 13824, "num_layers": 40,
               "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": 1280,
               "added_kv_proj_dim": 5120, "rope_max_seq_len": 1024}
"""transformer/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers."""
IMAGE_TOKENS = 257
"""Image tokens of the frame-0 image (open-clip ViT-H/14 in Wan2.1 I2V)."""
REAL_SIZE = (81, 480, 960)
"""Frames, height, width of the real-size run unless given (Matrix-3D's 480p)."""
TINY_SIZE = (9, 64, 128)
"""Frames, height, width of the ``--gpu-size tiny`` run unless given."""
MATRIX3D_SECONDS = 600.0
"""Matrix-3D's "tens of minutes" per scene, taken at its lowest (10 min)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gib(value: float | None) -> str:
    return "n/a (no GPU)" if value is None else f"{value:.1f} GiB"


# ---------------------------------------------------------------------------------------------- CPU part


def cpu_part(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, str]]:
    """Build, cache, train and generate with the tiny model; returns the summary rows (figure, value, note)."""
    from dataset.core.jobspec import load_yaml_spec, parse_job_spec
    from dataset.jobs.build import run_build
    from dataset.runtime.ray import init_ray
    from dataset.store.reader import PanoDataset
    from inference.generate import GenerationRequest, generate
    from inference.wan import load_wan
    from training.cache_job import CacheSpec, cache_clip, run_cache
    from training.video import TrainVideoSpec, train_video

    rows = []
    t0 = time.perf_counter()
    ray = init_ray(None, args.workers)
    print(f"ray start-up: {time.perf_counter() - t0:.1f} s")
    spec = parse_job_spec({"scenes": [args.scene], "trajectories_per_scene": args.clips,
                           "frames_per_clip": args.clip_frames, "resolution": [128, 64],
                           "output": {"rows_per_group": 1}})
    ds = tmp / "dataset"
    t0 = time.perf_counter()
    built = run_build(spec, ds, workers=args.workers, progress=False)
    clips = built["clips_committed"]
    print(f"build: {clips} clips of {args.clip_frames} frames at 128x64 from {args.scene} in "
          f"{time.perf_counter() - t0:.1f} s")

    cache_spec = CacheSpec(model="tiny")
    t0 = time.perf_counter()
    counts = run_cache(ds, tmp / "cache", cache_spec, workers=args.workers, progress=False)
    job_s = time.perf_counter() - t0
    ray.shutdown()
    job_rate = counts["cached_now"] / job_s
    print(f"cache-latents job, {args.workers} worker(s): {counts['cached_now']} clips in {job_s:.1f} s = "
          f"{job_rate:.2f} clips/s (actor start, tiny model load, guidance, encoding, shard commit; Ray start-up "
          f"excluded)")
    components = load_wan("tiny", device="cpu")
    t0 = time.perf_counter()
    with torch.inference_mode():
        for clip in PanoDataset(ds).clips():
            cache_clip(components, clip, cache_spec)
    alone_rate = clips / (time.perf_counter() - t0)
    print(f"cache_clip in this process ({torch.get_num_threads()} threads): {alone_rate:.2f} clips/s (clip decode, "
          f"guidance, encoding); job / in-process: {job_rate / alone_rate:.2f}")
    rows += [("cache-latents, tiny, CPU", f"{job_rate:.2f} clips/s",
              f"{args.workers} Ray worker(s), {args.clip_frames} frames 128x64; actor start + model load included"),
             ("cache_clip alone, tiny, CPU", f"{alone_rate:.2f} clips/s",
              f"one process, no Ray; job / in-process {job_rate / alone_rate:.2f}")]

    train = load_yaml_spec(REPO / "configs" / "train_video_tiny.yaml", TrainVideoSpec, "train-video spec")
    train = TrainVideoSpec.model_validate({**train.model_dump(), "data": [str(tmp / "cache")], "steps": args.steps,
                                           "checkpoint_every": args.steps, "log_every": args.steps,
                                           "out": str(tmp / "run")})
    t0 = time.perf_counter()
    result = train_video(train)
    wall = time.perf_counter() - t0
    per_step = result.seconds_per_step
    print(f"train-video (configs/train_video_tiny.yaml, {args.steps} steps): {per_step:.3f} s/step = "
          f"{1 / per_step:.1f} steps/s (mean of steps 2..{args.steps}); {wall:.1f} s in all with the model load, "
          f"checkpoint and LoRA save")
    rows.append(("train-video, tiny, CPU", f"{1 / per_step:.1f} steps/s ({per_step:.3f} s/step)",
                 f"batch {train.batch_size}, LoRA r{train.lora.rank}, {train.precision}"))

    clip = next(PanoDataset(ds).clips())
    request = GenerationRequest(from_clip=(ds, clip.clip_id), prompt=clip.row["caption"] or "a room",
                                steps=args.gen_steps, progress=False)
    t0 = time.perf_counter()
    summary = generate(request, tmp / "generated", components)
    wall = time.perf_counter() - t0
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in summary["seconds"].items())
    print(f"generate ({args.gen_steps} steps, CFG {request.cfg}, {summary['frames']} frames "
          f"{summary['size'][0]}x{summary['size'][1]}): {wall:.2f} s per clip ({stages}; model loaded before)")
    rows.append(("generate, tiny, CPU", f"{wall:.2f} s/clip",
                 f"{args.gen_steps} steps, CFG {request.cfg}, sampling {summary['seconds']['sampling']:.2f} s"))
    return rows


# ---------------------------------------------------------------------------------------------- GPU part


def build_transformer(config: dict, device: torch.device, dtype: torch.dtype):
    """A ``WanTransformer3DModel`` of ``config`` with random weights made on ``device`` in ``dtype`` (never a full
    fp32 copy), with the modules diffusers' ``from_pretrained`` keeps in fp32 (``_keep_in_fp32_modules``) in fp32,
    so the dtypes are those of a loaded checkpoint."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**config)
    finally:
        torch.set_default_dtype(default)
    for name, p in model.named_parameters():
        if any(m in name.split(".") for m in model._keep_in_fp32_modules):
            p.data = p.data.float()
    return model.requires_grad_(False)


def lora_macs(transformer, tokens: int, text_tokens: int, image_tokens: int) -> int:
    """Multiply-adds per forward of the peft LoRA adapters on ``transformer``: r (in + out) per token each adapted
    projection sees (the cross-attention's K/V the text tokens, its added K/V the image tokens, every other
    projection the video tokens)."""
    seen = {"attn2.to_k": text_tokens, "attn2.to_v": text_tokens, "attn2.add_k_proj": image_tokens,
            "attn2.add_v_proj": image_tokens}
    total = 0
    for name, module in transformer.named_modules():
        for a, b in zip(getattr(module, "lora_A", {}).values(), getattr(module, "lora_B", {}).values(), strict=True):
            count = next((n for suffix, n in seen.items() if name.endswith(suffix)), tokens)
            total += count * (a.in_features * a.out_features + b.in_features * b.out_features)
    return total


def step_flops(config: dict, tokens: int, text_tokens: int, image_tokens: int, lora: int) -> dict[str, float]:
    """FLOPs of one forward pass, of one LoRA training step without and with activation recompute, and of the
    full-fine-tune convention, for one clip of ``tokens`` video tokens and ``lora`` LoRA multiply-adds per
    forward (``FLOP_FORMULA``)."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    patch = config["patch_size"][0] * config["patch_size"][1] * config["patch_size"][2]
    kv = config["added_kv_proj_dim"] or 0
    layers = config["num_layers"]
    per_block = (tokens * (6 * d * d + 2 * d * config["ffn_dim"]) + text_tokens * 2 * d * d
                 + image_tokens * 2 * kv * d)
    embed = (tokens * (config["in_channels"] * patch * d + d * config["out_channels"] * patch)
             + text_tokens * (config["text_dim"] * d + d * d) + config["freq_dim"] * d + 7 * d * d)
    if config["image_dim"]:
        embed += image_tokens * (config["image_dim"] ** 2 + config["image_dim"] * d)
    macs = layers * per_block + embed
    attention = 4 * layers * tokens * (tokens + text_tokens + (image_tokens if kv else 0)) * d
    forward = 2 * macs + attention + 2 * lora
    train = 4 * macs + 3 * attention + 6 * lora
    return {"forward": forward, "train": train, "train_checkpointed": train + forward,
            "full_finetune": 6 * macs + 3 * attention, "linear_macs": macs, "attention": attention}


FLOP_FORMULA = """\
FLOPs per clip: M = linear multiply-adds per forward = L x [T (6 d^2 + 2 d f) + S_text 2 d^2 + S_img 2 d^2]
  + embeddings (patch, text, image, time, output); attention A = 4 L T (T + S_text + S_img) d (QK^T and AV
  of the self- and cross-attention); R = LoRA multiply-adds, r (in + out) per token of each adapted projection.
  L layers, d width, f FFN width, T video tokens, S_text 512 text tokens, S_img 257 image tokens.
  forward = 2M + A + 2R
  training step (model FLOPs, for MFU) = forward + backward = 4M + 3A + 6R: the frozen base computes
  activation gradients only (2M, a slight overcount: the frozen embeddings and the context K/V need none),
  no weight gradients; attention backward 2A; LoRA both (4R). At 480p x 81 this is 0.3% above what
  torch.utils.flop_counter counts for the step (the forward agrees exactly)
  with gradient checkpointing (hardware FLOPs, for HFU) = that + one more forward
  full-fine-tune convention (6 N T + 12 L T^2 d style, base weight gradients counted) = 6M + 3A, comparison only
  denoising step with CFG = 2 forwards"""


def time_training(transformer, params: list[torch.nn.Parameter], batch: dict[str, torch.Tensor], recipe,
                  steps: int) -> float:
    """Seconds per LoRA training step of ``recipe`` (a ``TrainVideoSpec``) as ``train_video`` makes it (noise
    drawn by ``sample_noise``, ``flow_loss``, backward, gradient clipping, AdamW), mean of ``steps`` timed steps
    after one warm-up step; the optimiser state is freed on return."""
    from training.video import flow_loss, sample_noise

    device = batch["latents"].device
    opt = recipe.optimiser
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
    transformer.train()
    for step in range(1, steps + 2):
        if step == 2:  # after the warm-up: kernels chosen, allocator and AdamW state in place
            _sync(device)
            t0 = time.perf_counter()
        noise, sigma, weight = sample_noise(recipe.seed, step, 0, batch["latents"].shape[1:], recipe.shift)
        loss = flow_loss(transformer, batch, noise[None].to(device), sigma.to(device), weight.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, opt.grad_clip if opt.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def gpu_part(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Time LoRA training steps and CFG denoising steps of the transformer; returns the summary rows."""
    from dataset.core.jobspec import load_yaml_spec
    from inference.condition import ConditionInputs, check_video_size
    from inference.generate import GenerationRequest, sample_latents
    from inference.wan import TEXT_LEN, tiny_configs
    from training.video import TrainVideoSpec, add_lora

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    config = WAN_I2V_14B if args.gpu_size == "real" else tiny_configs()["transformer"]
    defaults = TINY_SIZE if args.gpu_size == "tiny" else REAL_SIZE
    frames, height, width = (v if v is not None else d
                             for v, d in zip((args.frames, args.height, args.width), defaults, strict=True))
    check_video_size(frames, height, width)
    recipe = load_yaml_spec(REPO / "configs" / "train_video_480p.yaml", TrainVideoSpec, "train-video spec")
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"GPU part: {args.gpu_size} transformer on {name}, bf16, {frames} frames {width}x{height}")

    t0 = time.perf_counter()
    transformer = build_transformer(config, device, torch.bfloat16)
    _sync(device)
    base = sum(p.numel() for p in transformer.parameters())
    weights_gb = torch.cuda.memory_allocated(device) / 2**30 if cuda else None
    print(f"built {base / 1e9:.3g} B parameters in {time.perf_counter() - t0:.1f} s (weights: {_gib(weights_gb)})")
    params = add_lora(transformer, recipe.lora, recipe.seed)
    transformer.enable_gradient_checkpointing()
    gen = torch.Generator().manual_seed(0)
    f_lat, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    batch = {"latents": torch.randn(1, 16, f_lat, h, w, generator=gen),
             "condition": torch.randn(1, 20, f_lat, h, w, generator=gen),
             "text": torch.randn(1, TEXT_LEN, config["text_dim"], generator=gen),
             "image": torch.randn(1, IMAGE_TOKENS, config["image_dim"], generator=gen)}
    batch = {k: v.to(device) for k, v in batch.items()}
    p_t, p_h, p_w = config["patch_size"]
    tokens = (f_lat // p_t) * (h // p_h) * (w // p_w)
    flops = step_flops(config, tokens, TEXT_LEN, IMAGE_TOKENS, lora_macs(transformer, tokens, TEXT_LEN, IMAGE_TOKENS))
    print(f"LoRA r{recipe.lora.rank} on {', '.join(recipe.lora.targets)}: "
          f"{sum(p.numel() for p in params) / 1e6:.3g} M parameters; "
          f"latents {tuple(batch['latents'].shape)}, {tokens} video tokens")

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    train_s = time_training(transformer, params, batch, recipe, args.gpu_steps)
    train_gb = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    inputs = ConditionInputs(batch["condition"], batch["image"], batch["text"])
    negative = torch.randn(batch["text"].shape, generator=gen)
    cfg, clip_steps = GenerationRequest.model_fields["cfg"].default, GenerationRequest.model_fields["steps"].default
    transformer.eval()
    sample_latents(transformer, inputs, negative, steps=1, cfg=cfg)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    sample_latents(transformer, inputs, negative, steps=args.gpu_steps, cfg=cfg)
    _sync(device)
    denoise_s = (time.perf_counter() - t0) / args.gpu_steps
    sample_gb = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None

    peak = args.peak_tflops * 1e12
    mfu, hfu = flops["train"] / train_s / peak, flops["train_checkpointed"] / train_s / peak
    denoise_mfu = 2 * flops["forward"] / denoise_s / peak
    clip_s = clip_steps * denoise_s
    print(FLOP_FORMULA)
    print(f"  here: M = {flops['linear_macs'] / 1e12:.4g} T multiply-adds, A = {flops['attention'] / 1e12:.4g} "
          f"TFLOP, forward {flops['forward'] / 1e12:.4g} TFLOP, training step {flops['train'] / 1e12:.4g} TFLOP "
          f"({flops['train_checkpointed'] / 1e12:.4g} with the recompute; full-fine-tune convention "
          f"{flops['full_finetune'] / 1e12:.4g}); peak {args.peak_tflops:g} TFLOP/s dense bf16")
    print(f"training step (forward + backward + AdamW, {args.gpu_steps} timed): {train_s:.2f} s/step, "
          f"MFU {mfu:.1%}, HFU {hfu:.1%}, peak memory {_gib(train_gb)}")
    print(f"denoising step (CFG {cfg:g}: 2 forwards, no grad, LoRA attached unmerged): {denoise_s:.2f} s/step, "
          f"MFU {denoise_mfu:.1%}, peak memory {_gib(sample_gb)}; {clip_steps} steps = {clip_s:.1f} s per clip "
          f"(transformer only: the encoders and the VAE decode are not included), "
          f"{clip_s / MATRIX3D_SECONDS:.2f}x Matrix-3D's 'tens of minutes' taken as 10 min")
    size = f"{args.gpu_size}, {frames} frames {width}x{height}, {name}"
    return [("LoRA training step", f"{train_s:.2f} s/step", f"{size}; bf16, r{recipe.lora.rank}, checkpointing"),
            ("peak memory, training", _gib(train_gb), f"weights {_gib(weights_gb)}"),
            ("MFU / HFU, training", f"{mfu:.1%} / {hfu:.1%}", f"{flops['train'] / 1e12:.4g} / "
             f"{flops['train_checkpointed'] / 1e12:.4g} TFLOP per step, peak {args.peak_tflops:g} TFLOP/s"),
            ("denoising step, CFG", f"{denoise_s:.2f} s/step", f"MFU {denoise_mfu:.1%}, peak memory {_gib(sample_gb)}"),
            (f"generated clip, {clip_steps} steps", f"{clip_s:.1f} s/clip", "transformer only, no VAE decode")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["cpu", "gpu"], help="run one part only (default: both)")
    parser.add_argument("--scene", default="procedural:indoor:1")
    parser.add_argument("--clips", type=int, default=2, help="clips in the CPU part's dataset")
    parser.add_argument("--clip-frames", type=int, default=9, help="frames per clip of the CPU part (4k+1)")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers of the build and the cache job")
    parser.add_argument("--steps", type=int, default=10, help="train-video steps of the CPU part")
    parser.add_argument("--gen-steps", type=int, default=10, help="denoising steps of the CPU part's generate")
    parser.add_argument("--gpu-size", choices=["real", "tiny"], default="real",
                        help="real: Wan2.1-I2V-14B (needs CUDA); tiny: the tiny config on any device")
    parser.add_argument("--gpu-steps", type=int, default=3, help="timed training and denoising steps")
    parser.add_argument("--frames", type=int, help="GPU part: frames (4k+1; default 81, tiny 9)")
    parser.add_argument("--height", type=int, help="GPU part: height (default 480, tiny 64)")
    parser.add_argument("--width", type=int, help="GPU part: width (default 960, tiny 128)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H200: 989)")
    args = parser.parse_args()

    rows = []
    if args.only != "gpu":
        with tempfile.TemporaryDirectory() as tmp:
            rows += cpu_part(args, Path(tmp))
    if args.only != "cpu":
        if args.gpu_size == "real" and not torch.cuda.is_available():
            print("GPU part skipped: torch.cuda.is_available() is False (the real-size transformer needs a GPU; "
                  "--gpu-size tiny runs its code path here)")
        else:
            rows += gpu_part(args)
    print("\n| figure | value | conditions |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
