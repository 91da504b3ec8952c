"""Where a dataset lives: a local folder, or any URL fsspec understands (``s3://``, ``gs://``, ``memory://`` ...).

Local folders are ``pathlib.Path``; everything else is a ``upath.UPath`` over its fsspec filesystem, so the
store modules use one pathlib-style API for both. Credentials and endpoints come from each filesystem's usual
environment variables and config files (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``~/.aws/config``; for GCS: ``GOOGLE_APPLICATION_CREDENTIALS``); the
``s3fs`` or ``gcsfs`` package must be installed (``pip install 'matrix-pano[s3]'``).

What differs between the two is kept here:

- ``write_whole``: a local file is written to a temporary name, fsynced and renamed; an object store has no
  rename, but a single PUT (or a completed multipart upload) is all-or-nothing, so the object is written once,
  whole, under its final name. ``exclusive`` refuses to replace an existing file or object: on S3 a conditional
  write (``If-None-Match: *``), so two writers can never both publish the same name.
- ``publish``: a finished local temporary file becomes the final file (rename) or the final object (upload).
- ``parquet_file`` / ``read_parquet``: pyarrow reads through the right filesystem.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

Location = Any
"""A ``pathlib.Path`` (local) or a ``upath.UPath`` (any other fsspec URL); both have the pathlib API."""


def is_url(value: str | os.PathLike) -> bool:
    """Whether ``value`` is a URL of a non-local filesystem (``s3://...``; ``file://`` is local)."""
    text = os.fspath(value) if not isinstance(value, str) and isinstance(value, os.PathLike) else str(value)
    return "://" in text and not text.startswith("file://")


def location(value: str | os.PathLike | Location) -> Location:
    """The dataset location ``value`` names: a ``Path`` for a local path or ``file://`` URL, a ``UPath`` for
    any other URL. An unknown scheme, or one whose filesystem package is not installed, is a ValueError that
    says which package to install."""
    if isinstance(value, Path):
        return value
    if is_remote(value):
        return value
    text = str(value)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if "://" not in text:
        return Path(text)
    from upath import UPath

    scheme = text.split("://", 1)[0]
    try:
        path = UPath(text)
        path.fs  # noqa: B018 - makes the filesystem now, so a missing package is reported here
    except (ImportError, ValueError) as exc:
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
        hint = f": pip install {package[scheme]}" if scheme in package else ""
        raise ValueError(f"{text}: cannot open {scheme}:// URLs ({exc}){hint}") from None
    return path


def is_remote(path: object) -> bool:
    """Whether ``path`` is on a non-local filesystem (a ``UPath`` that is not a local ``Path``)."""
    return not isinstance(path, Path) and hasattr(path, "fs") and hasattr(path, "protocol")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_whole(path: Location, data: bytes, exclusive: bool = False) -> None:
    """Make ``path`` hold ``data``, all or nothing for any reader (see the module docstring). With ``exclusive``
    an existing ``path`` raises FileExistsError and is left as it is."""
    if is_remote(path):
        _put_remote(path, exclusive, data=data)
        return
    if exclusive and path.exists():
        raise FileExistsError(f"{path} already exists")
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def publish(tmp: Path, path: Location, exclusive: bool = True) -> None:
    """Make the complete local file ``tmp`` the file or object ``path`` (renamed locally, uploaded whole to a
    store, then removed). With ``exclusive`` an existing ``path`` raises FileExistsError (``tmp`` is kept)."""
    if is_remote(path):
        _put_remote(path, exclusive, local=tmp)
        tmp.unlink(missing_ok=True)
        return
    if exclusive and path.exists():
        raise FileExistsError(f"{path} already exists")
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _put_remote(path: Location, exclusive: bool, data: bytes | None = None, local: Path | None = None) -> None:
    """One upload; ``exclusive`` as a conditional write where the filesystem offers one (``mode="create"``),
    else a check just before (documented as racy for such stores)."""
    fs, key = path.fs, path.path
    mode = "create" if exclusive else "overwrite"
    try:
        if data is not None:
            fs.pipe_file(key, data, mode=mode)
        else:
            fs.put_file(str(local), key, mode=mode)
        return
    except TypeError:  # this filesystem has no mode argument: no conditional writes
        pass
    except FileExistsError:
        raise FileExistsError(f"{path} already exists") from None
    except OSError as exc:
        if exclusive and "precondition" in str(exc).lower():
            raise FileExistsError(f"{path} already exists") from None
        raise
    if exclusive and fs.exists(key):
        raise FileExistsError(f"{path} already exists")
    if data is not None:
        fs.pipe_file(key, data)
    else:
        fs.put_file(str(local), key)


def sha256_of(path: Location) -> str:
    """Hex SHA-256 of a file's or object's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def listing(folder: Location, prefix: str = "") -> dict[str, int]:
    """{name: size in bytes} of the files directly in ``folder`` whose names start with ``prefix`` (one listing
    call on a store; {} when the folder does not exist)."""
    if not is_remote(folder):
        try:
            with os.scandir(folder) as entries:
                return {e.name: e.stat().st_size for e in entries if e.name.startswith(prefix) and e.is_file()}
        except FileNotFoundError:
            return {}
    fs = folder.fs
    try:
        entries = fs.ls(folder.path, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    out = {}
    for e in entries:
        name = e["name"].rstrip("/").rsplit("/", 1)[-1]
        if e.get("type") == "file" and name.startswith(prefix):
            out[name] = int(e.get("size") or 0)
    return out


def read_many(paths: list[Location]) -> list[bytes | OSError]:
    """The bytes of each path (concurrently on a store), or the OSError that reading it raised."""
    if not paths:
        return []
    if not is_remote(paths[0]):
        out: list[bytes | OSError] = []
        for p in paths:
            try:
                out.append(p.read_bytes())
            except OSError as exc:
                out.append(exc)
        return out
    fs = paths[0].fs
    got = fs.cat([p.path for p in paths], on_error="return")
    results: list[bytes | OSError] = []
    for p in paths:
        value = got.get(p.path, got.get(p.path.lstrip("/")))
        if isinstance(value, bytes):
            results.append(value)
        else:
            results.append(value if isinstance(value, OSError) else FileNotFoundError(str(p)))
    return results


def move(src: Location, dst: Location) -> None:
    """Move a file (a rename locally; copy then delete on a store)."""
    if is_remote(src):
        src.fs.mv(src.path, dst.path)
    else:
        os.replace(src, dst)
        _fsync_dir(Path(src).parent)


def remove(path: Location) -> None:
    """Delete a file or a folder with everything in it (nothing when it does not exist)."""
    if is_remote(path):
        if path.fs.exists(path.path):
            path.fs.rm(path.path, recursive=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def make_folder(path: Location) -> None:
    """Make a folder and its parents (a store has no folders: nothing to do there)."""
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)


def is_inside(folder: str | Location, other: str | Location) -> bool:
    """Whether ``other`` is ``folder`` or lies under it (an output must never go into its input dataset)."""
    a, b = location(folder), location(other)
    if is_remote(a) or is_remote(b):
        if not (is_remote(a) and is_remote(b)) or a.protocol != b.protocol:
            return False
        x, y = a.path.rstrip("/"), b.path.rstrip("/")
        return y == x or y.startswith(x + "/")
    a, b = a.resolve(), b.resolve()
    return b == a or a in b.parents


def arrow_args(path: Location) -> tuple[str, Any]:
    """(path, filesystem) to hand to pyarrow (and Ray Data) for ``path``; filesystem is None for a local one."""
    return (path.path, path.fs) if is_remote(path) else (str(path), None)


def parquet_file(path: Location) -> pq.ParquetFile:
    """A ``pyarrow.parquet.ParquetFile`` over a local or remote file."""
    if is_remote(path):
        return pq.ParquetFile(path.fs.open(path.path, "rb"))
    return pq.ParquetFile(path)


def read_parquet(path: Location, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file (or its ``columns``) as a table, local or remote."""
    source, filesystem = arrow_args(path)
    return pq.read_table(source, columns=columns, filesystem=filesystem)


def storage_options(path: Location) -> dict:
    """The fsspec ``storage_options`` of a remote path ({} for a local one), for pandas, HF datasets and
    others that take them."""
    return dict(getattr(path, "storage_options", {}) or {}) if is_remote(path) else {}
