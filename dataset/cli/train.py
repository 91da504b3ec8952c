"""The training subcommands: ``train-video`` (LoRA training of the panoramic video model on latent caches,
``training.video``) and ``train-lrm`` (the feed-forward reconstruction model on dataset shards, ``training.lrm``)."""

from __future__ import annotations

import argparse
import json
import math
import os

from dataset.cli.common import MAX_WORKERS, number_flag, spec_flag


def cmd_train_video(args: argparse.Namespace) -> None:
    from dataset.core.jobspec import load_yaml_spec, parse_spec
    from training.video import TrainVideoSpec, train_video, train_video_ray

    spec = load_yaml_spec(args.config, TrainVideoSpec, "train-video config")
    overrides = {k: v for k, v in (("data", args.data), ("out", args.out), ("steps", args.steps)) if v is not None}
    if overrides:
        spec = parse_spec(TrainVideoSpec, {**spec.model_dump(mode="json"), **overrides}, "train-video options")
    if args.ray_address is not None:
        address = None if args.ray_address == "local" else args.ray_address
        out = train_video_ray(spec, address, args.workers)
        print(json.dumps({"out": str(out), "workers": args.workers}))
        return
    result = train_video(spec)
    if result.losses:
        first, last = result.losses[0], result.losses[-1]
    else:
        first = last = None
    print(json.dumps({"out": str(result.out), "step": result.step, "resumed_from": result.resumed_from,
                      "first_loss": first, "last_loss": last,
                      "seconds_per_step": None if math.isnan(result.seconds_per_step)
                      else round(result.seconds_per_step, 4)}))


def add_train_video(sub) -> None:
    from training.video import TrainVideoSpec

    p = sub.add_parser("train-video", help="train the panoramic video LoRA on latent caches (torchrun-ready; Ray Train "
                                           "with --ray-address)")
    p.add_argument("config", help="train-video YAML config (see configs/train_video_tiny.yaml)")
    p.add_argument("--data", nargs="+", metavar="DIR", help="latent-cache folders (replace the config's data)")
    p.add_argument("--out", help="output folder (replaces the config's out); a rerun resumes from its checkpoints")
    p.add_argument("--steps", type=spec_flag(TrainVideoSpec, "steps"), help="total steps (replaces the config's)")
    p.add_argument("--ray-address", help="run under Ray Train on this cluster ('auto', 'ray://host:port' or 'local')")
    p.add_argument("--workers", type=number_flag(int, ge=1, le=MAX_WORKERS), default=1,
                   help="Ray Train workers (one GPU each when the cluster has them); default 1")
    p.set_defaults(func=cmd_train_video)


def cmd_train_lrm(args: argparse.Namespace) -> None:
    from dataset.core.jobspec import load_yaml_spec, parse_spec
    from training.lrm import TrainLRMSpec, train_lrm, train_lrm_ray

    spec = load_yaml_spec(args.config, TrainLRMSpec, "train-lrm config")
    overrides = {k: v for k, v in (("data", args.data), ("out", args.out)) if v is not None}
    if overrides:
        spec = parse_spec(TrainLRMSpec, {**spec.model_dump(mode="json"), **overrides}, "train-lrm options")
    if args.steps is not None:
        spec = spec.with_steps(args.steps)
    if args.ray_address is not None:
        address = None if args.ray_address == "local" else args.ray_address
        out = train_lrm_ray(spec, address, args.workers)
        print(json.dumps({"out": str(out), "workers": args.workers}))
        return
    summary = train_lrm(spec, progress=not args.quiet)
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, one summary
        print(json.dumps(summary))


def add_train_lrm(sub) -> None:
    p = sub.add_parser("train-lrm", help="train the feed-forward reconstruction model on dataset shards (depth, then "
                                         "images with the depth frozen; torchrun-ready, Ray Train with --ray-address)")
    p.add_argument("config", help="train-lrm YAML config (see configs/train_lrm_tiny.yaml)")
    p.add_argument("--data", nargs="+", metavar="DIR", help="dataset folders (replace the config's data)")
    p.add_argument("--out", help="output folder (replaces the config's out); a rerun resumes from its checkpoints")
    p.add_argument("--steps", type=number_flag(int, ge=1, le=10_000_000),
                   help="steps in all, split between the stages as the config splits them")
    p.add_argument("--ray-address", help="run under Ray Train on this cluster ('auto', 'ray://host:port' or 'local')")
    p.add_argument("--workers", type=number_flag(int, ge=1, le=MAX_WORKERS), default=1,
                   help="Ray Train workers (one GPU each when the cluster has them); default 1")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_train_lrm)
