"""The matrix-pano command line: render, scenes, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dataset.cli import main
from dataset.core.conventions import pose_from_heading


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataset.cli", *args], capture_output=True, text=True, timeout=120)


def test_render_single_pose(tmp_path):
    pose = pose_from_heading((0.0, 0.0, 1.5), 0.0)
    c2w = " ".join(str(x) for x in pose.reshape(-1))
    assert main(["render", "procedural:room:4x6x3", "--c2w", c2w, "--width", "128", "--out", str(tmp_path)]) == 0
    rgb = np.asarray(Image.open(tmp_path / "rgb.png"))
    depth = np.load(tmp_path / "depth.npy")
    assert rgb.shape == (64, 128, 3) and rgb.dtype == np.uint8
    assert depth.shape == (64, 128) and depth.dtype == np.float32
    np.testing.assert_allclose(depth[32, 64], 2.0, rtol=2e-3)  # forward wall of the 4 m wide room


def test_render_trajectory_writes_numbered_frames(tmp_path):
    poses = [pose_from_heading((0.0, 0.1 * i, 1.5), 0.3 * i).reshape(-1).tolist() for i in range(3)]
    traj = tmp_path / "traj.json"
    traj.write_text(json.dumps({"c2w": poses}))
    out = tmp_path / "out"
    assert main(["render", "procedural:room:4x6x3", "--trajectory", str(traj), "--width", "64",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "depth_00000.npy", "depth_00001.npy", "depth_00002.npy", "rgb_00000.png", "rgb_00001.png", "rgb_00002.png"]


@pytest.mark.parametrize("args, message", [
    (["render", "procedural:nope:1", "--out", "x"], "procedural"),
    (["render", "procedural:indoor:abc", "--out", "x"], "seed"),
    (["render", "no/such/file.glb", "--out", "x"], "no/such/file.glb"),
    (["render", "scene.xyz", "--out", "x"], "scene.xyz"),
    (["render", "procedural:room:4x6x3", "--c2w", "1 2 3", "--out", "x"], "16 numbers"),
    (["render", "procedural:room:4x6x3", "--width", "101", "--out", "x"], "2 x height"),
    (["render", "procedural:room:4x6x3", "--supersample", "5", "--out", "x"], "supersample"),
    (["render", "procedural:room:4x6x3", "--trajectory", "no/such/traj.json", "--out", "x"], "does not exist"),
])
def test_bad_input_gives_one_line_error(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "dataset.cli", *args], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    err_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(err_lines) == 1 and message in err_lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_broken_files_give_one_line_error(tmp_path):
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    traj = tmp_path / "traj.json"
    traj.write_text("{not json")
    for args in (["render", str(broken), "--out", str(tmp_path / "o")],
                 ["render", "procedural:room:4x6x3", "--trajectory", str(traj), "--out", str(tmp_path / "o")]):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "error:" in result.stderr


def test_scenes_lists_generators():
    result = run_cli("scenes")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "procedural:indoor:0" in names and "procedural:outdoor:0" in names


def test_help_lists_every_subcommand_with_a_description(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "Matrix-Pano" in text  # plain text, not reStructuredText
    listed = [line.split()[0] for line in text.split("COMMAND\n", 2)[2].splitlines() if line.startswith("    ")
              and not line.startswith("     ")]
    names = ["render", "sample", "build", "plan", "verify", "stats", "annotate", "review", "export", "unreal",
             "guidance", "generate", "cache-latents", "train-video", "train-lrm", "eval-video", "reconstruct",
             "eval-recon", "view", "scenes", "demo"]
    assert listed == names
    for name in names:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        usage, description = capsys.readouterr().out.split("\n\n", 2)[:2]
        assert usage.startswith(f"usage: matrix-pano {name}") and len(description) > 20, name


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"matrix-pano {version('matrix-pano')}"


@pytest.mark.parametrize("args", [["render", "procedural:room:4x4x3"], ["sample", "procedural:room:4x4x3"],
                                  ["guidance", "--panorama", "p.png", "--depth", "d.npy"], ["export", "."],
                                  ["annotate", "."]])
def test_an_existing_file_as_out_is_one_line_before_any_work(tmp_path, capsys, args):
    (tmp_path / "taken").write_text("mine")
    assert main([*args, "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an existing file, not a folder" in err
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("args", [["render", "procedural:room:4x4x3", "--out", "s3://bucket/prefix"],
                                  ["sample", "gs://bucket/scene.glb", "--out", "o"],
                                  ["guidance", "--panorama", "s3://b/p.png", "--depth", "d.npy", "--out", "o"]])
def test_urls_where_a_local_path_is_needed_are_refused_not_made_local_folders(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes a local path, not a URL" in err
    assert list(tmp_path.iterdir()) == []  # no local folder named s3: or gs:


def test_broken_yaml_names_the_file_and_line(tmp_path, capsys):
    (tmp_path / "job.yaml").write_text("scenes: [procedural:room:4x4x3\nframes_per_clip: 9\n")
    assert main(["build", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'job.yaml'}:2:" in err and "<unicode string>" not in err and err.count("\n") == 1


def test_flag_defaults_are_the_job_spec_defaults():
    from dataset.cli import build_parser
    from dataset.core.jobspec import EmbeddedRendererSpec, JobSpec, SamplingSpec
    from inference.guidance import DEFAULT_THRESHOLD

    parser = build_parser()
    spec = JobSpec(scenes=["procedural:indoor:0"])
    sample = parser.parse_args(["sample", "procedural:indoor:0", "--out", "x"])
    assert (sample.count, sample.frames, sample.fps, sample.seed) == (
        spec.trajectories_per_scene, spec.frames_per_clip, spec.fps, spec.seed)
    assert (sample.step, sample.heading) == (SamplingSpec().step, SamplingSpec().heading)
    render = parser.parse_args(["render", "procedural:indoor:0", "--out", "x"])
    assert (render.width, render.supersample) == (spec.resolution[0], EmbeddedRendererSpec().supersample)
    assert parser.parse_args(["demo"]).width == spec.resolution[0]
    guidance = parser.parse_args(["guidance", "--out", "x"])
    assert (guidance.frames, guidance.fps, guidance.threshold) == (spec.frames_per_clip, spec.fps, DEFAULT_THRESHOLD)
    ingest = parser.parse_args(["unreal", "ingest", "frames", "--trajectories", "t.json", "--out", "x"])
    assert ingest.fps == spec.fps


def test_render_reads_a_sample_output(tmp_path):
    poses = [pose_from_heading((0.0, 0.1 * i, 1.5), 0.3 * i).reshape(-1).tolist() for i in range(2)]
    traj = tmp_path / "trajectories.json"
    traj.write_text(json.dumps({"scene": "procedural:room:4x6x3", "trajectories": [{"id": "t0", "c2w": poses}]}))
    out = tmp_path / "out"
    assert main(["render", "procedural:room:4x6x3", "--trajectory", str(traj), "--width", "32",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["depth_00000.npy", "depth_00001.npy", "rgb_00000.png",
                                                     "rgb_00001.png"]


def test_unreal_ingest_adds_a_sampled_trajectory_as_a_clip_of_its_scene(tmp_path, capsys):
    pytest.importorskip("OpenEXR")
    from mrq_helpers import write_mrq_frames

    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.worker import plan_scene
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.store.reader import PanoDataset

    spec = parse_job_spec({"scenes": ["procedural:room:4x6x3"], "trajectories_per_scene": 1, "frames_per_clip": 3})
    scene, plan = plan_scene(spec, "procedural:room:4x6x3")
    c2w = plan.clips[0].c2w
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        frames = r.render(c2w, 64)
    mrq = write_mrq_frames(tmp_path / "mrq", frames.rgb, frames.depth)
    traj = tmp_path / "trajectories.json"
    traj.write_text(json.dumps({"scene": "procedural:room:4x6x3", "scene_id": "scene-from-the-file",
                                "trajectories": [{"id": "t0", "c2w": c2w.reshape(-1, 16).tolist()}]}))
    out = tmp_path / "ds"
    assert main(["unreal", "ingest", str(mrq), "--trajectories", str(traj), "--out", str(out)]) == 0
    clip = next(PanoDataset(out).clips())
    assert (clip.row["scene_id"], clip.row["trajectory_id"]) == ("scene-from-the-file", "t0")
    assert np.allclose(clip.c2w, c2w)
    capsys.readouterr()
    assert main(["unreal", "ingest", str(mrq), "--trajectories", str(traj), "--index", "3", "--out", str(out)]) == 2
    assert f"{traj} has no trajectory 3" in capsys.readouterr().err
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"c2w": c2w.reshape(-1, 16).tolist()}))
    assert main(["unreal", "ingest", str(mrq), "--trajectories", str(bare), "--out", str(out)]) == 2
    assert f"{bare} has no trajectory 0" in capsys.readouterr().err
