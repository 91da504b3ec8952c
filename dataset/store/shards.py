"""Parquet shards of clips: the schema, an atomic shard writer and the committed-shard index.

Commit protocol (exactly-once with retries), the same on a local disk and an object store (``store.fs``): a
writer streams rows into a local temporary file (``shards/.tmp-*.parquet`` for a local dataset, a spool
folder for a remote one); ``commit`` closes and fsyncs it, hashes it and publishes it as
``shards/part-NNNNN.parquet`` (a rename locally; on a store one whole upload, a completed multipart upload
for big shards, so no reader ever sees part of it), then writes ``part-NNNNN.json`` the same way. The marker
is the commit point: it records the shard's clip ids, stats, size in bytes and SHA-256, and a SHA-256 of its
own content. Readers, ``verify`` and resumed builds only see shards whose marker is intact and whose size
matches it (``scan_shards``; the checksum too when asked); a parquet file without a marker is debris of an
interrupted writer, removed by the next build (``remove_debris``).

Shard numbers are never reused: within a build a counter hands them out, and both the shard and its marker
are published with ``exclusive`` (on S3 a conditional write, ``If-None-Match: *``), so a second writer that
somehow drew the same number gets FileExistsError instead of replacing a committed shard.

A damaged or duplicate shard is moved aside into ``quarantine/``, never deleted (``repair_shards``), so
that the next build renders its clips again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataset.store.fs import (
    Location,
    is_remote,
    listing,
    location,
    make_folder,
    move,
    parquet_file,
    publish,
    read_many,
    sha256_of,
    write_whole,
)

SCORE_NAMES = ("detail", "dark_fraction", "saturated_fraction", "void_fraction", "near_fraction", "mean_depth",
               "depth_invalid_fraction", "path_length_m", "rotation_deg", "flow_px")
"""The model-free quality scores (``annotation.filters`` computes them), in schema order."""
VLM_SCORE_NAMES = ("vlm_detail", "vlm_semantic", "vlm_motion")
"""1-5 ratings by the captioning model (null until ``annotate`` runs it)."""
SCORES = pa.struct([(name, pa.float32()) for name in SCORE_NAMES + VLM_SCORE_NAMES])
"""Quality scores: the model-free filters (``annotation.filters``), computed inline by the build, and the
captioning model's ratings."""

SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("scene_id", pa.string()), ("trajectory_id", pa.string()), ("scene", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("num_frames", pa.int32()), ("fps", pa.float32()),
    ("rgb_mp4", pa.binary()), ("depth", pa.binary()), ("c2w", pa.list_(pa.list_(pa.float64()))),
    ("caption", pa.string()), ("scores", SCORES), ("status", pa.string()), ("reject_reasons", pa.list_(pa.string())),
    ("renderer", pa.string()), ("renderer_version", pa.string()), ("package_version", pa.string()),
    ("config_hash", pa.string()), ("seed", pa.int64()),
])
"""One row per clip. ``depth`` is zstd float16 (frames, height, width); ``c2w`` one 16-list per frame."""

SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")

QUARANTINE = "quarantine"
"""Folder (beside ``shards/``) that damaged and duplicate shards are moved into."""


def write_atomic(path: str | Location, data: bytes) -> None:
    """Write bytes to ``path`` so that readers see all or nothing (``store.fs.write_whole``)."""
    write_whole(location(path), data)


def file_sha256(path: str | Location) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    return sha256_of(location(path))


