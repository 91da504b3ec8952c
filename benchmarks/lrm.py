"""The feed-forward reconstruction model (``inference.lrm``, ``training.lrm``): training steps per second per
stage, reconstruction seconds and held-out PSNR against the optimisation on the same clip, in one run.

    python benchmarks/lrm.py [--width 256] [--frames 13] [--steps 300] [--opt-iterations 3000] [--crop-size 32]

CPU part: a walk through ``procedural:room:6x8x3`` rendered at ``--width`` and committed as a dataset; the tiny
model trained on it with ``configs/train_lrm_tiny.yaml`` (``--steps`` split as the config splits them); then
``reconstruct_clip`` on the same clip with ``--method lrm`` (the trained model, the tiny Wan VAE) and with
``--method opt`` (``--opt-iterations``): seconds of each method's fitting stages (lrm: encode + predict; opt:
init + optimise), their ratio, and held-out PSNR next to the mean-colour baseline.

GPU part (only with CUDA): the published size with random weights on an 81-frame 480x960 input (random latents
and a walk's rays): seconds per forward pass and Gaussian conversion (after one warm-up), peak memory, next to
Matrix-3D's Table 3 (about 10 s, PSNR 22.30 with its trained weights).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from dataset.core.conventions import pose_from_heading
from dataset.core.jobspec import JobSpec
from dataset.jobs.clips import clip_row
from dataset.render.embedded import EmbeddedRenderer
from dataset.sources import load_scene
from dataset.store.shards import ShardWriter
from inference.gs_opt import OptConfig
from inference.lrm import PRESETS, PanoLRM, load_lrm, plucker_rays, relative_poses, to_gaussians
from inference.reconstruct import LRMRun, ReconConfig, clip_inputs, reconstruct_clip
from inference.wan import load_wan
from training.lrm import TrainLRMSpec, train_lrm

REPO = Path(__file__).resolve().parents[1]
SCENE = "procedural:room:6x8x3"
TABLE3_SECONDS = 10.0
"""Matrix-3D's feed-forward reconstruction time (its Table 3)."""


def walk(frames: int) -> np.ndarray:
    """The tests' room walk: 6 cm and 3 degrees per frame."""
    return np.stack([pose_from_heading((-0.5 + 0.06 * i, -0.4 + 0.04 * i, 1.6), math.radians(20 + 3 * i))
                     for i in range(frames)])


