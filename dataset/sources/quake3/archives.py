"""OpenArena archive discovery and read access to ``.pk3`` (zip) archives with Quake 3 precedence.

Archives are searched in ``OPENARENA_DIRS`` then ``$MATRIX_PANO_OPENARENA_PATH`` (later folders and later
names override earlier ones); member names are indexed case-insensitively and cached per file stamp.

Limits (a hostile or damaged archive cannot exhaust memory; a zip bomb fails with a SceneError):

- ``MAX_MEMBER_BYTES`` = 256 MiB: largest archive member read, by its declared size (OpenArena's largest is 10 MB).
- ``MAX_LOAD_BYTES`` = 1 GiB: most bytes one level load reads from its archives, all members together.
- Members must be stored or deflated (as Quake 3 reads them); they inflate 1 MiB at a time (a lying size: CRC error).
"""

from __future__ import annotations

import difflib
import os
import re
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path, PurePosixPath

from dataset.core.scene import SceneError

OPENARENA_ENV = "MATRIX_PANO_OPENARENA_PATH"
OPENARENA_DIRS = (
    "/usr/share/games/openarena/baseoa",
    "/usr/share/games/openarena/missionpack",
    "~/.openarena/baseoa",
)
"""Installed archive folders, lowest priority first; folders in $MATRIX_PANO_OPENARENA_PATH override them."""
_MAP_MEMBER = re.compile(r"^maps/([^/]+)\.bsp$", re.IGNORECASE)
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, zlib.error)
MAX_MEMBER_BYTES = 256 << 20
"""Largest archive member read (declared uncompressed size, 256 MiB)."""
MAX_LOAD_BYTES = 1 << 30
"""Most bytes one level load (one ``_Archives``) reads from its archives, all members together (1 GiB)."""
_READ_CHUNK = 1 << 20
_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
"""What Quake 3 reads; bzip2 and LZMA would also inflate a whole input chunk at once."""


def find_openarena_maps() -> list[tuple[str, str]]:
    """(map name, archive path) of every map in the installed OpenArena archives, later archives winning."""
    found: dict[str, tuple[str, str]] = {}
    for path in _default_archives():
        for member in _member_names(_stamp(path)):
            m = _MAP_MEMBER.match(member)
            if m:
                found[m.group(1).lower()] = (m.group(1), path)
    return sorted(found.values())

def _archive_dirs() -> list[str]:
    """Folders searched for .pk3 archives, lowest priority first."""
    env = [d for d in os.environ.get(OPENARENA_ENV, "").split(os.pathsep) if d.strip()]
    return [os.path.expanduser(d) for d in (*OPENARENA_DIRS, *env)]


def _default_archives() -> list[str]:
    """All .pk3 archives of the archive folders in Quake 3 order: later folders and later names override."""
    out: list[str] = []
    for folder in _archive_dirs():
        if not os.path.isdir(folder):
            continue
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".pk3"))
        for name in names:
            path = str(Path(folder, name).resolve())
            if path in out:
                out.remove(path)
            out.append(path)
    return out


def _stamp(path: str) -> tuple[str, int, int]:
    """(path, mtime, size): a cache key that changes when the file does."""
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


def _safe_member(name: str) -> bool:
    """Archive member names we read: relative POSIX paths without '..', drive letters or backslashes."""
    if not name or name.startswith("/") or "\\" in name or ":" in name:
        return False
    return ".." not in PurePosixPath(name).parts


@lru_cache(maxsize=64)
def _member_names(stamp: tuple[str, int, int]) -> tuple[str, ...]:
    """Safe file names inside one archive."""
    path = stamp[0]
    try:
        with zipfile.ZipFile(path) as zf:
            return tuple(n for n in zf.namelist() if not n.endswith("/") and _safe_member(n))
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise SceneError(f"{path} is not a readable .pk3 (zip) archive ({exc}): replace or remove it") from exc
    except OSError as exc:
        raise SceneError(f"cannot read archive {path}: {exc.strerror or exc}") from exc


