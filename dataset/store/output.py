"""Output-folder preparation, the same for every job that writes a dataset (build, annotate, export), on a
local disk or an object store (``store.fs``).

A job's output folder is checked before anything is written: an input dataset must have committed shards,
none of them damaged, and the output must lie outside it (inputs are never modified); an existing output made
with other settings is refused unless the user asks to overwrite it; overwriting removes only the job's own
outputs; the folders are made and shown to be writable. While a job writes, it holds ``out/.lock``
(``output_lock``) so that a second job on the same folder stops at once with a clear message.

Locally the lock is an ``flock``. A store has no locks, so there it is a lease: the ``.lock`` object names its
holder (job, process, host, a token) and the time it was last renewed; the holder renews it every
``LEASE_S / 4`` seconds and deletes it when done. A lease is taken over when it was not renewed for
``LEASE_S`` seconds, or when it was taken on this host by a process that is gone (a killed build is rerun at
once). It is created with a conditional write where the store has them, so two jobs cannot both take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dataset.core.jobspec import JobError
from dataset.store.fs import Location, is_inside, is_remote, listing, location, make_folder, remove, write_whole
from dataset.store.shards import scan_shards

PAST = {"build": "built", "annotate": "annotated", "export": "exported"}
LOCK_FILE = ".lock"
"""Held by the job writing a folder (an ``flock`` locally, a lease on a store); it says which job, process
and host."""

LEASE_S = float(os.environ.get("MATRIX_PANO_LEASE_S", 120))
"""Seconds after its last renewal that a store lease counts as abandoned."""


class OutputError(JobError):
    """The output folder cannot be used; the message is one line saying what to do."""


def _children(out: Location) -> list[str]:
    """Names directly under ``out`` (files and folders); [] when it does not exist."""
    if not is_remote(out):
        return [p.name for p in out.iterdir()] if out.is_dir() else []
    try:
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in out.fs.ls(out.path, detail=False, refresh=True)})
    except FileNotFoundError:
        return []


def prepare_output(out: str | Location, job: str, *, settings: tuple[str, object] | None = None,
                   overwrite: bool = False, src: str | Location | None = None,
                   outputs: tuple[str, ...] = ("shards", "manifest.json"), folders: tuple[str, ...] = ("shards",),
                   exclusive: bool = False, error: type[Exception] = OutputError) -> Location:
    """Make ``out`` ready for ``job`` and return its location; problems raise ``error`` with a one-line message.

    ``settings`` is (manifest key, value): an existing ``out/manifest.json`` with another value is refused
    unless ``overwrite``, which then removes ``outputs`` (names under ``out``). With ``exclusive`` (a job that
    does not resume) a non-empty ``out`` is refused unless ``overwrite``, which then empties it. ``src`` is the
    job's input dataset. ``folders`` are made and probed for writing.
    """
    try:
        out = location(out)
    except ValueError as exc:
        raise error(str(exc)) from None
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
    if not is_remote(out) and out.exists() and not out.is_dir():
        raise error(f"--out {out} is a file, not a folder: choose another --out")
    manifest = out / "manifest.json"
    present = [n for n in _children(out) if n != LOCK_FILE]
    if exclusive and present and not overwrite:
        raise error(f"{out} is not empty: choose another --out or pass --overwrite")
    if settings is not None and "manifest.json" in present and not overwrite:
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
    elif overwrite:
        for name in present if exclusive else [n for n in outputs if n in present]:
            remove(out / name)
    try:
        for name in folders:
            make_folder(out / name)
        probe = out / folders[0] / f".tmp-write-probe-{uuid.uuid4().hex[:8]}"
        write_whole(probe, b"ok")
        probe.unlink()
    except OSError as exc:
        raise error(f"output folder {out} is not writable: {exc}") from None
    return out


def _holder(job: str, token: str = "") -> dict:
    return {"job": job, "pid": os.getpid(), "host": socket.gethostname(), "token": token,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "renewed": time.time()}


def _describe(holder: dict) -> str:
    return f"{holder.get('job', 'a job')} (pid {holder.get('pid')} on {holder.get('host')}, started " \
           f"{holder.get('started')})"


def _abandoned(holder: dict) -> bool:
    """Whether a lease's holder is gone: not renewed for LEASE_S, or a dead process on this host."""
    if time.time() - float(holder.get("renewed", 0)) > LEASE_S:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@contextmanager
def _lease(out: Location, job: str, error: type[Exception]) -> Iterator[Location]:
    """Hold the store lease ``out/.lock`` (see the module docstring) while the block runs."""
    path, token = out / LOCK_FILE, uuid.uuid4().hex
    try:
        if LOCK_FILE in listing(out, LOCK_FILE):
            holder = json.loads(path.read_text())
            if not _abandoned(holder):
                raise error(f"{out} is in use by {_describe(holder)}: wait for it to finish, or use another --out")
            remove(path)
        write_whole(path, json.dumps(_holder(job, token)).encode(), exclusive=True)
    except FileExistsError:
        raise error(f"{out} is in use by another job that just started: wait for it to finish, or use another "
                    f"--out") from None
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, error):
            raise
        raise error(f"output folder {out} is not writable: {exc}") from None
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_S / 4):
            try:
                write_whole(path, json.dumps(_holder(job, token)).encode())
            except OSError:
                pass  # a missed renewal is retried; the lease lasts LEASE_S

    thread = threading.Thread(target=renew, name="matrix-pano-lease", daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        try:
            if json.loads(path.read_text()).get("token") == token:
                path.unlink()
        except (OSError, json.JSONDecodeError):
            pass


@contextmanager
def output_lock(out: str | Location, job: str, error: type[Exception] = OutputError) -> Iterator[Location]:
    """Hold ``out/.lock`` while ``job`` writes ``out``; another job holding it raises ``error`` at once.

    Locally the lock is an ``flock``: the kernel releases it when the holder exits, even when killed, so a stale
    file never blocks a rerun. On a store it is a lease (module docstring)."""
    try:
        out = location(out)
    except ValueError as exc:
        raise error(str(exc)) from None
    if is_remote(out):
        with _lease(out, job, error) as held:
            yield held
        return
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
        os.pwrite(fd, f"{_describe(_holder(job))}\n".encode(), 0)
        yield out
    finally:
        os.close(fd)
