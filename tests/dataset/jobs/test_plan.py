"""``matrix-pano plan`` (counts equal to the build's, nothing written), ``build --limit`` (the first clips of the
plan, the rest on a rerun, each once) and the checks a build does before Ray starts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dataset.cli import main
from dataset.core.jobspec import parse_job_spec
from dataset.jobs.build import run_build
from dataset.jobs.plan import plan_job, scene_problem
from dataset.jobs.worker import plan_scene
from dataset.runtime.failures import read_failures
from dataset.store.shards import committed_clip_ids, committed_shards

TINY = {"scenes": ["procedural:room:4x6x3", "procedural:room:6x8x3"], "trajectories_per_scene": 2,
        "frames_per_clip": 5, "resolution": [64, 32], "output": {"shard_size_mb": 0.001, "rows_per_group": 1}}
"""Four tiny clips, one shard each."""


def _config(tmp_path, **keys) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({**TINY, **keys}))  # JSON is YAML
    return str(path)


def test_plan_counts_are_the_builds_and_plan_writes_nothing(tmp_path, monkeypatch, capsys, local_ray):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cfg = _config(cwd)
    monkeypatch.chdir(cwd)
    assert main(["plan", cfg, "--json", "--workers", "2"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [p.name for p in cwd.rglob("*")] == ["job.yaml"], "plan wrote nothing"
    assert [s["clips"] for s in plan["scenes"]] == [2, 2] and plan["clips"] == 4 and plan["frames"] == 20
    assert all(s["error"] is None and s["seconds_per_frame"] > 0 and s["bytes_per_clip"] > 0 for s in plan["scenes"])
    assert plan["workers"] == 2 and plan["estimated_seconds"] > 0 and plan["estimated_bytes"] > 0

    out = tmp_path / "out"
    counts = run_build(parse_job_spec(json.loads(Path(cfg).read_text())), out, workers=2, progress=False)
    assert counts["clips_planned"] == counts["clips_committed"] == plan["clips"]
    assert sum(m["frames"] for _, m in committed_shards(out)) == plan["frames"]


def test_plan_reports_a_bad_scene_and_goes_on(capsys):
    spec = parse_job_spec({**TINY, "scenes": ["procedural:room:4x6x3", "procedural:castle:0"]})
    plan = plan_job(spec, calibrate=False)
    assert plan.clips == 2 and plan.scenes[0].error is None and plan.estimated_seconds is None
    assert "is not a procedural scene" in plan.scenes[1].error


@pytest.mark.slow
def test_limit_builds_the_first_clips_then_a_rerun_the_rest_each_once(tmp_path, local_ray, capsys):
    from dataset.cli.datasets import build_status

    spec = parse_job_spec(TINY)
    order = [c.clip_id for s in spec.scenes for c in plan_scene(spec, s)[1].clips]
    out = tmp_path / "out"
    counts = run_build(spec, out, workers=2, progress=False, limit=1)
    assert counts["clips_planned"] == counts["clips_committed"] == 1 and build_status(counts, out) == 0
    assert committed_clip_ids(out) == {order[0]}
    assert len(list((out / "plans").iterdir())) == 1, "only the scene it needs is planned"
    (first, marker), = committed_shards(out)
    first_bytes = first.read_bytes()

    counts = run_build(spec, out, workers=2, progress=False, limit=3)
    assert counts["clips_planned"] == 3 and committed_clip_ids(out) == set(order[:3])
    counts = run_build(spec, out, workers=2, progress=False)
    assert counts["clips_planned"] == counts["clips_committed"] == 4 and build_status(counts, out) == 0
    ids = [c for _, m in committed_shards(out) for c in m["clip_ids"]]
    assert sorted(ids) == sorted(order), "every planned clip exactly once"
    assert first.read_bytes() == first_bytes and committed_shards(out)[0][1] == marker, "the first clip unchanged"
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == spec.config_hash()
    again = run_build(spec, out, workers=2, progress=False, limit=1)
    assert again["clips_planned"] == 1 and again["clips_committed"] == 4 and build_status(again, out) == 0
    assert "partial" not in capsys.readouterr().err


@pytest.mark.parametrize("case", ["under a file", "another spec", "missing binary"])
def test_bad_output_or_renderer_is_2_with_one_line_before_ray(tmp_path, no_ray, capsys, case):
    (tmp_path / "file").write_text("not a folder")
    out, keys = tmp_path / "out", {}
    if case == "under a file":
        out = tmp_path / "file" / "out"
    elif case == "another spec":
        out.mkdir()
        (out / "manifest.json").write_text(json.dumps({"config_hash": "0123456789abcdef"}))
    else:
        keys = {"renderer": {"kind": "unreal", "binary": str(tmp_path / "no-game.sh"), "map": "Demo"}}
    start = time.perf_counter()
    assert main(["build", _config(tmp_path, **keys), "--out", str(out)]) == 2
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("matrix-pano build: error: "), err
    assert {"under a file": "not writable", "another spec": "different job spec",
            "missing binary": "no-game.sh does not exist"}[case] in err[0]
    assert seconds < 2, f"refused after {seconds:.1f} s"


def test_missing_scene_fails_before_ray_and_is_recorded(tmp_path, no_ray, capsys):
    missing = str(tmp_path / "missing.glb")
    out = tmp_path / "out"
    assert main(["build", _config(tmp_path, scenes=[missing]), "--out", str(out)]) == 3
    assert capsys.readouterr().err.splitlines()[-1].startswith("matrix-pano build: nothing was built")
    (row,) = read_failures(out)
    assert row["scene"] == missing and row["error"] == f"SceneError: mesh file {missing} does not exist: check the path"


def test_scene_problem_is_found_without_loading(tmp_path):
    assert scene_problem("procedural:indoor:0") is None and scene_problem("procedural:room:4x6x3") is None
    assert "is not a procedural scene" in scene_problem("procedural:castle:0")
    assert "unknown source prefix 'nope:'" in scene_problem("nope:thing")
    assert "does not exist" in scene_problem(str(tmp_path / "a.glb"))
    assert "does not exist" in scene_problem(str(tmp_path / "maps.pk3") + ":dm1")
    assert "up axis" in scene_problem(str(tmp_path / "a.glb") + "?up=w")
    assert scene_problem(str(tmp_path / "a.glb"), files=False) is None, "left to the workers of a cluster"


@pytest.mark.openarena
def test_scene_problem_of_openarena_maps():
    from dataset.sources.quake3 import find_openarena_maps

    maps = find_openarena_maps()
    if not maps:
        pytest.skip("openarena-data is not installed (apt-get install openarena-data)")
    assert scene_problem(f"openarena:{maps[0][0]}") is None
    assert "unknown map 'no_such_map'" in scene_problem("openarena:no_such_map")
