"""Panoramic 3D reconstruction subcommands: ``reconstruct`` (``inference.reconstruct``) and ``eval-recon``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dataset.cli.common import CliError, number_flag

HEADLINE = ("psnr", "ssim", "lpips")
"""The metrics printed on the command's one line, for the reconstruction and each baseline."""


def _line(metrics: dict, **extra) -> str:
    def short(m: dict | None) -> dict | None:
        return None if m is None else {k: None if m[k] is None else round(m[k], 4) for k in HEADLINE}

    off = metrics.get("off_trajectory")
    return json.dumps({**short(metrics), "baselines": {b: short(m) for b, m in metrics["baselines"].items()},
                       "off_trajectory": off and {**short(off), "baselines": {b: short(m) for b, m in
                                                                              off["baselines"].items()}},
                       **extra})


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from dataset.core.jobspec import load_yaml_spec
    from inference.reconstruct import (
        LRMRun,
        OffTrajectory,
        ReconConfig,
        clip_inputs,
        reconstruct_clip,
        render_off_trajectory,
        video_inputs,
    )

    cfg = load_yaml_spec(args.config, ReconConfig, "reconstruct config") if args.config else ReconConfig()
    if args.iterations is not None:
        cfg = cfg.model_copy(update={"opt": cfg.opt.with_iterations(args.iterations)})
    if args.crop_size is not None:
        cfg = cfg.model_copy(update={"crop_size": args.crop_size})
    if args.super_resolution is not None:
        cfg = cfg.model_copy(update={"super_resolution": args.super_resolution})
    lrm = None
    if args.method == "lrm":
        if args.checkpoint is None or args.vae is None:
            raise CliError("--method lrm needs --checkpoint PATH|tiny (train-lrm's folder or Matrix-3D's .pt) and "
                           "--vae PATH|tiny (a Wan2.1 folder with its VAE)")
        from inference.lrm import load_lrm
        from inference.wan import default_device, load_wan

        device = args.device or str(default_device())
        lrm = LRMRun(model=load_lrm(args.checkpoint, device), vae=load_wan(args.vae, device=device,
                                                                             parts=("vae",)).vae,
                     checkpoint=str(args.checkpoint))
    elif args.checkpoint is not None or args.vae is not None:
        raise CliError("--checkpoint and --vae are for --method lrm")
    if (args.from_clip is None) == (args.video is None):
        raise CliError("give --from-clip DATASET CLIP_ID, or --video MP4 --cameras JSON with --depth or --depth-model")
    if args.video is not None:
        if args.cameras is None:
            raise CliError("--video needs --cameras JSON (one pose per frame, e.g. generate's cameras.json)")
        frames, depth, c2w, source = video_inputs(args.video, args.cameras, cfg, args.depth, args.depth_model,
                                                  args.reference_depth, args.device, require_depth=lrm is None)
        off = OffTrajectory(missing="a video has no scene to render views beside its trajectory")
    else:
        frames, depth, c2w, source = clip_inputs(*args.from_clip)
        off = render_off_trajectory(source, frames, depth, c2w, cfg)
    metrics = reconstruct_clip(frames, depth, c2w, args.out, cfg, lpips_weights=args.lpips_weights,
                               backend=args.backend, progress=not args.quiet, source=source, device=args.device,
                               off_trajectory=off, lrm=lrm)
    print(_line(metrics, gaussians=metrics["gaussians"], seconds=metrics["seconds"]["total"], out=str(args.out)))


def cmd_eval_recon(args: argparse.Namespace) -> None:
    from inference.reconstruct import eval_folder

    metrics = eval_folder(args.dir, args.lpips_weights)
    out = Path(args.out) if args.out else Path(args.dir) / "eval" / "metrics.json"
    out.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(_line(metrics, views=metrics["views"], out=str(out)))


def add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="lift a panoramic clip into 3D Gaussians (scene.ply), evaluated on "
                                           "held-out frames against the point-cloud and panorama-mesh baselines")
    p.add_argument("--from-clip", nargs=2, metavar=("DATASET", "CLIP_ID"),
                   help="a committed dataset clip: its frames, exact depth and poses")
    p.add_argument("--video", help="a panoramic video (e.g. generate's video.mp4) instead of a dataset clip")
    p.add_argument("--cameras", help="its poses: Matrix-3D cameras.json or our trajectory JSON, one per frame")
    p.add_argument("--depth", help="folder of NNNN.npy range depth (metres) per keyframe of --video")
    p.add_argument("--depth-model", help="depth estimator for --video: a transformers depth-estimation folder or "
                                         "'tiny' (keyframes aligned by scale and shift)")
    p.add_argument("--reference-depth", help="frame 0's metric range depth .npy (e.g. generate --depth), so the "
                                             "estimated depth is in metres")
    p.add_argument("--device", help="torch device of the Gaussians and the depth estimator (default: cuda when "
                                    "available)")
    p.add_argument("--method", choices=["opt", "lrm"], default="opt",
                   help="opt: 3D Gaussian optimisation (Matrix-3D's recipe); lrm: the feed-forward model")
    p.add_argument("--checkpoint", metavar="PATH|tiny",
                   help="--method lrm: train-lrm's output folder, Matrix-3D's pano_lrm_480p.pt, or tiny")
    p.add_argument("--vae", metavar="PATH|tiny", help="--method lrm: a Wan2.1 folder whose VAE encodes the video")
    p.add_argument("--config", help="ReconConfig YAML (keyframe_every, crop_size, max_points, opt: {...})")
    p.add_argument("--iterations", type=number_flag(int, ge=1, le=1_000_000),
                   help="optimiser steps (the densify schedule scales with them; a shorter run gets larger "
                        "learning rates, OptConfig.with_iterations); default 3000")
    p.add_argument("--crop-size", type=number_flag(int, ge=16, le=4096), help="crop side in pixels (default 512)")
    p.add_argument("--super-resolution", metavar="PATH|tiny",
                   help="upscale the training crops with this transformers super-resolution folder (e.g. Swin2SR), "
                        "cut at crop-size / its scale (Matrix-3D's StableSR step); default none")
    p.add_argument("--lpips-weights", type=Path, help="LPIPS weights (as eval-video); without them lpips is null")
    p.add_argument("--backend", choices=["auto", "torch", "gsplat"], default="auto",
                   help="rasterizer: gsplat on a CUDA GPU, the PyTorch reference elsewhere")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_reconstruct)


def add_eval_recon(sub) -> None:
    p = sub.add_parser("eval-recon", help="recompute a reconstruction's PSNR/SSIM/LPIPS table from DIR/eval/")
    p.add_argument("dir", help="a matrix-pano reconstruct output folder")
    p.add_argument("--super-resolution", metavar="PATH|tiny",
                   help="upscale the training crops with this transformers super-resolution folder (e.g. Swin2SR), "
                        "cut at crop-size / its scale (Matrix-3D's StableSR step); default none")
    p.add_argument("--lpips-weights", type=Path, help="LPIPS weights (as eval-video)")
    p.add_argument("--out", help="metrics file to write (default DIR/eval/metrics.json)")
    p.set_defaults(func=cmd_eval_recon)
