"""The video model's subcommands: ``eval-video`` (``inference.metrics``) scores predicted panoramic videos against
ground-truth clips."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADLINE = ("psnr", "ssim", "lpips", "fid", "fvd", "r_err_deg", "t_err")
"""The metrics.json keys printed on the command's one line (Matrix-3D's Table 2 columns)."""


def cmd_eval_video(args: argparse.Namespace) -> None:
    from inference.metrics import MetricWeights, evaluate_videos, video_pairs

    weights = MetricWeights(lpips=args.lpips_weights, inception=args.inception_weights, i3d=args.i3d_weights,
                            device=args.device)
    result = evaluate_videos(video_pairs(args.pred, args.gt, args.clip), weights)
    text = json.dumps(result, indent=2, allow_nan=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    line = {k: None if result[k] is None else round(result[k], 4) for k in HEADLINE}
    print(json.dumps({**line, "clips": result["clips"], "missing": sorted(result["missing"]), "out": str(out)}))


def add_eval_video(sub) -> None:
    p = sub.add_parser("eval-video", help="score predicted panoramic videos against ground-truth clips: PSNR, SSIM, "
                                          "LPIPS, FID, FVD, camera-following R_err / T_err")
    p.add_argument("--pred", required=True,
                   help="a built dataset (clips matched to --gt by clip_id), a generation output folder (video.mp4, "
                        "cameras.json, clip.json) or a folder of them")
    p.add_argument("--gt", required=True, help="the built dataset holding the ground-truth clips")
    p.add_argument("--clip", help="ground-truth clip id of a generation output without clip.json")
    p.add_argument("--lpips-weights", type=Path,
                   help="LPIPS trunk + linear heads: a file or a folder (alexnet-owt-7be5be79.pth + lpips' alex.pth)")
    p.add_argument("--inception-weights", type=Path,
                   help="FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--i3d-weights", type=Path, help="FVD's TorchScript I3D (i3d_torchscript.pt)")
    p.add_argument("--device", help="torch device for the networks (default: cuda when available, else cpu)")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.set_defaults(func=cmd_eval_video)
