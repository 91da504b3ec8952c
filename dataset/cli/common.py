"""What the subcommand modules share: the one-line user error, the distributed jobs' options, and flag
defaults read from the job-spec models (so each default is defined once, in ``dataset.core.jobspec``)."""

from __future__ import annotations

import argparse
import typing

from pydantic import BaseModel


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def field_default(model: type[BaseModel], name: str):
    """The default of field ``name`` of a job-spec model, e.g. ``field_default(JobSpec, "fps")``."""
    return model.model_fields[name].get_default(call_default_factory=True)


def field_choices(model: type[BaseModel], name: str) -> list:
    """The values a ``Literal`` field of a job-spec model allows, in their declared order."""
    return list(typing.get_args(model.model_fields[name].annotation))


def field_int_range(model: type[BaseModel], name: str) -> range:
    """The integers an int field of a job-spec model allows between its ``ge`` and ``le`` bounds."""
    metadata = model.model_fields[name].metadata
    bounds = {key: getattr(m, key) for m in metadata for key in ("ge", "le") if hasattr(m, key)}
    return range(bounds["ge"], bounds["le"] + 1)


def add_job_options(p: argparse.ArgumentParser, workers_help: str) -> None:
    """--ray-address, --workers and --overwrite of the distributed jobs."""
    p.add_argument("--ray-address", help="join a Ray cluster ('auto' or 'ray://host:port'); default: start one here")
    p.add_argument("--workers", type=int, help=workers_help)
    p.add_argument("--overwrite", action="store_true", help="delete an existing output in --out and start over")
