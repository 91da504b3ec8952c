"""Parquet shards of clips: the schema, an atomic shard writer and the committed-shard index.

Commit protocol (exactly-once with retries): a writer streams rows into ``shards/.tmp-*.parquet``;
``commit`` closes and fsyncs it, hashes it, renames it to ``shards/part-NNNNN.parquet``, fsyncs the
folder, then writes ``part-NNNNN.json`` the same way. The marker is the commit point: it records the
shard's clip ids, stats, size in bytes and SHA-256, and a SHA-256 of its own content. Readers, ``verify``
and resumed builds only see shards whose marker is intact and whose size matches it (``scan_shards``;
the checksum too when asked); a parquet file without a marker is debris of an interrupted writer.
A damaged or duplicate shard is moved aside into ``quarantine/``, never deleted (``repair_shards``), so
that the next build renders its clips again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` through a temporary file, fsync and rename (readers see all or nothing)."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _marker_digest(marker: dict) -> str:
    """SHA-256 of a marker's content without its own digest (canonical JSON)."""
    body = {k: v for k, v in marker.items() if k != "marker_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_marker(parquet: Path, rows: list[dict], name: str | None = None) -> dict:
    """The commit marker of shard file ``parquet`` (to be published as ``name``, default its own name) holding
    ``rows`` (clip_id, scene_id, status, num_frames each): ids, stats, the file's size and SHA-256, and the
    marker's own SHA-256."""
    statuses = [r["status"] for r in rows]
    marker = {"shard": name or parquet.name, "rows": len(rows), "bytes": parquet.stat().st_size,
              "sha256": file_sha256(parquet), "clip_ids": [r["clip_id"] for r in rows],
              "scenes": sorted({r["scene_id"] for r in rows}), "frames": sum(r["num_frames"] for r in rows),
              "accepted": statuses.count("accepted"), "rejected": statuses.count("rejected")}
    marker["marker_sha256"] = _marker_digest(marker)
    return marker


def _publish(tmp: Path, shard_dir: Path, number: int, rows: list[dict]) -> dict:
    """Rename a complete, fsynced temporary shard to ``part-{number:05d}.parquet`` and write its marker."""
    final = shard_dir / f"part-{number:05d}.parquet"
    if final.exists():
        raise FileExistsError(f"{final} already exists: shard numbers must be unique")
    marker = build_marker(tmp, rows, final.name)
    os.replace(tmp, final)
    _fsync_dir(shard_dir)
    write_atomic(final.with_suffix(".json"), json.dumps(marker, indent=1).encode())
    return marker


def commit_table(shard_dir: Path, number: int, table: pa.Table, rows_per_group: int = 4,
                 schema: pa.Schema = SCHEMA) -> dict:
    """Write a whole table as committed shard ``number`` (temporary file, fsync, rename, marker). ``schema`` is
    the dataset's by default; companion shards (e.g. a latent cache) give their own, with at least the marker's
    ``clip_id``, ``scene_id``, ``status`` and ``num_frames`` columns."""
    if not table.schema.equals(schema):
        raise ValueError("table does not have the dataset schema" if schema is SCHEMA else
                         "table does not have the shard schema")
    shard_dir.mkdir(parents=True, exist_ok=True)
    tmp = shard_dir / f".tmp-{uuid.uuid4().hex}.parquet"
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

    def __init__(self, shard_dir: Path, rows_per_group: int = 4, schema: pa.Schema = SCHEMA) -> None:
        self.shard_dir = Path(shard_dir)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.rows_per_group = rows_per_group
        self.schema = schema
        self.tmp = self.shard_dir / f".tmp-{uuid.uuid4().hex}.parquet"
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


def read_manifest(folder: str | Path) -> dict:
    """A dataset folder's ``manifest.json`` ({} when it has none)."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rows_per_group(shard: str | Path) -> int:
    """The row-group size a shard was written with (derived jobs keep it)."""
    metadata = pq.ParquetFile(shard).metadata
    return max(1, metadata.row_group(0).num_rows) if metadata.num_row_groups else 1


def is_inside(folder: str | Path, other: str | Path) -> bool:
    """Whether ``other`` is ``folder`` or lies under it (an output must never go into its input dataset)."""
    folder, other = Path(folder).resolve(), Path(other).resolve()
    return other == folder or folder in other.parents


def marker_problem(parquet: Path, marker: object) -> str | None:
    """Why ``marker`` is not an intact commit record of ``parquet`` (cheap: the shard is not read); None if it is.

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
    if not parquet.exists():
        return "marker without its parquet file"
    size = parquet.stat().st_size
    if size != marker["bytes"]:
        return f"size {size} bytes differs from the marker's {marker['bytes']} (truncated or overwritten)"
    return None


@dataclass
class ShardScan:
    """What ``shards/`` holds: intact committed shards and damaged ones (with the reason)."""

    committed: list[tuple[Path, dict]] = field(default_factory=list)
    """(parquet path, marker) of every intact committed shard, by number; a clip is in at most one."""
    damaged: list[tuple[str, str]] = field(default_factory=list)
    """(shard file name, problem): bad or orphaned markers, size or checksum mismatches, duplicates."""


def scan_shards(out_dir: str | Path, checksums: bool = False) -> ShardScan:
    """Check every marker of ``out_dir/shards`` (and each shard's SHA-256 when ``checksums``).

    A shard holding a clip that an earlier intact shard holds too is reported as a duplicate."""
    shard_dir = Path(out_dir) / "shards"
    scan = ShardScan()
    owner: dict[str, str] = {}
    for marker_path in sorted(shard_dir.glob("part-*.json")):
        parquet = marker_path.with_suffix(".parquet")
        if not SHARD_RE.match(parquet.name):
            continue
        name = parquet.name
        try:
            marker = json.loads(marker_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            scan.damaged.append((name, f"marker unreadable ({type(exc).__name__})"))
            continue
        problem = marker_problem(parquet, marker)
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


def read_committed_table(parquet: Path, marker: dict, columns: list[str] | None = None) -> pa.Table:
    """A committed shard's rows, its bytes checked against the marker's SHA-256 as they are read (one read)."""
    data = parquet.read_bytes()
    if "sha256" in marker and hashlib.sha256(data).hexdigest() != marker["sha256"]:
        raise ShardDamagedError(f"{parquet}: content differs from its marker's SHA-256 (corrupted bytes): rerun the "
                                f"build on {parquet.parent.parent} to repair it")
    return pq.read_table(pa.BufferReader(data), columns=columns)


def committed_shards(out_dir: str | Path) -> list[tuple[Path, dict]]:
    """(parquet path, marker) of every intact committed shard (cheap check, see ``scan_shards``), sorted."""
    return scan_shards(out_dir).committed


def committed_clip_ids(out_dir: str | Path) -> set[str]:
    """Ids of every clip in an intact committed shard."""
    return {cid for _, marker in committed_shards(out_dir) for cid in marker["clip_ids"]}


def next_shard_number(out_dir: str | Path) -> int:
    """One more than the highest shard number in ``shards/`` or ``quarantine/`` (committed or not)."""
    out = Path(out_dir)
    numbers = [int(m.group(1)) for folder in ("shards", QUARANTINE) for p in (out / folder).glob("part-*")
               if (m := re.match(r"^part-(\d{5,})\.", p.name))]
    return max(numbers, default=-1) + 1


def repair_shards(out_dir: str | Path, checksums: bool = False) -> list[str]:
    """Move every damaged or duplicate shard (parquet and marker) into ``quarantine/``; returns one line per
    shard moved (its name and problem).

    Nothing is deleted: a name already in quarantine gets a ``.N`` suffix. The clips of a moved shard are
    no longer committed, so a resumed build renders them again."""
    out = Path(out_dir)
    moved = []
    for name, problem in scan_shards(out, checksums).damaged:
        (out / QUARANTINE).mkdir(exist_ok=True)
        parquet = out / "shards" / name
        for path in (parquet, parquet.with_suffix(".json")):
            if path.exists():
                target, n = out / QUARANTINE / path.name, 0
                while target.exists():
                    n += 1
                    target = out / QUARANTINE / f"{path.name}.{n}"
                os.replace(path, target)
        _fsync_dir(out / "shards")
        moved.append(f"{name} ({problem})")
    return moved


def remove_debris(out_dir: str | Path) -> list[str]:
    """Delete temporary files and shards without a marker (left by interrupted writers); returns their names."""
    shard_dir = Path(out_dir) / "shards"
    removed = []
    for p in list(shard_dir.glob(".tmp-*")) + list(shard_dir.glob("part-*.parquet")):
        if p.name.startswith(".tmp-") or not p.with_suffix(".json").exists():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
