"""The commit protocol, the shard index and the output lock on a real S3-protocol server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid

import pyarrow as pa
import pytest

from dataset.store import output
from dataset.store.fs import is_inside, listing, location
from dataset.store.output import OutputError, output_lock, prepare_output
from dataset.store.reader import PanoDataset, committed_files, verify_dataset
from dataset.store.shards import (
    SCHEMA,
    ShardWriter,
    commit_table,
    next_shard_number,
    remove_debris,
    repair_shards,
    scan_shards,
)


def _row(clip: str) -> dict:
    row = dict.fromkeys(SCHEMA.names)
    row.update(clip_id=clip, scene_id="s", trajectory_id="t", scene="procedural:room", width=4, height=2,
               num_frames=1, fps=1.0, rgb_mp4=b"", depth=b"", c2w=[[0.0] * 16], caption="", status="accepted",
               reject_reasons=[], seed=0)
    return row


@pytest.fixture
def remote(s3_bucket):
    return location(f"{s3_bucket}/{uuid.uuid4().hex[:8]}")


def test_shards_commit_on_s3_and_a_number_is_never_published_twice(remote):
    out = prepare_output(remote, "build", settings=("config_hash", "h"), folders=("shards", "plans"))
    assert str(out) == str(remote)
    commit_table(out / "shards", 0, pa.Table.from_pylist([_row("a")], schema=SCHEMA))
    writer = ShardWriter(out / "shards")
    writer.add(_row("b"))
    assert writer.tmp.exists() and not str(writer.tmp).startswith("s3://")  # spooled locally, not on the store
    writer.commit(1)
    before = (out / "shards" / "part-00001.parquet").read_bytes()
    with pytest.raises(FileExistsError, match="shard numbers must be unique"):
        commit_table(out / "shards", 1, pa.Table.from_pylist([_row("c")], schema=SCHEMA))
    assert (out / "shards" / "part-00001.parquet").read_bytes() == before  # the committed shard is untouched

    (out / "shards" / "part-00005.parquet").write_bytes(b"an interrupted upload")  # no marker: debris
    assert [m["clip_ids"] for _, m in scan_shards(out).committed] == [["a"], ["b"]]
    assert next_shard_number(out) == 6  # debris numbers are never reused
    assert committed_files(out) == [f"{remote}/shards/part-00000.parquet", f"{remote}/shards/part-00001.parquet"]
    ds = PanoDataset(str(out))
    assert len(ds) == 2 and [c.clip_id for c in ds.clips()] == ["a", "b"]
    assert ds.table(columns=["clip_id"]).column("clip_id").to_pylist() == ["a", "b"]
    assert verify_dataset(out, decode=False) == []
    assert remove_debris(out) == ["part-00005.parquet"] and "part-00005.parquet" not in listing(out / "shards")

    (out / "shards" / "part-00001.json").write_text("{not json")
    assert repair_shards(out) == ["part-00001.parquet (marker unreadable (JSONDecodeError))"]
    assert sorted(listing(out / "quarantine")) == ["part-00001.json", "part-00001.parquet"]
    assert [c.clip_id for c in PanoDataset(out).clips()] == ["a"]
    assert next_shard_number(out) == 2  # the quarantined shard's number stays taken


def test_output_checks_on_s3(remote, tmp_path):
    out = prepare_output(remote, "build", settings=("config_hash", "h"))
    (out / "manifest.json").write_text(json.dumps({"config_hash": "h"}))
    with pytest.raises(OutputError, match="different job spec"):
        prepare_output(remote, "build", settings=("config_hash", "other"))
    prepare_output(remote, "build", settings=("config_hash", "other"), overwrite=True)
    assert not (out / "manifest.json").exists()
    assert is_inside(remote, f"{remote}/sub") and not is_inside(remote, f"{remote}-x")
    assert not is_inside(remote, tmp_path)
    with pytest.raises(OutputError, match="no committed shards"):
        prepare_output(tmp_path / "out", "export", src=remote)


def test_the_lease_on_s3_refuses_a_second_job_and_is_taken_over_when_its_holder_is_gone(remote, monkeypatch):
    with output_lock(remote, "build"):
        holder = json.loads((remote / ".lock").read_text())
        assert holder["pid"] > 0 and holder["job"] == "build"
        with pytest.raises(OutputError, match="is in use by build"):
            with output_lock(remote, "annotate"):
                pass
    assert not (remote / ".lock").exists()  # released

    # A holder killed on this host: taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (remote / ".lock").write_text(json.dumps({"job": "build", "pid": dead.pid, "host": socket.gethostname(),
                                               "renewed": time.time()}))
    with output_lock(remote, "build"):
        assert json.loads((remote / ".lock").read_text())["pid"] != dead.pid

    # A holder elsewhere that stopped renewing: taken over after LEASE_S, refused before.
    (remote / ".lock").write_text(json.dumps({"job": "build", "pid": 1, "host": "elsewhere", "renewed": time.time()}))
    with pytest.raises(OutputError, match="in use by build .* on elsewhere"):
        with output_lock(remote, "build"):
            pass
    monkeypatch.setattr(output, "LEASE_S", 0.5)
    time.sleep(0.6)
    with output_lock(remote, "build"):
        time.sleep(0.4)  # renewed every LEASE_S / 4 while held
        assert time.time() - json.loads((remote / ".lock").read_text())["renewed"] < 0.3


def test_an_unknown_url_scheme_is_one_clear_error():
    with pytest.raises(ValueError, match="cannot open nosuchfs:// URLs"):
        location("nosuchfs://bucket/x")
