"""Output-folder preparation, the same for every job that writes a dataset (build, annotate, export).

A job's output folder is checked before anything is written: an input dataset must have committed shards,
none of them damaged, and the output must lie outside it (inputs are never modified); an existing output made with other
settings is refused unless the user asks to overwrite it; overwriting removes only the job's own outputs;
the folders are made and shown to be writable. While a job writes, it holds ``out/.lock`` (``output_lock``)
so that a second job on the same folder stops at once with a clear message.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dataset.core.jobspec import JobError
from dataset.store.shards import is_inside, scan_shards

PAST = {"build": "built", "annotate": "annotated", "export": "exported"}
LOCK_FILE = ".lock"
"""Held (``flock``) by the job writing a folder; its content says which job, process and host."""


class OutputError(JobError):
    """The output folder cannot be used; the message is one line saying what to do."""


def prepare_output(out: str | Path, job: str, *, settings: tuple[str, object] | None = None, overwrite: bool = False,
                   src: str | Path | None = None, outputs: tuple[str, ...] = ("shards", "manifest.json"),
                   folders: tuple[str, ...] = ("shards",), exclusive: bool = False,
                   error: type[Exception] = OutputError) -> Path:
    """Make ``out`` ready for ``job`` and return it; problems raise ``error`` with a one-line message.

    ``settings`` is (manifest key, value): an existing ``out/manifest.json`` with another value is refused
    unless ``overwrite``, which then removes ``outputs`` (names under ``out``). With ``exclusive`` (a job that
    does not resume) a non-empty ``out`` is refused unless ``overwrite``, which then empties it. ``src`` is the
    job's input dataset. ``folders`` are made and probed for writing.
    """
    out = Path(out)
    if src is not None:
        scan = scan_shards(src)
        if scan.damaged:
            name, problem = scan.damaged[0]
            raise error(f"{src}: {len(scan.damaged)} damaged shards ({name}: {problem}): rerun the build on {src} to "
                        f"repair them (`matrix-pano verify {src}` lists them)")
        if not scan.committed:
            raise error(f"{src}: no committed shards to {job} (is it a dataset built by matrix-pano?)")
        if is_inside(src, out):
            raise error(f"--out {out} must be outside the input dataset {src} (input shards are never modified)")
    manifest = out / "manifest.json"
    if exclusive and out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()) and not overwrite:
        raise error(f"{out} is not empty: choose another --out or pass --overwrite")
    if settings is not None and manifest.exists() and not overwrite:
        key, value = settings
        try:
            old = json.loads(manifest.read_text()).get(key)
        except (OSError, json.JSONDecodeError) as exc:
            raise error(f"{manifest} is unreadable ({exc}): use --overwrite to start over") from None
        if old != value:
            detail = f" ({key} {old} != {value})" if isinstance(value, str) else ""
            what = "a different job spec" if job == "build" else "different settings"
            raise error(f"{out} was {PAST.get(job, job)} with {what}{detail}: use another --out, restore the "
                        f"settings, or pass --overwrite to delete the old shards and start over")
    elif overwrite and out.exists():
        for name in ([p for p in out.iterdir() if p.name != LOCK_FILE] if exclusive else [out / n for n in outputs]):
            if name.is_dir():
                shutil.rmtree(name, ignore_errors=True)
            else:
                name.unlink(missing_ok=True)
    try:
        for name in folders:
            (out / name).mkdir(parents=True, exist_ok=True)
        probe = out / folders[0] / ".tmp-write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise error(f"output folder {out} is not writable: {exc}") from None
    return out


@contextmanager
def output_lock(out: str | Path, job: str, error: type[Exception] = OutputError) -> Iterator[Path]:
    """Hold ``out/.lock`` while ``job`` writes ``out``; another job holding it raises ``error`` at once.

    The lock is an ``flock``: the kernel releases it when the holder exits, even when killed, so a stale
    file never blocks a rerun."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise error(f"output folder {out} is not writable: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another job"
        os.close(fd)
        raise error(f"{out} is in use by {holder}: wait for it to finish, or use another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{job} (pid {os.getpid()} on {socket.gethostname()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        yield out
    finally:
        os.close(fd)
