"""Dataset subcommands: ``build``, ``verify`` and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys

from dataset.cli.common import CliError, add_job_options


def cmd_build(args: argparse.Namespace) -> None:
    from dataset.core.jobspec import load_job_spec
    from dataset.jobs.build import run_build

    spec = load_job_spec(args.config)
    counts = run_build(spec, args.out, ray_address=args.ray_address, workers=args.workers, overwrite=args.overwrite)
    print(f"built {args.out}: {counts['clips_committed']} clips committed ({counts['accepted']} accepted, "
          f"{counts['rejected']} rejected) in {counts['shards']} shards, {counts['clips_failed']} failed "
          f"(see failures.parquet), {counts['seconds']} s", file=sys.stderr)


def cmd_verify(args: argparse.Namespace) -> None:
    from dataset.store.reader import verify_dataset

    problems = verify_dataset(args.dir, decode=not args.no_decode)
    if problems:
        for p in problems[:50]:
            print(p, file=sys.stderr)
        more = " (first 50 shown)" if len(problems) > 50 else ""
        raise CliError(f"{args.dir}: {len(problems)} problems found{more}")
    print(f"{args.dir}: all committed shards are valid", file=sys.stderr)


def cmd_stats(args: argparse.Namespace) -> None:
    from dataset.store.stats import dataset_stats, write_previews

    stats = dataset_stats(args.dir)
    print(json.dumps(stats, indent=1))
    if not args.no_previews:
        for path in write_previews(args.dir):
            print(f"wrote {path}", file=sys.stderr)


def add_build(sub) -> None:
    p = sub.add_parser("build", help="build a dataset of panoramic clips from a job spec (resumable)")
    p.add_argument("config", help="job spec YAML (scenes, trajectories_per_scene, frames_per_clip, ...)")
    p.add_argument("--out", required=True, help="dataset folder: shards/, manifest.json, failures.parquet")
    add_job_options(p, "render workers (default: one per CPU of the cluster)")
    p.set_defaults(func=cmd_build)


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check every committed shard of a dataset; non-zero exit on problems")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--no-decode", action="store_true", help="skip decoding videos and depth (faster)")
    p.set_defaults(func=cmd_verify)


def add_stats(sub) -> None:
    p = sub.add_parser("stats", help="print dataset counts and rates; write previews/ contact sheets and plots")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--no-previews", action="store_true", help="only print the numbers")
    p.set_defaults(func=cmd_stats)