def read_member(zf: zipfile.ZipFile, archive: str, name: str, already_read: int = 0) -> bytes:
    """One member's bytes; SceneError for compression Quake 3 cannot read, a declared size over
    MAX_MEMBER_BYTES, or one that would take the load's ``already_read`` bytes over MAX_LOAD_BYTES.

    It reads in chunks: ``ZipExtFile`` stops at the declared size and then checks the CRC, but one ``read()``
    would first inflate all the compressed data, however much a lying header hides.
    """
    info = zf.getinfo(name)
    if info.compress_type not in _COMPRESSION:
        raise SceneError(f"cannot read {name} from {archive}: compression method {info.compress_type} "
                         f"(Quake 3 reads only stored or deflated members): repack the archive")
    if info.file_size > MAX_MEMBER_BYTES:
        raise SceneError(f"{name} in {archive} declares {info.file_size} bytes, over the limit of "
                         f"{MAX_MEMBER_BYTES >> 20} MiB per archive member: the archive is damaged or hostile, "
                         f"remove it")
    if already_read + info.file_size > MAX_LOAD_BYTES:
        raise SceneError(f"cannot read {name} from {archive}: with its {info.file_size} bytes this level load "
                         f"would read more than the limit of {MAX_LOAD_BYTES >> 20} MiB from its archives: "
                         f"an archive is damaged or hostile, remove it")
    chunks = []
    with zf.open(info) as f:
        while chunk := f.read(_READ_CHUNK):
            chunks.append(chunk)
    return b"".join(chunks)


@lru_cache(maxsize=8)
def _merged_index(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, tuple[str, str]]:
    """Lower-case file name -> (archive, member) over several archives, later archives overriding."""
    index: dict[str, tuple[str, str]] = {}
    for stamp in stamps:
        for name in _member_names(stamp):
            index[name.lower()] = (stamp[0], name)
    return index


class _Archives:
    """Read-only view of several .pk3 archives with Quake 3 precedence (later archives override earlier)."""

    def __init__(self, paths: list[str]) -> None:
        self.stamps = tuple(_stamp(p) for p in paths)
        self.index = _merged_index(self.stamps)
        self._open: dict[str, zipfile.ZipFile] = {}
        self.bytes_read = 0
        """Bytes read so far, all members together; at most MAX_LOAD_BYTES."""

    def __enter__(self) -> _Archives:
        return self

    def __exit__(self, *exc: object) -> None:
        for zf in self._open.values():
            zf.close()
        self._open.clear()

    def find(self, name: str) -> tuple[str, str] | None:
        """(archive, member) of a file name, case-insensitive, or None."""
        return self.index.get(name.replace("\\", "/").lower())

    def stamp(self, archive: str) -> tuple[str, int, int]:
        return next(s for s in self.stamps if s[0] == archive)

    def read(self, member: tuple[str, str]) -> bytes:
        """A member's bytes, within MAX_MEMBER_BYTES and, with what this view read before, MAX_LOAD_BYTES."""
        archive, name = member
        try:
            if archive not in self._open:
                self._open[archive] = zipfile.ZipFile(archive)
            data = read_member(self._open[archive], archive, name, self.bytes_read)
        except _ZIP_ERRORS as exc:
            raise SceneError(f"cannot read {name} from {archive} ({exc}): the archive is damaged, replace it") from exc
        self.bytes_read += len(data)
        return data


def _find_map(archives: _Archives, archive: str | None, map_name: str | None, source: str) -> tuple[str, str]:
    """(archive, member) of a map's BSP, or a SceneError listing the maps there are."""
    if archive is None:
        available = [name for name, _ in find_openarena_maps()]
        hint = "`matrix-pano scenes` lists them all"
        if not available:
            raise SceneError(f"scene {source!r}: the OpenArena archives hold no maps/*.bsp: "
                             f"apt-get install openarena-data, or set {OPENARENA_ENV}")
    else:
        available = sorted(m.group(1) for n in _member_names(archives.stamp(archive))
                           if (m := _MAP_MEMBER.match(n)))
        hint = f"{archive} holds {len(available)}"
        if not available:
            raise SceneError(f"scene {source!r}: {archive} holds no maps/*.bsp")
        if map_name is None and len(available) == 1:
            map_name = available[0]
    if map_name is not None:
        member = archives.find(f"maps/{map_name}.bsp")
        if member and (archive is None or member[0] == archive):
            return member
    close = difflib.get_close_matches(map_name or "", available, n=6, cutoff=0.5)
    shown = close + [n for n in available if n not in close][:max(0, 6 - len(close))]
    what = f"unknown map {map_name!r}" if map_name else "no map named (use PATH.pk3:MAP)"
    raise SceneError(f"scene {source!r}: {what}; available: {', '.join(shown)}, ... ({hint})")
