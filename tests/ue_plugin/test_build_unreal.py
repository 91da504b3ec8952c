"""``matrix-pano build`` with the unreal renderer against two stand-in instances (attach mode)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dataset.core.jobspec import JobSpecError, parse_job_spec
from dataset.jobs.build import run_build
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from dataset.sources import load_scene
from dataset.store.reader import PanoDataset, verify_dataset
from dataset.store.shards import committed_shards
from ue_plugin.standin import StandinServer

ray = pytest.importorskip("ray")
SCENE = "procedural:indoor:1"


def _spec(ports, **extra):
    return parse_job_spec({"scenes": [SCENE], "trajectories_per_scene": 4, "frames_per_clip": 4,
                           "resolution": [256, 128], "output": {"shard_size_mb": 0.05, "rows_per_group": 1},
                           "renderer": {"kind": "unreal", "endpoints": [f"127.0.0.1:{p}" for p in ports],
                                        "timeout_s": 5}, **extra})


def test_build_through_two_standins_matches_the_embedded_depth(tmp_path, local_ray):
    scene = load_scene(SCENE)
    with StandinServer(scene) as a, StandinServer(scene) as b:
        counts = run_build(_spec([a.port, b.port]), tmp_path, progress=False)
        assert a.requests > 0 and b.requests > 0, "both instances did work"
    assert counts["clips_committed"] == 4 and verify_dataset(tmp_path) == []
    import json

    assert "float16" in json.loads((tmp_path / "manifest.json").read_text())["depth_precision"]
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        for clip in PanoDataset(tmp_path).clips():
            assert clip.row["renderer"] == "unreal"
            ref = r.render(clip.c2w, 256).depth
            depth = clip.depth()
            hit = (depth > 0) & (ref > 0)
            rel = np.abs(depth[hit] - ref[hit]) / ref[hit]
            assert ((depth > 0) == (ref > 0)).mean() > 0.995
            assert np.median(rel) < 0.005 and (rel < 0.02).mean() > 0.9


def test_killing_an_instance_mid_job_reroutes_its_work(tmp_path, local_ray):
    scene = load_scene(SCENE)
    with StandinServer(scene) as a, StandinServer(scene) as b:
        spec = _spec([a.port, b.port], trajectories_per_scene=6, frames_per_clip=8)

        def kill_b():
            while b.requests < 30:
                time.sleep(0.01)
            b.stop()  # the instance is gone: its connection drops, nothing listens on its port

        killer = threading.Thread(target=kill_b)
        killer.start()
        counts = run_build(spec, tmp_path, progress=False)
        killer.join()
    ids = [c for _, m in committed_shards(tmp_path) for c in m["clip_ids"]]
    assert len(ids) == len(set(ids)) == 6 == counts["clips_committed"] and counts["clips_failed"] == 0
    assert counts["endpoint_failures"] >= 1, "the lost instance was noticed and its work re-routed"
    assert verify_dataset(tmp_path) == []


def test_unreal_spec_errors():
    with pytest.raises(JobSpecError, match="needs endpoints"):
        parse_job_spec({"scenes": [SCENE], "renderer": {"kind": "unreal"}})
    with pytest.raises(JobSpecError, match="must be host:port"):
        parse_job_spec({"scenes": [SCENE], "renderer": {"kind": "unreal", "endpoints": ["localhost"]}})
