"""``matrix-pano export DIR --out DIR2 --status accepted``: a clean dataset of the clips kept.

The final status of each clip is its automatic verdict combined with the manual review
(``review.final_status``). Kept rows are copied unchanged except ``status`` and ``reject_reasons``
(which then include the manual decision); each input shard gives the output shard of the same number
(shards left empty are skipped). The output gets its own ``manifest.json`` and ``stats.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from annotation.review import ReviewLog, final_status
from dataset.core.jobspec import JobError
from dataset.store.output import output_lock, prepare_output
from dataset.store.shards import (
    SHARD_RE,
    ShardDamagedError,
    commit_table,
    committed_shards,
    read_committed_table,
    read_manifest,
    remove_debris,
    rows_per_group,
    write_atomic,
)
from dataset.store.stats import dataset_stats

STATUSES = ("accepted", "rejected", "all")


class ExportError(JobError):
    """The export cannot run (bad folders or arguments)."""


def run_export(src: str | Path, out: str | Path, status: str = "accepted", overwrite: bool = False) -> dict:
    """Write the clips of ``src`` whose final status is ``status`` (or all) into ``out``; returns counts."""
    src, out = Path(src), Path(out)
    if status not in STATUSES:
        raise ExportError(f"--status {status!r} is not one of {', '.join(STATUSES)}")
    with output_lock(out, "export", error=ExportError):
        return _export(src, out, status, overwrite)


def _export(src: Path, out: Path, status: str, overwrite: bool) -> dict:
    prepare_output(out, "export", overwrite=overwrite, src=src, exclusive=True, error=ExportError)
    shards = committed_shards(src)
    remove_debris(out)
    decisions = ReviewLog(src).decisions()
    kept = total = 0
    for path, marker in shards:
        try:
            table = read_committed_table(path, marker)
        except ShardDamagedError as exc:
            raise ExportError(str(exc)) from None
        rows = table.select(["clip_id", "status", "reject_reasons"]).to_pylist()
        finals = [final_status(r["status"], r["reject_reasons"], decisions.get(r["clip_id"])) for r in rows]
        names = table.column_names
        table = table.set_column(names.index("status"), "status", pa.array([f[0] for f in finals], pa.string()))
        table = table.set_column(names.index("reject_reasons"), "reject_reasons",
                                 pa.array([f[1] for f in finals], pa.list_(pa.string())))
        if status != "all":
            table = table.filter(pc.equal(table["status"], status))
        total += len(rows)
        if table.num_rows:
            commit_table(out / "shards", int(SHARD_RE.match(path.name).group(1)), table, rows_per_group(path))
            kept += table.num_rows
    source_manifest = read_manifest(src)
    counts = {"clips_in": total, "clips_out": kept, "reviewed": len(decisions),
              "shards": len(committed_shards(out))}
    manifest = {**source_manifest, "source": str(src.resolve()), "export": {"status": status, "counts": counts}}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    if kept:
        write_atomic(out / "stats.json", json.dumps(dataset_stats(out), indent=1).encode())
    return counts
