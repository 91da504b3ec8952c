"""Failure records: ``failures.parquet``, one row per scene or clip a job gave up on, with the error."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from dataset.store.fs import Location, location, read_parquet
from dataset.store.shards import committed_clip_ids, write_atomic

FAILURE_SCHEMA = pa.schema([("clip_id", pa.string()), ("scene", pa.string()), ("scene_id", pa.string()),
                            ("trajectory_id", pa.string()), ("attempts", pa.int32()), ("error", pa.string())])
"""A failed clip (``clip_id`` set) or a scene that could not be loaded or sampled (``clip_id`` null)."""


def failure_key(row: dict) -> str:
    """The key a failure is recorded under: its clip id, or ``scene:SOURCE`` for a scene."""
    return row["clip_id"] or f"scene:{row['scene']}"


def scene_failure(source: str, error: str) -> dict:
    """The failure row of a scene that could not be loaded or sampled."""
    return {"clip_id": None, "scene": source, "scene_id": None, "trajectory_id": None, "attempts": 1, "error": error}


def read_failures(out: str | Location) -> list[dict]:
    """The rows of ``out/failures.parquet`` (none when it does not exist)."""
    path = location(out) / "failures.parquet"
    return read_parquet(path).to_pylist() if path.exists() else []


def write_failures(out: str | Location, failures: dict[str, dict]) -> None:
    """Merge this run's failures with earlier ones whose clips are still not committed; write atomically."""
    path = location(out) / "failures.parquet"
    rows = {failure_key(r): r for r in read_failures(out)}
    rows.update(failures)
    done = committed_clip_ids(out)
    rows = [r for r in rows.values() if r["clip_id"] not in done]
    if not rows and not path.exists():
        return
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA), sink)
    write_atomic(path, sink.getvalue().to_pybytes())