def make_dataset(out: Path, width: int, frames: int) -> Path:
    """One clip of the walk, committed as a build commits it."""
    spec = JobSpec.model_validate({"scenes": [SCENE], "frames_per_clip": frames, "resolution": [width, width // 2]})
    writer = ShardWriter(out / "shards", rows_per_group=1)
    with EmbeddedRenderer(load_scene(SCENE)) as renderer:
        writer.add(clip_row(renderer, spec, SCENE, "room", "walk", "walk", walk(frames)))
    writer.commit(0)
    return out


def cpu_part(args: argparse.Namespace, tmp: Path) -> dict:
    data = make_dataset(tmp / "data", args.width, args.frames)
    config = yaml.safe_load((REPO / "configs/train_lrm_tiny.yaml").read_text())
    spec = TrainLRMSpec.model_validate({**config, "data": [str(data)], "out": str(tmp / "run"), "width": args.width,
                                        "device": "cpu"}).with_steps(args.steps)
    train = train_lrm(spec, progress=False)
    lines = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    per_stage = {s: [x["seconds"] for x in lines if x["stage"] == s] for s in (1, 2)}
    depth = [x["depth_l1_m"] for x in lines if x["stage"] == 1]

    frames, depth_maps, c2w, source = clip_inputs(data, "walk")
    cfg = ReconConfig(crop_size=args.crop_size, eval_every=2, off_trajectory_views=0, max_points=20000,
                      opt=OptConfig().with_iterations(args.opt_iterations))
    run = LRMRun(model=load_lrm(tmp / "run", "cpu"), vae=load_wan("tiny", device="cpu", parts=("vae",)).vae,
                 checkpoint=str(tmp / "run"))
    lrm = reconstruct_clip(frames, depth_maps, c2w, tmp / "lrm", cfg, backend="torch", progress=False,
                           source=source, device="cpu", lrm=run)
    opt = reconstruct_clip(frames, depth_maps, c2w, tmp / "opt", cfg, backend="torch", progress=False,
                           source=source, device="cpu")
    return {"train": train, "per_stage": per_stage, "depth": depth, "lrm": lrm, "opt": opt, "spec": spec}


def gpu_part() -> dict:
    device = torch.device("cuda")
    with torch.device(device):
        model = PanoLRM(PRESETS["published"]).eval()
    c2w = walk(81)
    latents = torch.randn(1, 21, 16, 60, 120, device=device)
    times = []
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(2):  # the first run warms the kernels up
            torch.cuda.synchronize()
            t = time.perf_counter()
            rays = plucker_rays(relative_poses(c2w).to(device), 480, 960)[None]
            g = to_gaussians(model(latents, rays), torch.tensor(c2w, dtype=torch.float32, device=device))
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return {"seconds": times[-1], "gaussians": len(g), "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256, help="panorama width of the CPU clip")
    parser.add_argument("--frames", type=int, default=13, help="frames of the CPU clip")
    parser.add_argument("--steps", type=int, default=300, help="training steps in all (both stages)")
    parser.add_argument("--opt-iterations", type=int, default=3000, help="iterations of the optimisation it is "
                                                                        "compared with")
    parser.add_argument("--crop-size", type=int, default=32, help="evaluation crop size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = cpu_part(args, Path(tmp))
    spec, lrm, opt = r["spec"], r["lrm"], r["opt"]
    s1, s2 = r["per_stage"][1], r["per_stage"][2]
    print(f"CPU, tiny model, {SCENE} walk {args.width}x{args.width // 2}x{args.frames}, context {spec.frames} frames")
    print(f"  train: stage 1 {len(s1)} steps, {len(s1) / max(sum(s1), 1e-9):.2f} steps/s, depth L1 "
          f"{np.mean(r['depth'][:5]):.2f} -> {np.mean(r['depth'][-10:]):.2f} m; stage 2 {len(s2)} steps, "
          f"{len(s2) / max(sum(s2), 1e-9):.2f} steps/s")
    fit_lrm = lrm["seconds"]["encode"] + lrm["seconds"]["predict"]
    fit_opt = opt["seconds"]["init"] + opt["seconds"]["optimise"]
    print(f"  reconstruct: lrm {fit_lrm:.2f} s (encode {lrm['seconds']['encode']:.2f} + predict "
          f"{lrm['seconds']['predict']:.2f}), {lrm['gaussians']} Gaussians; opt {fit_opt:.1f} s ({args.opt_iterations} "
          f"iterations), {opt['gaussians']} Gaussians; opt / lrm = {fit_opt / fit_lrm:.0f}x")
    print(f"  held-out PSNR: lrm {lrm['psnr']:.2f} dB, opt {opt['psnr']:.2f} dB, mean colour "
          f"{lrm['baselines']['mean_colour']['psnr']:.2f} dB, point cloud {lrm['baselines']['init']['psnr']:.2f} dB")
    print("| method | fit s | Gaussians | held-out PSNR / SSIM | mean colour PSNR |")
    print("|---|---|---|---|---|")
    rows = (("lrm (tiny, trained here)", lrm, fit_lrm), (f"opt ({args.opt_iterations} its)", opt, fit_opt))
    for name, m, fit in rows:
        print(f"| {name} | {fit:.2f} | {m['gaussians']} | {m['psnr']:.2f} / {m['ssim']:.3f} | "
              f"{m['baselines']['mean_colour']['psnr']:.2f} |")
    if torch.cuda.is_available():
        g = gpu_part()
        print(f"GPU, published size ({g['params'] / 1e6:.0f} M parameters, random weights), 81 x 480x960: "
              f"{g['seconds']:.2f} s per reconstruction ({g['gaussians']} Gaussians), peak {g['peak_gib']:.1f} GiB; "
              f"Matrix-3D Table 3: {TABLE3_SECONDS:.0f} s")
    else:
        print("GPU part skipped: no CUDA device")


if __name__ == "__main__":
    main()
