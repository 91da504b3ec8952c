"""The ``guidance`` subcommand: trajectory guidance (``inference.guidance``) of a panorama or a dataset clip."""

from __future__ import annotations

import argparse
import json
import sys

from dataset.cli.common import CliError, field_default, number_flag, output_folder, spec_flag
from dataset.core.jobspec import JobSpec, LimitsSpec
from inference.guidance import DEFAULT_THRESHOLD


def cmd_guidance(args: argparse.Namespace) -> None:
    from inference.guidance import PRESETS, inputs_from_clip, inputs_from_files, run_guidance

    output_folder(args.out)
    if args.from_clip:
        inputs = inputs_from_clip(*args.from_clip)
    elif args.panorama and args.depth:
        inputs = inputs_from_files(args.panorama, args.depth)
    else:
        raise CliError("give --panorama PNG --depth NPY, or --from-clip DATASET_DIR CLIP_ID")
    if args.trajectory is None and inputs.clip_poses is None:
        raise CliError("give --trajectory FILE or one of the presets: " + ", ".join(PRESETS))
    summary = run_guidance(args.out, inputs, args.trajectory, args.frames, args.movement, args.safety, args.fps,
                           args.threshold)
    masks = summary["mask_fraction"]
    print(json.dumps({"frames": summary["frames"], "mask_fraction_first": round(masks[0], 4),
                      "mask_fraction_last": round(masks[-1], 4),
                      "invisible_fraction": round(summary["invisible_fraction"], 4)}))
    print(f"wrote {args.out}/rendered_rgb.mp4, rendered_mask.mp4, cameras.json, contact_sheet.png", file=sys.stderr)


def add_guidance(sub) -> None:
    p = sub.add_parser("guidance", help="render a panorama's mesh along a trajectory: guidance video + mask")
    p.add_argument("--panorama", help="equirect RGB image (PNG/JPG)")
    p.add_argument("--depth", help="range depth .npy (H, W) in metres, 0 = no depth")
    p.add_argument("--from-clip", nargs=2, metavar=("DATASET_DIR", "CLIP_ID"),
                   help="use a dataset clip's first frame, depth and (without --trajectory) its poses")
    p.add_argument("--trajectory", help="JSON file (ours or Matrix-3D cameras) or a preset: straight, s_curve, "
                                        "l_curve, r_curve")
    p.add_argument("--frames", default=field_default(JobSpec, "frames_per_clip"), help="frames of a preset trajectory",
                   type=spec_flag(JobSpec, "frames_per_clip", le=field_default(LimitsSpec, "max_frames_per_clip")))
    p.add_argument("--movement", type=number_flag(float, ge=0, le=1), default=0.5,
                   help="preset path length as a fraction of the depth ahead (0 to 1)")
    p.add_argument("--safety", type=number_flag(float, ge=0, le=1), default=0.0,
                   help="shrink the path so the camera stays within this fraction of the depth (0 = off, up to 1)")
    p.add_argument("--threshold", type=number_flag(float, gt=0, le=10), default=DEFAULT_THRESHOLD,
                   help="relative depth variation of invisible edges (above 0, up to 10)")
    p.add_argument("--fps", type=spec_flag(JobSpec, "fps"), default=field_default(JobSpec, "fps"),
                   help="frame rate of the videos")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_guidance)
