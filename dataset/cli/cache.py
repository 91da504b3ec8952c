"""``matrix-pano cache-latents``: a built dataset's clips become the video model's training samples
(``training.cache_job``)."""

from __future__ import annotations

import argparse
import sys

from dataset.cli.common import EXIT_NOTHING_DONE, EXIT_OK, EXIT_PARTIAL, add_job_options, number_flag


def cmd_cache_latents(args: argparse.Namespace) -> int:
    from dataset.core.jobspec import load_yaml_spec, parse_spec
    from inference.condition import ConditionSpec
    from training.augment import AugmentSpec
    from training.cache_job import CacheSpec, run_cache

    condition = load_yaml_spec(args.condition, ConditionSpec, "condition spec") if args.condition else ConditionSpec()
    overrides = {k: v for k, v in (("frame0", args.frame0), ("seam_pad_px", args.seam_pad_px)) if v is not None}
    if overrides:
        condition = parse_spec(ConditionSpec, {**condition.model_dump(), **overrides}, "--frame0/--seam-pad-px")
    augment = load_yaml_spec(args.augment, AugmentSpec, "augment spec") if args.augment else AugmentSpec()
    if args.augment_copies is not None:
        augment = augment.model_copy(update={"copies": args.augment_copies})
    spec = CacheSpec(model=args.model, condition=condition, frames=args.frames, augment=augment)
    counts = run_cache(args.dataset, args.out, spec, ray_address=args.ray_address, workers=args.workers,
                       overwrite=args.overwrite)
    print(f"cached {args.out}: {counts['clips']} of {counts['clips_total']} clips in {counts['shards']} shards "
          f"({counts['cached_now']} now), {counts['failed']} failed (see failures.parquet), {counts['seconds']} s",
          file=sys.stderr)
    if counts["failed"] == 0:
        return EXIT_OK
    return EXIT_PARTIAL if counts["clips"] else EXIT_NOTHING_DONE


def add_cache_latents(sub) -> None:
    p = sub.add_parser("cache-latents", help="turn a dataset's clips into video-model training samples: guidance, "
                                             "VAE latents, text and image embeddings")
    p.add_argument("dataset", help="input dataset folder (never modified)")
    p.add_argument("--model", required=True, help="Wan2.1 I2V folder (diffusers or Wan-AI layout) or 'tiny'")
    p.add_argument("--out", required=True, help="latent cache folder (resumed when it exists)")
    p.add_argument("--condition", help="ConditionSpec YAML/JSON (frame0, seam_pad_px, unknown_fill), e.g. a "
                                       "checkpoint's condition.json")
    p.add_argument("--frame0", choices=["render", "panorama"],
                   help="frame 0 of the guidance: the mesh render (Matrix-3D, default) or the clean panorama")
    p.add_argument("--seam-pad-px", type=number_flag(int, ge=0, le=512),
                   help="circular width padding before the VAE, a multiple of 8 (default 32)")
    p.add_argument("--frames", type=number_flag(int, ge=1),
                   help="cache the first N frames (4k+1) of each clip; default all (clips must then have 4k+1)")
    p.add_argument("--augment", help="AugmentSpec YAML/JSON (copies, yaw_roll, depth_scale, depth_noise, "
                                     "mask_erosion_px, seed): augmented variants of each clip for training")
    p.add_argument("--augment-copies", type=number_flag(int, ge=0, le=64),
                   help="augmented variants cached per clip besides the clean one (default 0)")
    add_job_options(p, "cache actors (default: one per GPU, else per CPU)")
    p.set_defaults(func=cmd_cache_latents)
