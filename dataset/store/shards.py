"""Parquet shards of clips: the schema, an atomic shard writer and the committed-shard index.

Commit protocol (exactly-once with retries): a writer streams rows into ``shards/.tmp-*.parquet``;
``commit`` closes and fsyncs it, renames it to ``shards/part-NNNNN.parquet``, fsyncs the folder, then
writes ``part-NNNNN.json`` (the shard's stats and clip ids) the same way. The marker is the commit
point: readers, ``verify`` and resumed builds only see shards that have one, and anything else in
``shards/`` is debris of an interrupted writer.
"""

from __future__ import annotations

import json
import os
import re
import uuid
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


def _publish(tmp: Path, shard_dir: Path, number: int, rows: list[dict], extra: dict | None) -> dict:
    """Rename a complete, fsynced temporary shard to ``part-{number:05d}.parquet`` and write its marker."""
    name = f"part-{number:05d}"
    final = shard_dir / f"{name}.parquet"
    if final.exists():
        raise FileExistsError(f"{final} already exists: shard numbers must be unique")
    os.replace(tmp, final)
    _fsync_dir(shard_dir)
    statuses = [r["status"] for r in rows]
    marker = {"shard": final.name, "rows": len(rows), "bytes": final.stat().st_size,
              "clip_ids": [r["clip_id"] for r in rows], "scenes": sorted({r["scene_id"] for r in rows}),
              "frames": sum(r["num_frames"] for r in rows),
              "accepted": statuses.count("accepted"), "rejected": statuses.count("rejected"), **(extra or {})}
    write_atomic(shard_dir / f"{name}.json", json.dumps(marker, indent=1).encode())
    return marker


def commit_table(shard_dir: Path, number: int, table: pa.Table, rows_per_group: int = 4,
                 extra: dict | None = None) -> dict:
    """Write a whole table as committed shard ``number`` (temporary file, fsync, rename, marker)."""
    if not table.schema.equals(SCHEMA):
        raise ValueError("table does not have the dataset schema")
    shard_dir.mkdir(parents=True, exist_ok=True)
    tmp = shard_dir / f".tmp-{uuid.uuid4().hex}.parquet"
    with open(tmp, "wb") as f:
        pq.write_table(table, f, row_group_size=rows_per_group, compression="none",
                       use_dictionary=["scene", "status"])
        f.flush()
        os.fsync(f.fileno())
    rows = table.select(["clip_id", "scene_id", "status", "num_frames"]).to_pylist()
    return _publish(tmp, shard_dir, number, rows, extra)


class ShardWriter:
    """Streams clip rows into one shard; ``commit`` makes it visible atomically."""

    def __init__(self, shard_dir: Path, rows_per_group: int = 4) -> None:
        self.shard_dir = Path(shard_dir)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.rows_per_group = rows_per_group
        self.tmp = self.shard_dir / f".tmp-{uuid.uuid4().hex}.parquet"
        self._file = open(self.tmp, "wb")
        self._writer = pq.ParquetWriter(self._file, SCHEMA, compression="none", use_dictionary=["scene", "status"])
        self._pending: list[dict] = []
        self.rows: list[dict] = []
        """Small per-row facts (ids, status, sizes) for the marker."""

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        """Bytes written so far plus rows still buffered."""
        pending = sum(len(r["rgb_mp4"]) + len(r["depth"]) for r in self._pending)
        return self._file.tell() + pending

    def add(self, row: dict) -> None:
        """Append one clip row (a dict with every SCHEMA column)."""
        self._pending.append(row)
        self.rows.append({"clip_id": row["clip_id"], "scene_id": row["scene_id"], "status": row["status"],
                          "num_frames": row["num_frames"]})
        if len(self._pending) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=SCHEMA))
            self._pending = []

    def commit(self, number: int, extra: dict | None = None) -> dict:
        """Close, fsync and publish the shard as ``part-{number:05d}``; returns its marker."""
        self._flush()
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return _publish(self.tmp, self.shard_dir, number, self.rows, extra)

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


def committed_shards(out_dir: str | Path) -> list[tuple[Path, dict]]:
    """(parquet path, marker) of every committed shard (marker present and its parquet beside it), sorted."""
    shard_dir = Path(out_dir) / "shards"
    out = []
    for marker_path in sorted(shard_dir.glob("part-*.json")):
        parquet = marker_path.with_suffix(".parquet")
        if not SHARD_RE.match(parquet.name) or not parquet.exists():
            continue
        try:
            marker = json.loads(marker_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out.append((parquet, marker))
    return out


def committed_clip_ids(out_dir: str | Path) -> set[str]:
    """Ids of every clip in a committed shard."""
    return {cid for _, marker in committed_shards(out_dir) for cid in marker["clip_ids"]}


def next_shard_number(out_dir: str | Path) -> int:
    """One more than the highest shard number on disk (committed or not)."""
    numbers = [int(m.group(1)) for p in (Path(out_dir) / "shards").glob("part-*.parquet")
               if (m := SHARD_RE.match(p.name))]
    return max(numbers, default=-1) + 1


def remove_debris(out_dir: str | Path) -> list[str]:
    """Delete temporary files and shards without a marker (left by interrupted writers); returns their names."""
    shard_dir = Path(out_dir) / "shards"
    removed = []
    for p in list(shard_dir.glob(".tmp-*")) + list(shard_dir.glob("part-*.parquet")):
        if p.name.startswith(".tmp-") or not p.with_suffix(".json").exists():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
