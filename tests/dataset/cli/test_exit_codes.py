"""Exit statuses of ``matrix-pano build`` (0 all built, 1 partial, 2 bad input, 3 nothing built) and the
bounds of numeric spec keys and flags, checked before Ray starts."""

from __future__ import annotations

import json

import pytest

from dataset.cli import main
from dataset.cli.datasets import build_status
from dataset.runtime.failures import scene_failure, write_failures

TINY = {"trajectories_per_scene": 1, "frames_per_clip": 3, "resolution": [64, 32]}
GOOD = "procedural:room:4x6x3"


def _spec(tmp_path, name: str, **keys) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({**TINY, **keys}))  # JSON is YAML
    return str(path)


def test_build_all_committed_is_0_and_so_is_its_resume(tmp_path, local_ray, capsys):
    cfg, out = _spec(tmp_path, "ok", scenes=[GOOD]), str(tmp_path / "out")
    assert main(["build", cfg, "--out", out, "--workers", "1"]) == 0
    assert main(["build", cfg, "--out", out, "--workers", "1"]) == 0, "a rerun with everything committed"
    assert "partial" not in capsys.readouterr().err


def test_build_with_one_missing_scene_is_partial_1(tmp_path, local_ray, capsys):
    missing = str(tmp_path / "missing.glb")
    cfg, out = _spec(tmp_path, "partial", scenes=[GOOD, missing]), tmp_path / "out"
    assert main(["build", cfg, "--out", str(out), "--workers", "1"]) == 1
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("matrix-pano build: partial: 1 of 1 planned clips committed, 0 clips and 1 of 2 "
                              "scenes failed"), summary
    assert f"scene {missing}" in summary and str(out / "failures.parquet") in summary


def test_build_of_only_a_missing_scene_is_3(tmp_path, local_ray, capsys):
    missing = str(tmp_path / "missing.glb")
    cfg, out = _spec(tmp_path, "none", scenes=[missing]), tmp_path / "out"
    assert main(["build", cfg, "--out", str(out), "--workers", "1"]) == 3
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary == ("matrix-pano build: nothing was built: 0 clips and 1 of 1 scenes failed (first: scene "
                       f"{missing}: SceneError: mesh file {missing} does not exist: check the path); see "
                       f"{out / 'failures.parquet'}")


def _counts(committed: int, planned: int, failed: int, scenes: int = 1, scenes_failed: int = 0) -> dict:
    return {"clips_committed": committed, "clips_planned": planned, "clips_failed": failed, "scenes": scenes,
            "scenes_failed": scenes_failed}


def _clip_failure(i: int) -> dict:
    return {"clip_id": f"c{i}", "scene": GOOD, "scene_id": "s", "trajectory_id": f"t{i}", "attempts": 2,
            "error": "RuntimeError: renderer\nlost"}


def test_build_status_of_failed_clips(tmp_path, capsys):
    write_failures(tmp_path, {f"c{i}": _clip_failure(i) for i in range(2)})
    assert build_status(_counts(0, 2, 2), tmp_path) == 3, "every clip failed"
    assert capsys.readouterr().err.strip() == (
        f"matrix-pano build: nothing was built: 2 clips and 0 of 1 scenes failed (first: clip c0 of {GOOD}: "
        f"RuntimeError: renderer lost); see {tmp_path / 'failures.parquet'}")
    assert build_status(_counts(1, 3, 2), tmp_path) == 1, "some clips failed"
    assert "partial: 1 of 3 planned clips committed, 2 clips and 0 of 1 scenes failed" in capsys.readouterr().err
    assert build_status(_counts(3, 3, 0), tmp_path / "elsewhere") == 0
    assert capsys.readouterr().err == ""


