"""The ``matrix-pano`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from dataset.cli import cache, curation, datasets, generate, guidance, reconstruct, scenes, train, unreal, video, view
from dataset.cli.common import EXIT_OK, EXIT_USAGE, CliError
from dataset.core.jobspec import JobError
from dataset.core.scene import SceneError

__all__ = ["CliError", "build_parser", "main"]

SUBCOMMANDS = (scenes.add_render, scenes.add_sample, datasets.add_build, datasets.add_plan, datasets.add_verify,
               datasets.add_stats, curation.add_annotate, curation.add_review, curation.add_export, unreal.add_unreal,
               guidance.add_guidance, generate.add_generate,
               cache.add_cache_latents, train.add_train_video, train.add_train_lrm, video.add_eval_video,
               reconstruct.add_reconstruct, reconstruct.add_eval_recon, view.add_view, scenes.add_scenes,
               scenes.add_demo)
"""Each subcommand's parser registration, in the order ``matrix-pano --help`` lists them."""


DESCRIPTION = ("Matrix-Pano: a synthetic panoramic-video dataset factory (scenes -> walkable camera paths -> 360° "
               "clips with depth, poses and captions in Parquet shards) and the models they train. One subcommand "
               "per job; 'matrix-pano COMMAND --help' for its options.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("matrix-pano")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matrix-pano", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"matrix-pano {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(sub)
    for action in sub._choices_actions:  # a subcommand's --help opens with its one-line help unless it has more
        command = sub.choices[action.dest]
        if command.description is None:
            command.description = action.help[:1].upper() + action.help[1:] + "."
    return parser


URI_ARGUMENTS_OK = ("ray_address",)
"""Arguments whose values are URIs by design (``ray://host:port``)."""


def _refuse_uris(args: argparse.Namespace) -> None:
    """``CliError`` for a URL (``s3://...``) given where a command takes only a local path. Commands that read or
    write datasets on object stores name those arguments with ``set_defaults(url_args=(...))``; elsewhere
    ``pathlib`` would quietly turn ``s3://bucket`` into a local folder ``s3:/bucket``."""
    allowed = set(URI_ARGUMENTS_OK) | set(getattr(args, "url_args", ()))
    for name, value in vars(args).items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if name not in allowed and isinstance(v, str) and "://" in v:
                raise CliError(f"{v} ({name.replace('_', '-')}): this argument takes a local path, not a URL "
                               "(datasets may be on object stores; models, scenes given here and other files "
                               "must be local)")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the subcommand's exit status (0 when it returns None). User errors print one line
    on stderr and return 2 (bad flags exit with 2 from argparse)."""
    args = build_parser().parse_args(argv)
    try:
        _refuse_uris(args)
        status = args.func(args)
    except (CliError, SceneError, ValueError, JobError, FileNotFoundError) as exc:
        print(f"matrix-pano {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"matrix-pano {args.command}: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if status is None else status


if __name__ == "__main__":
    sys.exit(main())