def _marker_digest(marker: dict) -> str:
    """SHA-256 of a marker's content without its own digest (canonical JSON)."""
    body = {k: v for k, v in marker.items() if k != "marker_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_marker(parquet: Path, rows: list[dict], name: str | None = None) -> dict:
    """The commit marker of local shard file ``parquet`` (to be published as ``name``, default its own name)
    holding ``rows`` (clip_id, scene_id, status, num_frames each): ids, stats, the file's size and SHA-256, and
    the marker's own SHA-256."""
    statuses = [r["status"] for r in rows]
    marker = {"shard": name or parquet.name, "rows": len(rows), "bytes": parquet.stat().st_size,
              "sha256": file_sha256(parquet), "clip_ids": [r["clip_id"] for r in rows],
              "scenes": sorted({r["scene_id"] for r in rows}), "frames": sum(r["num_frames"] for r in rows),
              "accepted": statuses.count("accepted"), "rejected": statuses.count("rejected")}
    marker["marker_sha256"] = _marker_digest(marker)
    return marker


def _publish(tmp: Path, shard_dir: Location, number: int, rows: list[dict]) -> dict:
    """Publish a complete, fsynced local temporary shard as ``part-{number:05d}.parquet``, then its marker."""
    final = shard_dir / f"part-{number:05d}.parquet"
    marker = build_marker(tmp, rows, final.name)
    try:
        publish(tmp, final, exclusive=True)
        write_whole(final.with_suffix(".json"), json.dumps(marker, indent=1).encode(), exclusive=True)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise FileExistsError(f"{final} already exists: shard numbers must be unique (is another build writing "
                              f"{shard_dir.parent}?)") from None
    return marker


def _spool(shard_dir: Location) -> Path:
    """Where a writer's temporary shard goes: ``shards/`` itself locally; a local spool folder for a store
    (``MATRIX_PANO_SPOOL``, default the system's temporary folder)."""
    if not is_remote(shard_dir):
        return shard_dir
    spool = Path(os.environ.get("MATRIX_PANO_SPOOL") or tempfile.gettempdir()) / "matrix-pano-spool"
    spool.mkdir(parents=True, exist_ok=True)
    return spool


def commit_table(shard_dir: str | Location, number: int, table: pa.Table, rows_per_group: int = 4,
                 schema: pa.Schema = SCHEMA) -> dict:
    """Write a whole table as committed shard ``number`` (temporary file, fsync, publish, marker). ``schema`` is
    the dataset's by default; companion shards (e.g. a latent cache) give their own, with at least the marker's
    ``clip_id``, ``scene_id``, ``status`` and ``num_frames`` columns."""
    if not table.schema.equals(schema):
        raise ValueError("table does not have the dataset schema" if schema is SCHEMA else
                         "table does not have the shard schema")
    shard_dir = location(shard_dir)
    make_folder(shard_dir)
    tmp = _spool(shard_dir) / f".tmp-{uuid.uuid4().hex}.parquet"
    with open(tmp, "wb") as f:
        pq.write_table(table, f, row_group_size=rows_per_group, compression="none",
                       use_dictionary=["scene", "status"])
        f.flush()
        os.fsync(f.fileno())
    rows = table.select(["clip_id", "scene_id", "status", "num_frames"]).to_pylist()
    return _publish(tmp, shard_dir, number, rows)


class ShardWriter:
    """Streams clip rows into one shard; ``commit`` makes it visible atomically. ``schema`` as in
    ``commit_table``."""

    def __init__(self, shard_dir: str | Location, rows_per_group: int = 4, schema: pa.Schema = SCHEMA) -> None:
        self.shard_dir = location(shard_dir)
        make_folder(self.shard_dir)
        self.rows_per_group = rows_per_group
        self.schema = schema
        self.tmp = _spool(self.shard_dir) / f".tmp-{uuid.uuid4().hex}.parquet"
        self._file = open(self.tmp, "wb")
        self._writer = pq.ParquetWriter(self._file, schema, compression="none", use_dictionary=["scene", "status"])
        self._pending: list[dict] = []
        self.rows: list[dict] = []
        """Small per-row facts (ids, status, sizes) for the marker."""

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        """Bytes written so far plus rows still buffered."""
        pending = sum(len(v) for r in self._pending for v in r.values() if isinstance(v, bytes))
        return self._file.tell() + pending

    def add(self, row: dict) -> None:
        """Append one clip row (a dict with every column of the writer's schema)."""
        self._pending.append(row)
        self.rows.append({"clip_id": row["clip_id"], "scene_id": row["scene_id"], "status": row["status"],
                          "num_frames": row["num_frames"]})
        if len(self._pending) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self.schema))
            self._pending = []

    def commit(self, number: int) -> dict:
        """Close, fsync and publish the shard as ``part-{number:05d}``; returns its marker."""
        self._flush()
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return _publish(self.tmp, self.shard_dir, number, self.rows)

    def abort(self) -> None:
        """Drop the unpublished shard."""
        try:
            self._writer.close()
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def read_manifest(folder: str | Location) -> dict:
    """A dataset folder's ``manifest.json`` ({} when it has none)."""
    path = location(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rows_per_group(shard: str | Location) -> int:
    """The row-group size a shard was written with (derived jobs keep it)."""
    metadata = parquet_file(location(shard)).metadata
    return max(1, metadata.row_group(0).num_rows) if metadata.num_row_groups else 1


def marker_problem(parquet: Location, marker: object, size: int | None = None) -> str | None:
    """Why ``marker`` is not an intact commit record of ``parquet`` (cheap: the shard is not read); None if it is.
    ``size`` is the shard's size when the caller has listed it (-1: it does not exist); else it is looked up.

    Markers written before checksums existed (no ``sha256``, no ``marker_sha256``) are checked for shape
    and size only."""
    if not isinstance(marker, dict):
        return "marker is not a JSON object"
    ids = marker.get("clip_ids")
    if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
        return "marker has no list of clip ids"
    for key in ("rows", "bytes", "accepted", "rejected"):
        if not isinstance(marker.get(key), int) or isinstance(marker.get(key), bool) or marker[key] < 0:
            return f"marker field {key!r} is missing or not a count"
    if marker["rows"] != len(ids) or marker.get("shard") != parquet.name:
        return "marker does not describe this shard (name or row count differs)"
    if "sha256" in marker or "marker_sha256" in marker:
        if marker.get("marker_sha256") != _marker_digest(marker) or not isinstance(marker.get("sha256"), str):
            return "marker content does not match its own checksum"
    if size is None:
        size = parquet.stat().st_size if parquet.exists() else -1
    if size < 0:
        return "marker without its parquet file"
    if size != marker["bytes"]:
        return f"size {size} bytes differs from the marker's {marker['bytes']} (truncated or overwritten)"
    return None


@dataclass
class ShardScan:
    """What ``shards/`` holds: intact committed shards and damaged ones (with the reason)."""

    committed: list[tuple[Location, dict]] = field(default_factory=list)
    """(parquet path, marker) of every intact committed shard, by number; a clip is in at most one."""
    damaged: list[tuple[str, str]] = field(default_factory=list)
    """(shard file name, problem): bad or orphaned markers, size or checksum mismatches, duplicates."""


def scan_shards(out_dir: str | Location, checksums: bool = False) -> ShardScan:
    """Check every marker of ``out_dir/shards`` (and each shard's SHA-256 when ``checksums``).

    One listing of the folder gives every size; the markers are read together (concurrently on a store). A
    shard holding a clip that an earlier intact shard holds too is reported as a duplicate."""
    shard_dir = location(out_dir) / "shards"
    scan = ShardScan()
    owner: dict[str, str] = {}
    files = listing(shard_dir, "part-")
    names = sorted(n for n in files if n.endswith(".json") and SHARD_RE.match(n[: -len(".json")] + ".parquet"))
    for name_json, data in zip(names, read_many([shard_dir / n for n in names]), strict=True):
        name = name_json[: -len(".json")] + ".parquet"
        parquet = shard_dir / name
        try:
            if isinstance(data, OSError):
                raise data
            marker = json.loads(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            scan.damaged.append((name, f"marker unreadable ({type(exc).__name__})"))
            continue
        problem = marker_problem(parquet, marker, files.get(name, -1))
        if problem is None and checksums and "sha256" in marker and file_sha256(parquet) != marker["sha256"]:
            problem = "content differs from the marker's SHA-256 (corrupted bytes)"
        if problem is None:
            dup = next((c for c in marker["clip_ids"] if c in owner), None)
            if dup is not None:
                problem = f"clip {dup} duplicated (also in {owner[dup]})"
        if problem is not None:
            scan.damaged.append((name, problem))
            continue
        owner.update(dict.fromkeys(marker["clip_ids"], name))
        scan.committed.append((parquet, marker))
    return scan


class ShardDamagedError(ValueError):
    """A committed shard's bytes do not match its marker (names the shard and how to repair it)."""


def read_committed_table(parquet: Location, marker: dict, columns: list[str] | None = None) -> pa.Table:
    """A committed shard's rows, its bytes checked against the marker's SHA-256 as they are read (one read)."""
    data = parquet.read_bytes()
    if "sha256" in marker and hashlib.sha256(data).hexdigest() != marker["sha256"]:
        raise ShardDamagedError(f"{parquet}: content differs from its marker's SHA-256 (corrupted bytes): rerun the "
                                f"build on {parquet.parent.parent} to repair it")
    return pq.read_table(pa.BufferReader(data), columns=columns)


def committed_shards(out_dir: str | Location) -> list[tuple[Location, dict]]:
    """(parquet path, marker) of every intact committed shard (cheap check, see ``scan_shards``), sorted."""
    return scan_shards(out_dir).committed


def committed_clip_ids(out_dir: str | Location) -> set[str]:
    """Ids of every clip in an intact committed shard."""
    return {cid for _, marker in committed_shards(out_dir) for cid in marker["clip_ids"]}


def next_shard_number(out_dir: str | Location) -> int:
    """One more than the highest shard number in ``shards/`` or ``quarantine/`` (committed or not)."""
    out = location(out_dir)
    numbers = [int(m.group(1)) for folder in ("shards", QUARANTINE) for name in listing(out / folder, "part-")
               if (m := re.match(r"^part-(\d{5,})\.", name))]
    return max(numbers, default=-1) + 1


def repair_shards(out_dir: str | Location, checksums: bool = False) -> list[str]:
    """Move every damaged or duplicate shard (parquet and marker) into ``quarantine/``; returns one line per
    shard moved (its name and problem).

    Nothing is deleted: a name already in quarantine gets a ``.N`` suffix. The clips of a moved shard are
    no longer committed, so a resumed build renders them again."""
    out = location(out_dir)
    moved = []
    for name, problem in scan_shards(out, checksums).damaged:
        make_folder(out / QUARANTINE)
        present = listing(out / "shards", name.removesuffix(".parquet"))
        taken = set(listing(out / QUARANTINE))
        for file in (name, name.removesuffix(".parquet") + ".json"):
            if file in present:
                target, n = file, 0
                while target in taken:
                    n += 1
                    target = f"{file}.{n}"
                taken.add(target)
                move(out / "shards" / file, out / QUARANTINE / target)
        moved.append(f"{name} ({problem})")
    return moved


def remove_debris(out_dir: str | Location) -> list[str]:
    """Delete temporary files and shards without a marker (left by interrupted writers); returns their names."""
    shard_dir = location(out_dir) / "shards"
    files = listing(shard_dir)
    removed = []
    for name in sorted(files):
        if name.startswith(".tmp-") or (name.startswith("part-") and name.endswith(".parquet")
                                        and name.removesuffix(".parquet") + ".json" not in files):
            (shard_dir / name).unlink(missing_ok=True)
            removed.append(name)
    return removed
