"""The build: shards that verify and read everywhere, resumable and exactly once under failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from build_helpers import SMALL_BUILD

from dataset.core.codecs import psnr
from dataset.core.jobspec import JobSpecError, parse_job_spec
from dataset.jobs.build import BuildError, run_build
from dataset.store.reader import PanoDataset, verify_dataset
from dataset.store.shards import committed_clip_ids, committed_shards

ray = pytest.importorskip("ray")


def spec(**overrides):
    return parse_job_spec({**SMALL_BUILD, **overrides})


def test_build_verifies_resumes_and_reads_back(tmp_path, local_ray):
    s = spec()
    counts = run_build(s, tmp_path, workers=2, progress=False)
    assert counts["clips_committed"] == 4 and counts["clips_failed"] == 0
    assert verify_dataset(tmp_path) == []
    shards = committed_shards(tmp_path)
    assert len(shards) >= 2, "small shard size cuts several shards"
    again = run_build(s, tmp_path, workers=2, progress=False)
    assert again["clips_committed"] == 4 and [p for p, _ in committed_shards(tmp_path)] == [p for p, _ in shards]
    ds = PanoDataset(tmp_path)
    clips = list(ds.clips(scene="procedural:room:6x8x3"))
    assert len(clips) == 2 and len(ds) == 4
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config_hash"] == s.config_hash() and manifest["versions"]["matrix_pano"]
    row = clips[0].row
    assert row["renderer"] == "embedded" and row["seed"] == 0 and row["config_hash"] == s.config_hash()


def test_frames_and_depth_match_the_renderer(tmp_path, local_ray):
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.sources import load_scene

    s = spec(scenes=["procedural:indoor:1"], trajectories_per_scene=1, resolution=[512, 256])
    run_build(s, tmp_path, workers=1, progress=False)
    clip = next(PanoDataset(tmp_path).clips())
    with EmbeddedRenderer(load_scene("procedural:indoor:1"), RenderSettings(threads=1)) as r:
        ref = r.render(clip.c2w, 512)
    assert psnr(clip.frames(), ref.rgb) >= 32
    depth = clip.depth()
    hit = ref.depth > 0
    np.testing.assert_array_equal(depth > 0, hit)
    assert (np.abs(depth[hit] - ref.depth[hit]) / ref.depth[hit]).max() < 1e-3


def test_changed_spec_is_refused_unless_overwriting(tmp_path, local_ray):
    run_build(spec(), tmp_path, workers=2, progress=False)
    with pytest.raises(BuildError, match="different job spec"):
        run_build(spec(frames_per_clip=7), tmp_path, workers=2, progress=False)
    counts = run_build(spec(frames_per_clip=7), tmp_path, workers=2, overwrite=True, progress=False)
    assert counts["clips_committed"] == 4
    assert {m["frames"] for _, m in committed_shards(tmp_path)} <= {7, 14}


def test_corrupt_scene_is_recorded_and_the_rest_completes(tmp_path, local_ray):
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    out = tmp_path / "out"
    counts = run_build(spec(scenes=[str(broken), "procedural:room:6x8x3"]), out, workers=2, progress=False)
    assert counts["clips_committed"] == 2
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert len(failures) == 1 and failures[0]["scene"] == str(broken) and "broken.glb" in failures[0]["error"]


def test_unwritable_output_gives_a_clear_error(tmp_path, local_ray):
    out = tmp_path / "out"
    out.mkdir()
    as_root = os.geteuid() == 0
    if as_root:  # root writes through permissions: use a file system mounted read-only instead
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(out)]).returncode != 0:
            pytest.skip("running as root without mount: permissions cannot be tested")
    try:
        run_build(spec(scenes=["procedural:room:6x8x3"]), out, workers=1, progress=False)
        before = {p.name: p.stat().st_size for p, _ in committed_shards(out)}
        if as_root:
            subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        else:
            os.chmod(out / "shards", 0o500)
        with pytest.raises(BuildError, match="not writable"):
            run_build(spec(scenes=["procedural:room:6x8x3"]), out, workers=1, progress=False)
        assert {p.name: p.stat().st_size for p, _ in committed_shards(out)} == before
        assert verify_dataset(out) == []
    finally:
        if as_root:
            subprocess.run(["umount", "-l", str(out)], check=False)
        else:
            os.chmod(out / "shards", 0o700)


def test_output_under_a_file_gives_a_clear_error(tmp_path, local_ray):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BuildError, match="not writable"):
        run_build(spec(), tmp_path / "file" / "out", workers=1, progress=False)


def test_full_disk_gives_a_clear_error_and_keeps_committed_shards(tmp_path, local_ray):
    disk = tmp_path / "small_disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): " + mounted.stderr.decode().strip())
    try:
        big = spec(scenes=["procedural:indoor:1", "procedural:indoor:2", "procedural:room:6x8x3"],
                   trajectories_per_scene=3, frames_per_clip=12, output={"shard_size_mb": 0.03})
        with pytest.raises(BuildError, match="No space left on device"):
            run_build(big, disk, workers=2, progress=False)
        committed = committed_shards(disk)
        assert committed, "shards committed before the disk filled up"
        assert verify_dataset(disk) == [], "and they are intact"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_job_spec_errors_name_the_key():
    with pytest.raises(JobSpecError, match=r"renderer.kind: .*'embedded'"):
        parse_job_spec({**SMALL_BUILD, "renderer": {"kind": "blender"}})
    with pytest.raises(JobSpecError, match=r"output.shard_sizemb: unknown key; allowed keys: shard_size_mb"):
        parse_job_spec({**SMALL_BUILD, "output": {"shard_sizemb": 3}})
    with pytest.raises(JobSpecError, match="width = 2 x height"):
        parse_job_spec({**SMALL_BUILD, "resolution": [100, 100]})


def test_shards_open_in_pandas_duckdb_ray_data_and_datasets(tmp_path, local_ray):
    run_build(spec(), tmp_path, workers=2, progress=False)
    ids = committed_clip_ids(tmp_path)
    import glob

    import pandas as pd

    df = pd.read_parquet(sorted(glob.glob(f"{tmp_path}/shards/part-*.parquet")), columns=["clip_id", "status"])
    assert set(df.clip_id) == ids
    duckdb = pytest.importorskip("duckdb")
    n = duckdb.sql(f"SELECT count(DISTINCT clip_id) FROM '{tmp_path}/shards/part-*.parquet'").fetchall()[0][0]
    assert n == len(ids)
    rows = ray.data.read_parquet(str(tmp_path / "shards"), file_extensions=["parquet"]).select_columns(
        ["clip_id", "num_frames"]).take_all()
    assert {r["clip_id"] for r in rows} == ids
    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("parquet", data_files=str(tmp_path / "shards" / "part-*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert set(hf["clip_id"]) == ids


@pytest.mark.slow
def test_sigkill_mid_build_then_rerun_is_exactly_once(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({**SMALL_BUILD, "scenes": ["procedural:indoor:1", "procedural:indoor:2",
                                                   "procedural:room:6x8x3"], "trajectories_per_scene": 3,
                               "frames_per_clip": 12, "output": {"shard_size_mb": 0.02}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dataset.cli", "build", str(cfg), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(committed_shards(out)) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = committed_clip_ids(out)
    assert 0 < len(partial) < 9, "killed mid-job"
    assert verify_dataset(out) == [], "nothing partial is visible"
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert verify_dataset(out) == []
    ids = [c for _, m in committed_shards(out) for c in m["clip_ids"]]
    assert len(ids) == len(set(ids)) == 9 and partial <= set(ids)


@pytest.mark.slow
def test_node_removed_mid_build_every_clip_exactly_once(tmp_path):
    import threading

    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        s = spec(scenes=["procedural:indoor:1", "procedural:indoor:2", "procedural:room:6x8x3"],
                 trajectories_per_scene=3, frames_per_clip=12, output={"shard_size_mb": 0.02})
        result = {}
        build = threading.Thread(target=lambda: result.update(run_build(s, tmp_path, workers=2, progress=False)))
        build.start()
        _wait_for_shards(tmp_path, 1)
        cluster.remove_node(nodes[0])  # both workers are busy, one on each node: one dies mid-task
        time.sleep(1.0)
        cluster.add_node(num_cpus=1)  # room for its replacement
        build.join(timeout=300)
        assert not build.is_alive() and result, "the build finished"
        ids = [c for _, m in committed_shards(tmp_path) for c in m["clip_ids"]]
        assert len(ids) == len(set(ids)) == 9 == result["clips_committed"]
        assert result["worker_restarts"] >= 1
        assert verify_dataset(tmp_path) == []
    finally:
        ray.shutdown()
        cluster.shutdown()


def _wait_for_shards(out, n, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and len(committed_shards(out)) < n:
        time.sleep(0.05)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from dataset.cli import main

    cfg = tmp_path / "job.yaml"
    cfg.write_text("scenes: [procedural:room:6x8x3]\ntrajectories_per_scene: 1\nframes_per_clip: 4\n")
    assert main(["build", str(cfg), "--out", str(tmp_path / "a"), "--ray-address", "127.0.0.1:1"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenes: [procedural:room:6x8x3]\nframes_per_clip: one\n")
    assert main(["build", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert main(["build", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "nothing answers there" in err[0]
    assert "frames_per_clip: Input should be a valid integer" in err[1] and "does not exist" in err[2]