def test_build_status_of_a_scene_that_yields_no_clip_is_3(tmp_path, capsys):
    assert build_status(_counts(0, 0, 0), tmp_path) == 3
    assert "nothing was built: no scene yielded a clip" in capsys.readouterr().err
    write_failures(tmp_path, {"scene:x.glb": scene_failure("x.glb", "SceneError: x.glb does not exist")})
    assert build_status(_counts(0, 0, 0, scenes=1, scenes_failed=1), tmp_path) == 3
    assert "(first: scene x.glb: SceneError: x.glb does not exist)" in capsys.readouterr().err


@pytest.mark.parametrize("keys, message", [
    ({"fps": ".inf"}, "fps: Input should be a finite number"),
    ({"fps": ".nan"}, "fps: Input should be a finite number"),
    ({"fps": "-.inf"}, "fps: Input should be a finite number"),
    ({"sampling": "{step: .inf}"}, "sampling.step: Input should be a finite number"),
    ({"renderer": "{kind: unreal, endpoints: ['localhost:9000'], timeout_s: .inf}"},
     "renderer.timeout_s: Input should be a finite number"),
    ({"resolution": "[100000, 50000]"},
     "resolution: width 100000 is above the maximum 8192; raise limits.max_width if this machine has the memory"),
    ({"frames_per_clip": "5000"}, "frames_per_clip: 5000 is above the maximum 2000; raise limits.max_frames_per_clip"),
    ({"trajectories_per_scene": "100000000"},
     "trajectories_per_scene: 100000000 is above the maximum 10000; raise limits.max_trajectories_per_scene"),
    ({"seed": str(2**63)}, "seed: Input should be less than 9223372036854775808"),
    ({"output": "{shard_size_mb: 1.0e+9}"}, "output.shard_size_mb: Input should be less than or equal to 16384"),
])
def test_out_of_range_spec_is_2_with_one_line_before_ray_starts(tmp_path, no_ray, capsys, keys, message):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("scenes: [procedural:indoor:0]\n" + "".join(f"{k}: {v}\n" for k, v in keys.items()))
    assert main(["build", str(cfg), "--out", str(tmp_path / "x"), "--workers", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"matrix-pano build: error: job spec {cfg}: ") and message in err[0], err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, message", [
    (["render", GOOD, "--width", "100000", "--out", "x"], "argument --width: Input should be less than or equal "
                                                            "to 8192, got '100000'"),
    (["demo", "--width", "0"], "argument --width: Input should be greater than or equal to 2"),
    (["sample", GOOD, "--count", "0", "--out", "x"], "argument --count: Input should be greater than or equal to 1"),
    (["sample", GOOD, "--count", "100000000", "--out", "x"], "argument --count: Input should be less than or equal "
                                                               "to 10000"),
    (["sample", GOOD, "--frames", "1", "--out", "x"], "argument --frames: Input should be greater than or equal to 2"),
    (["sample", GOOD, "--step", "inf", "--out", "x"], "argument --step: Input should be a finite number"),
    (["sample", GOOD, "--fps", "nan", "--out", "x"], "argument --fps: Input should be a finite number"),
    (["sample", GOOD, "--seed", "-1", "--out", "x"], "argument --seed: Input should be greater than or equal to 0"),
    (["build", "s.yaml", "--out", "x", "--workers", "0"], "argument --workers: Input should be greater than or equal "
                                                          "to 1"),
    (["annotate", "d", "--out", "x", "--workers", "1e9"], "argument --workers: Input should be a valid integer"),
    (["guidance", "--out", "x", "--movement", "2"], "argument --movement: Input should be less than or equal to 1"),
    (["guidance", "--out", "x", "--frames", "5000"], "argument --frames: Input should be less than or equal to 2000"),
    (["review", "d", "--port", "70000"], "argument --port: Input should be less than or equal to 65535"),
    (["unreal", "standin", GOOD, "--port", "-1"], "argument --port: Input should be greater than or equal to 0"),
    (["unreal", "ingest", "f", "--trajectories", "t", "--out", "x", "--fps", "0"],
     "argument --fps: Input should be greater than 0"),
])
def test_out_of_range_flags_are_argparse_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0], err
