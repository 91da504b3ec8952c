"""Curation subcommands: ``annotate``, ``review`` and ``export``."""

from __future__ import annotations

import argparse
import sys

from dataset.cli.common import MAX_PORT, add_job_options, number_flag, output_folder


def cmd_annotate(args: argparse.Namespace) -> None:
    from annotation.annotate import run_annotate
    from dataset.core.jobspec import AnnotateSpec, load_yaml_spec, parse_spec

    output_folder(args.out)
    spec = load_yaml_spec(args.config, AnnotateSpec, "annotate spec") if args.config else AnnotateSpec()
    if args.model:
        captioner = {**(spec.captioner.model_dump() if spec.captioner else {}), "model": args.model}
        spec = parse_spec(AnnotateSpec, {**spec.model_dump(), "captioner": captioner}, "--model")
    counts = run_annotate(args.dir, args.out, spec, ray_address=args.ray_address, workers=args.workers,
                          overwrite=args.overwrite)
    print(f"annotated {args.out}: {counts['clips']} clips in {counts['shards']} shards ({counts['accepted']} "
          f"accepted, {counts['rejected']} rejected), {counts['seconds']} s", file=sys.stderr)


def cmd_review(args: argparse.Namespace) -> None:
    from annotation.review import serve

    server = serve(args.dir, args.host, args.port, args.reviewer)
    host, port = server.server_address[:2]
    print(f"reviewing {args.dir}: open http://{host}:{port}/ (decisions go to {args.dir}/review.jsonl; "
          f"Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def cmd_export(args: argparse.Namespace) -> None:
    from annotation.export import run_export

    output_folder(args.out)
    counts = run_export(args.dir, args.out, args.status, args.overwrite)
    print(f"exported {counts['clips_out']} of {counts['clips_in']} clips ({args.status}) into {args.out} "
          f"({counts['shards']} shards)", file=sys.stderr)


def add_annotate(sub) -> None:
    p = sub.add_parser("annotate", help="re-score, caption and judge every clip of a dataset into a new dataset")
    p.add_argument("dir", help="input dataset folder (never modified)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--model", help="VideoLLaMA3 checkpoint folder or hub id: caption and rate clips with it")
    p.add_argument("--config", help="annotate spec YAML (annotation thresholds, rescore, captioner settings)")
    add_job_options(p, "annotation actors (default: one per GPU with a model, else per CPU)")
    p.set_defaults(func=cmd_annotate)


def add_review(sub) -> None:
    p = sub.add_parser("review", help="serve a local page to accept/reject clips by their first frame")
    p.add_argument("dir", help="dataset folder; decisions are saved in DIR/review.jsonl")
    p.add_argument("--port", type=number_flag(int, ge=0, le=MAX_PORT), default=8765, help="port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--reviewer", help="name stored with each decision (default: $USER)")
    p.set_defaults(func=cmd_review)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a clean dataset with only the clips of one final status")
    p.add_argument("dir", help="dataset folder (automatic verdicts + DIR/review.jsonl)")
    p.add_argument("--out", required=True, help="new dataset folder")
    p.add_argument("--status", default="accepted", help="accepted (default), rejected or all")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_export)
