"""The ``generate`` subcommand: a panoramic video along a trajectory from a panorama + depth or a dataset clip
(``inference.generate``)."""

from __future__ import annotations

import argparse
import json
import sys
import typing

from dataset.cli.common import field_default, spec_flag
from dataset.core.jobspec import parse_spec
from inference.generate import GenerationRequest, LoraFormat

_FLAGS = ("panorama", "depth", "from_clip", "trajectory", "frames", "movement", "safety", "threshold", "prompt",
          "negative_prompt", "model", "lora", "lora_format", "steps", "cfg", "shift", "seed", "fps", "device", "dtype")
"""The flags that are ``GenerationRequest`` fields of the same name."""


def cmd_generate(args: argparse.Namespace) -> None:
    from inference.generate import generate

    values = {name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None}
    request = parse_spec(GenerationRequest, {**values, "progress": not args.quiet}, "generate")
    summary = generate(request, args.out)
    print(json.dumps({k: summary[k] for k in ("frames", "size", "steps", "cfg", "seed", "lora_format",
                                              "condition_source", "seconds")}))
    print(f"wrote {args.out}/video.mp4, cameras.json, rendered_rgb.mp4, rendered_mask.mp4, contact_sheet.png, "
          "generation.json" + (", clip.json" if request.from_clip else ""), file=sys.stderr)


def add_generate(sub) -> None:
    g = GenerationRequest
    p = sub.add_parser("generate", help="generate a panoramic video along a trajectory with the video model "
                                        "(Wan2.1 I2V + LoRA)")
    p.add_argument("--panorama", help="equirect RGB image (PNG/JPG), 2:1, sides multiples of 16")
    p.add_argument("--depth", help="range depth .npy (H, W) in metres, 0 = no depth")
    p.add_argument("--from-clip", nargs=2, metavar=("DATASET_DIR", "CLIP_ID"),
                   help="use a dataset clip's first frame, depth and (without --trajectory) its poses; writes "
                        "clip.json for eval-video")
    p.add_argument("--trajectory", help="JSON file (ours or Matrix-3D cameras) or a preset: straight, s_curve, "
                                        "l_curve, r_curve")
    p.add_argument("--frames", type=spec_flag(g, "frames"),
                   help="frames to generate, 4k+1 (a preset's length, default 81; or the first N poses of a file "
                        "or clip, default all)")
    p.add_argument("--movement", type=spec_flag(g, "movement"), help="preset path length as a fraction of the depth "
                                                                      "ahead (default 0.5)")
    p.add_argument("--safety", type=spec_flag(g, "safety"),
                   help="shrink the path so the camera stays within this fraction of the depth (0 = off)")
    p.add_argument("--threshold", type=spec_flag(g, "threshold"), help="relative depth variation of the guidance "
                                                                        "mesh's invisible edges")
    p.add_argument("--prompt", required=True, help="the caption to generate for")
    p.add_argument("--negative-prompt", help="text of the unconditional branch of classifier-free guidance "
                                             "(default empty)")
    p.add_argument("--model", required=True, help="Wan2.1 I2V folder (diffusers or Wan-AI layout) or 'tiny'")
    p.add_argument("--lora", help="LoRA file, or a train-video output folder (pytorch_lora_weights.safetensors + "
                                  "condition.json)")
    p.add_argument("--lora-format", choices=typing.get_args(LoraFormat),
                   help="the LoRA's key layout (default: detected from its keys)")
    p.add_argument("--steps", type=spec_flag(g, "steps"), help=f"denoising steps (default {field_default(g, 'steps')})")
    p.add_argument("--cfg", type=spec_flag(g, "cfg"), help=f"classifier-free guidance scale on the text (default "
                                                           f"{field_default(g, 'cfg')}; 1 = off)")
    p.add_argument("--shift", type=spec_flag(g, "shift"), help=f"sigma shift (default {field_default(g, 'shift')})")
    p.add_argument("--seed", type=spec_flag(g, "seed"), help="seed of the initial noise (default 0)")
    p.add_argument("--fps", type=spec_flag(g, "fps"), help="frame rate of the videos for a panorama from files "
                                                           "(a clip keeps its own; default 12)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", help="transformer dtype: bf16, fp16 or fp32 (default bf16 on a GPU, fp32 on a CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_generate)
