"""``export``: only clips whose final status (automatic + manual review) matches, with ids and payloads kept."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from annotation.export import ExportError, run_export
from annotation.review import ReviewLog
from dataset.store.reader import PanoDataset, verify_dataset


@pytest.fixture
def reviewed(small_dataset, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(small_dataset, src)
    ids = sorted(c.clip_id for c in PanoDataset(src).clips())
    log = ReviewLog(src)
    log.append(ids[0], "reject", "ana")
    log.append(ids[1], "reject", "ana")
    log.append(ids[1], "clear", "ana")  # undone
    log.append(ids[2], "accept", "ben")
    return src, ids


def test_export_applies_manual_review(reviewed, tmp_path):
    src, ids = reviewed
    out = tmp_path / "kept"
    counts = run_export(src, out, "accepted")
    assert counts == {"clips_in": 4, "clips_out": 3, "reviewed": 2, "shards": counts["shards"]}
    assert verify_dataset(out) == []
    kept = {c.clip_id: c for c in PanoDataset(out).clips()}
    assert sorted(kept) == ids[1:]
    original = {c.clip_id: c for c in PanoDataset(src).clips()}
    assert kept[ids[3]].row["rgb_mp4"] == original[ids[3]].row["rgb_mp4"]
    assert json.loads((out / "stats.json").read_text())["clips"] == 3
    assert json.loads((out / "manifest.json").read_text())["export"]["status"] == "accepted"
    rejected = tmp_path / "rejected"
    run_export(src, rejected, "rejected")
    (row,) = [c.row for c in PanoDataset(rejected).clips()]
    assert row["clip_id"] == ids[0] and row["reject_reasons"][-1].startswith("manual review: rejected by ana")
    assert pq.read_table(next((src / "shards").glob("part-*.parquet"))).num_rows >= 1, "input untouched"


def test_export_errors(reviewed, tmp_path):
    src, _ = reviewed
    with pytest.raises(ExportError, match="not one of"):
        run_export(src, tmp_path / "x", "maybe")
    with pytest.raises(ExportError, match="outside the input"):
        run_export(src, src / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        run_export(src, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
