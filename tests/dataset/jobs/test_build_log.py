"""Build failures a person can act on: ``log.jsonl`` events, ``--max-failures`` and the end-of-build summary."""

from __future__ import annotations

import json

import pytest

from dataset.cli import main
from dataset.cli.datasets import build_status
from dataset.core.jobspec import parse_job_spec
from dataset.jobs.build import run_build
from dataset.store.shards import committed_shards

TINY = {"trajectories_per_scene": 1, "frames_per_clip": 3, "resolution": [64, 32]}
GOOD = "procedural:room:4x6x3"


def _events(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_log_and_summary_of_a_build_with_a_missing_scene(tmp_path, local_ray, capsys):
    missing, out = str(tmp_path / "missing.glb"), tmp_path / "out"
    spec = parse_job_spec({**TINY, "scenes": [GOOD, missing]})
    counts = run_build(spec, out, workers=1)
    assert counts["clips_committed"] == 1 and counts["scenes_failed"] == 1 and not counts["stopped"]
    events = _events(out)
    by_kind = {k: [e for e in events if e["event"] == k] for k in ("start", "done", "scene_failed")}
    assert len(by_kind["start"]) == len(by_kind["done"]) == 1 and len(events) == 3, events
    start, done = by_kind["start"][0], by_kind["done"][0]
    assert start["clip_id"] == done["clip_id"] and start["scene"] == done["scene"] == GOOD
    assert start["worker"] == done["worker"] == "w1" and 0 < done["seconds"] < 60
    assert done["t"] >= start["t"]
    failed = by_kind["scene_failed"][0]
    assert failed["scene"] == missing and "does not exist" in failed["error"] and "clip_id" not in failed
    err = capsys.readouterr().err.splitlines()
    assert f"build: {GOOD}: 1/1 clips committed, 0 failed" in err
    assert f"build: {missing}: scene failed" in err
    assert f"build: failed: scene {missing}: SceneError: mesh file {missing} does not exist: check the path" in err
    run_build(spec, out, workers=1, progress=False)  # resume: nothing to render, the log is appended to
    again = _events(out)
    assert again[:3] == events and [e["event"] for e in again[3:]] == ["scene_failed"]


def test_max_failures_0_stops_before_ray_at_a_missing_scene(tmp_path, no_ray, capsys):
    missing, out = str(tmp_path / "missing.glb"), tmp_path / "out"
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps({**TINY, "scenes": [missing, GOOD]}))  # JSON is YAML
    assert main(["build", str(cfg), "--out", str(out), "--max-failures", "0"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"matrix-pano build: stopped: more than --max-failures 0 failed: 0 clips and 1 of 2 scenes "
                       f"failed (first: scene {missing}: SceneError: mesh file {missing} does not exist: check the "
                       f"path); 0 of 0 planned clips committed; see {out / 'failures.parquet'}; fix the cause and "
                       f"rerun to continue")
    assert f"build: {GOOD}: not planned" in err
    assert json.loads((out / "manifest.json").read_text())["counts"]["stopped"] is True
    assert [e["event"] for e in _events(out)] == ["scene_failed"]


def test_max_failures_stops_dispatching_after_a_scene_fails_to_load(tmp_path, local_ray):
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF\x02\x00\x00\x00garbage")  # passes the cheap check, fails in the worker
    spec = parse_job_spec({**TINY, "scenes": [str(broken), GOOD]})
    counts = run_build(spec, tmp_path / "out", workers=1, progress=False, max_failures=0)
    assert counts["stopped"] and counts["scenes_failed"] == 1 and counts["clips_planned"] == 0
    assert committed_shards(tmp_path / "out") == []
    counts = run_build(spec, tmp_path / "out", workers=1, progress=False)  # without the bound: the rest is built
    assert counts["clips_committed"] == 1 and not counts["stopped"]


def test_max_failures_must_not_be_negative(tmp_path):
    from dataset.jobs.build import BuildError

    with pytest.raises(BuildError, match="--max-failures must be at least 0"):
        run_build(parse_job_spec({**TINY, "scenes": [GOOD]}), tmp_path, max_failures=-1)


def test_status_line_names_failures_parquet_only_when_it_exists(tmp_path, capsys):
    counts = {"clips_committed": 0, "clips_planned": 0, "clips_failed": 0, "scenes": 1, "scenes_failed": 0}
    assert build_status(counts, tmp_path) == 3
    assert "failures.parquet" not in capsys.readouterr().err


def test_clip_retry_then_failure_is_logged_and_stops_dispatching(tmp_path):
    """The driver's bookkeeping for a clip that fails twice (max_attempts 2), without Ray: a saved plan of two
    clips is read, the first attempt's failure is a retry, the second a failure that exceeds --max-failures 0."""
    import numpy as np

    from dataset.jobs.build import _Driver, _plan_path
    from dataset.jobs.tasks import PlannedClip, ScenePlan

    spec = parse_job_spec({**TINY, "scenes": [GOOD], "trajectories_per_scene": 2})
    poses = np.repeat(np.eye(4)[None], 3, axis=0)
    plan = ScenePlan(GOOD, "s0", [PlannedClip(f"c{i}", f"t{i}", poses) for i in range(2)])
    path = _plan_path(tmp_path, GOOD)
    path.parent.mkdir()
    path.write_text(json.dumps(plan.to_json()))
    driver = _Driver(spec, tmp_path, False, {}, max_failures=0)
    assert len(driver.queue) == 2
    driver.states["c0"].attempts = 1
    driver.fail_or_retry("c0", "RuntimeError: boom", "w1")
    assert len(driver.queue) == 3 and not driver.halted
    driver.states["c0"].attempts = 2
    driver.fail_or_retry("c0", "RuntimeError: boom again", "w2")
    assert driver.halted and not driver.queue and list(driver.failures) == ["c0"]
    assert [(e["event"], e["clip_id"], e["worker"], e["attempt"], e["error"]) for e in _events(tmp_path)] == [
        ("retry", "c0", "w1", 1, "RuntimeError: boom"), ("failed", "c0", "w2", 2, "RuntimeError: boom again")]
    assert driver.summary() == [f"build: {GOOD}: 0/2 clips committed, 1 failed",
                                f"build: failed: clip c0 of {GOOD}: RuntimeError: boom again",
                                "build: stopped early: 1 failures exceed --max-failures 0"]
