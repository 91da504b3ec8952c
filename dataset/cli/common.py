"""What the subcommand modules share: the exit statuses, the one-line user error, the distributed jobs'
options, and flag defaults and bounds read from the job-spec models (so each is defined once, in
``dataset.core.jobspec``)."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

EXIT_OK = 0
"""Everything asked for was done."""
EXIT_PARTIAL = 1
"""Part of the job was done; the rest failed (the failures are recorded)."""
EXIT_USAGE = 2
"""Bad input (flags, spec, files): nothing was started."""
EXIT_NOTHING_DONE = 3
"""The job ran, but every item of it failed."""

MAX_WORKERS = 10_000
"""Most ``--workers`` of a distributed job."""

MAX_PORT = 65_535
"""Highest TCP port (``--port`` flags; 0 picks a free one)."""


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def output_folder(path: str, flag: str = "--out"):
    """``path`` as the output folder of a command, checked before any work starts: ``CliError`` when it is an
    existing file (or lies under one). A URL (a dataset on an object store) is returned as its location
    (``store.fs.location``); ``CliError`` when its filesystem package is missing."""
    from dataset.store.fs import is_url, location

    if is_url(path):
        try:
            return location(path)
        except ValueError as exc:
            raise CliError(f"{flag} {exc}") from None
    out = Path(path)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise CliError(f"{flag} {path}: {p} is an existing file, not a folder: give a folder path")
            break
    return out


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


def number_flag(kind: type, **bounds: float) -> Callable[[str], Any]:
    """An argparse ``type`` for a finite ``int`` or ``float`` flag within pydantic-style ``bounds`` (ge, gt,
    le, lt); a bad value is a one-line argparse error naming the bound."""
    return _flag_type(Annotated[kind, Field(**bounds)])


def spec_flag(model: type[BaseModel], name: str, **bounds: float) -> Callable[[str], Any]:
    """An argparse ``type`` for a flag that sets field ``name`` of a job-spec model: the field's own bounds,
    plus ``bounds`` (e.g. ``le=`` a ``LimitsSpec`` maximum that the spec checks in a model validator)."""
    field = model.model_fields[name]
    return _flag_type(Annotated[(field.annotation, *field.metadata, Field(**bounds))])


def _flag_type(annotation) -> Callable[[str], Any]:
    adapter = TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False))

    def parse(text: str):
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{exc.errors()[0]['msg']}, got {text!r}") from None

    return parse


def add_job_options(p: argparse.ArgumentParser, workers_help: str) -> None:
    """--ray-address, --workers and --overwrite of the distributed jobs."""
    p.add_argument("--ray-address", help="join a Ray cluster ('auto' or 'ray://host:port'); default: start one here")
    p.add_argument("--workers", type=number_flag(int, ge=1, le=MAX_WORKERS), help=workers_help)
    p.add_argument("--overwrite", action="store_true", help="delete an existing output in --out and start over")
