"""``matrix-pano reconstruct --from-clip`` on a rendered dataset clip (CPU, reference rasterizer, small crops): the
output folder, held-out evaluation against both baselines, and ``eval-recon`` recomputing the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from recon_helpers import commit_clip

from dataset.cli import main
from dataset.core.conventions import load_matrix3d_cameras, pose_from_heading

FRAMES = 11
SCENE = "procedural:room:6x8x3"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """One 11-frame 512x256 clip walking through a procedural room."""
    c2w = np.stack([pose_from_heading((-0.5 + 0.06 * i, -0.4 + 0.04 * i, 1.6), math.radians(20 + 3 * i))
                    for i in range(FRAMES)])
    return commit_clip(tmp_path_factory.mktemp("recon_dataset"), SCENE, c2w)


@pytest.mark.slow
def test_reconstruct_a_dataset_clip_then_eval_recon(dataset, tmp_path, capsys):
    from inference.ply import load_ply

    out = tmp_path / "recon"
    config = tmp_path / "recon.yaml"
    config.write_text("max_points: 20000\neval_every: 2\n")
    status = main(["reconstruct", "--from-clip", str(dataset), "walk", "--config", str(config), "--iterations",
                   "200", "--crop-size", "32", "--backend", "torch", "--quiet", "--out", str(out)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0 and line["out"] == str(out)
    m = json.loads((out / "metrics.json").read_text())
    print_figures(m)
    assert m["keyframes"] == [0, 5, 10] and m["held_out"] == [1, 3, 6, 8]
    assert m["views"] == {"train": 36, "eval": 48, "off_trajectory": 48}
    assert m["lpips"] is None and "lpips" in m["missing"] and "off_trajectory" not in m["missing"]
    for baseline in ("init", "mesh"):
        assert m["psnr"] >= m["baselines"][baseline]["psnr"] + 3.0, baseline
    # four poses 30 cm beside held-out frames, rendered by the room itself: novel views no frame saw
    off = m["off_trajectory"]
    assert off["views"] == 48 and len(off["poses"]) == 4
    for baseline in ("init", "mesh"):
        assert off["psnr"] > off["baselines"][baseline]["psnr"], baseline
    assert set(m["seconds"]) == {"views", "init", "optimise", "evaluate", "total"}
    means = load_ply(out / "scene.ply").means.numpy()
    assert len(means) == m["gaussians"]
    assert_on_surfaces(means, SCENE)
    assert load_matrix3d_cameras(out / "cameras.json").shape == (FRAMES, 4, 4)
    assert sorted(p.name for p in (out / "keyframes").iterdir()) == ["0000.png", "0005.png", "0010.png"]
    assert len(list((out / "eval").glob("f*_pred.png"))) == 48 and (out / "eval" / "f0001_y000_p+00_mesh.png").is_file()
    assert len(list((out / "eval").glob("o*_gt.png"))) == 48

    from lpips_helpers import write_lpips

    assert main(["eval-recon", str(out), "--lpips-weights", str(write_lpips(tmp_path / "lpips"))]) == 0
    again = json.loads((out / "eval" / "metrics.json").read_text())
    assert 0 < again["lpips"] < 1 and "lpips" not in again["missing"]
    assert again["off_trajectory"]["baselines"]["mesh"]["lpips"] > again["off_trajectory"]["lpips"]
    assert again["psnr"] == pytest.approx(m["psnr"], abs=1e-9) and again["views"] == 48
    assert again["baselines"]["mesh"]["ssim"] == pytest.approx(m["baselines"]["mesh"]["ssim"], abs=1e-9)
    assert again["off_trajectory"]["psnr"] == pytest.approx(off["psnr"], abs=1e-9)


@pytest.mark.slow
def test_reconstruct_with_the_feed_forward_model_then_view_it(dataset, tmp_path, capsys):
    """``--method lrm`` with the tiny model and the tiny Wan VAE: the same outputs as ``opt``, so eval-recon and
    the viewer take them unchanged."""
    from inference.viewer import serve

    (tmp_path / "small.yaml").write_text("max_points: 5000\neval_every: 4\n")
    out = tmp_path / "lrm"
    assert main(["reconstruct", "--from-clip", str(dataset), "walk", "--method", "lrm", "--checkpoint", "tiny",
                 "--vae", "tiny", "--config", str(tmp_path / "small.yaml"), "--crop-size", "32", "--backend",
                 "torch", "--quiet", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "lrm" and m["frames_used"] == 9 and m["checkpoint"] == "tiny"
    assert m["gaussians"] == 5 * 128 * 256  # frames 0, 2, ..., 8 at half the 512x256 resolution
    assert {"encode", "predict", "evaluate"} <= set(m["seconds"]) and "optimise" not in m["seconds"]
    assert set(m["baselines"]) == {"init", "mesh", "mean_colour"} and line["baselines"]["mean_colour"] is not None
    assert np.isfinite(m["psnr"]) and m["off_trajectory"]["views"] == 48
    again = eval_again(out)
    assert again["baselines"]["mean_colour"]["psnr"] == pytest.approx(m["baselines"]["mean_colour"]["psnr"])
    viewer = serve(out, port=0)
    viewer.stop()
    capsys.readouterr()
    assert main(["reconstruct", "--from-clip", str(dataset), "walk", "--method", "lrm", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--method lrm needs --checkpoint" in capsys.readouterr().err


def eval_again(out: Path) -> dict:
    """``matrix-pano eval-recon out``'s table."""
    assert main(["eval-recon", str(out)]) == 0
    return json.loads((out / "eval" / "metrics.json").read_text())


def test_off_trajectory_poses_step_aside_into_free_space_only():
    from dataset.core.conventions import equirect_directions
    from inference.reconstruct import off_trajectory_poses

    c2w = pose_from_heading((1.0, 2.0, 1.5), 0.0)[None]  # looking along +X: the camera's right is -Y
    rays = equirect_directions(256, 128, dtype=np.float64) @ c2w[0, :3, :3].T
    wall_right = np.where(rays @ np.array([0.0, -1.0, 0.0]) > 0.9, 0.4, 10.0)[None]
    moved = off_trajectory_poses(wall_right, c2w, [0], 0.3)
    np.testing.assert_allclose(moved[0, :3, 3], [1.0, 2.3, 1.5])  # the wall 0.4 m to the right: it steps left
    np.testing.assert_allclose(moved[0, :3, :3], c2w[0, :3, :3])
    np.testing.assert_allclose(off_trajectory_poses(np.full((1, 128, 256), 10.0), c2w, [0], 0.3)[0, :3, 3],
                               [1.0, 1.7, 1.5])  # free everywhere: the right first
    corridor = np.where(np.abs(rays[..., 1]) > 0.9, 0.4, 10.0)[None]
    assert off_trajectory_poses(corridor, c2w, [0], 0.3).shape == (0, 4, 4)


def test_off_trajectory_views_say_why_they_are_missing(dataset):
    from inference.reconstruct import ReconConfig, clip_inputs, render_off_trajectory

    frames, depth, c2w, source = clip_inputs(dataset, "walk")
    cfg = ReconConfig(off_trajectory_views=2)
    off = render_off_trajectory(source, frames, depth, c2w, cfg)
    assert off.missing is None and off.rgb.shape == (2, 256, 512, 3) and off.c2w.shape == (2, 4, 4)
    cases = {"unreal": {"renderer": "unreal"}, "does not load here": {"scene": str(dataset / "absent.glb")},
             "not the scene": {"scene": "procedural:room:5x5x3"}}
    for reason, change in cases.items():
        assert reason in render_off_trajectory({**source, **change}, frames, depth, c2w, cfg).missing
    assert render_off_trajectory(source, frames, depth, c2w, ReconConfig(off_trajectory_views=0)).rgb is None


def test_bad_inputs_are_one_line_errors(dataset, tmp_path, capsys):
    assert main(["reconstruct", "--from-clip", str(dataset), "nope", "--out", str(tmp_path / "r")]) == 2
    assert "no committed clip 'nope'" in capsys.readouterr().err
    assert main(["eval-recon", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_reconstruct_a_generated_video_with_estimated_depth(dataset, tmp_path, capsys):
    """The tiny video model's output (generate --from-clip), its depth from the tiny random-weight estimator through
    the real loading and alignment code, frame 0 aligned to the clip's own depth, its training crops upscaled by
    the tiny super-resolution model."""
    from dataset.store.reader import PanoDataset
    from inference.wan import save_tiny

    gen = tmp_path / "gen"
    assert main(["generate", "--from-clip", str(dataset), "walk", "--frames", "9", "--prompt", "a room", "--model",
                 str(save_tiny(tmp_path / "wan")), "--steps", "2", "--quiet", "--out", str(gen)]) == 0
    np.save(tmp_path / "depth0.npy", next(PanoDataset(dataset).clips()).depth()[0])
    (tmp_path / "small.yaml").write_text("max_points: 3000\neval_every: 3\n")
    out = tmp_path / "recon"
    assert main(["reconstruct", "--video", str(gen / "video.mp4"), "--cameras", str(gen / "cameras.json"),
                 "--depth-model", "tiny", "--reference-depth", str(tmp_path / "depth0.npy"), "--config",
                 str(tmp_path / "small.yaml"), "--iterations", "20", "--crop-size", "16", "--super-resolution", "tiny",
                 "--backend", "torch", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    assert m["keyframes"] == [0, 5] and m["source"]["depth_model"] == "tiny" and np.isfinite(m["psnr"])
    assert m["off_trajectory"] is None and "no scene" in m["missing"]["off_trajectory"]
    assert m["config"]["super_resolution"] == "tiny" and m["seconds"]["super_resolution"] > 0
    assert (out / "scene.ply").is_file() and m["gaussians"] > 0
    assert main(["reconstruct", "--video", str(gen / "video.mp4"), "--cameras", str(gen / "cameras.json"),
                 "--out", str(tmp_path / "r2")]) == 2
    assert "needs its depth" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.openarena
def test_reconstruct_an_openarena_clip(tmp_path, capsys):
    """A real textured level: an 11-frame walk from oa_dm1's spawn point along its heading, 5 cm per frame."""
    from dataset.core.conventions import heading_of
    from dataset.core.scene import default_pose
    from dataset.sources import load_scene
    from dataset.sources.quake3 import find_openarena_maps
    from inference.ply import load_ply

    if "oa_dm1" not in {name for name, _ in find_openarena_maps()}:
        pytest.skip("openarena-data is not installed (apt-get install openarena-data)")
    scene = "openarena:oa_dm1"
    start = default_pose(load_scene(scene))
    heading = float(heading_of(start))
    ahead = np.array([math.cos(heading), math.sin(heading), 0.0])
    c2w = np.stack([pose_from_heading(start[:3, 3] + 0.05 * i * ahead, heading) for i in range(FRAMES)])
    data = commit_clip(tmp_path / "data", scene, c2w)
    (tmp_path / "recon.yaml").write_text("max_points: 20000\neval_every: 2\n")
    out = tmp_path / "recon"
    assert main(["reconstruct", "--from-clip", str(data), "walk", "--config", str(tmp_path / "recon.yaml"),
                 "--iterations", "400", "--crop-size", "32", "--backend", "torch", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    print_figures(m)
    for baseline in ("init", "mesh"):
        assert m["psnr"] >= m["baselines"][baseline]["psnr"] + 3.0, baseline
    off = m["off_trajectory"]
    assert off is not None, m["missing"]
    for baseline in ("init", "mesh"):  # 30 cm beside the walk: novel views, harder than the held-out frames
        assert off["psnr"] > off["baselines"][baseline]["psnr"], baseline
    assert_on_surfaces(load_ply(out / "scene.ply").means.numpy(), scene)


def print_figures(m: dict) -> None:
    """The figures a reader of the test log wants (pytest -s)."""
    off = m["off_trajectory"]
    print({k: m[k] for k in ("psnr", "ssim", "baselines", "gaussians", "seconds")},
          {"off_trajectory": off and {k: off[k] for k in ("psnr", "ssim", "baselines")}})


def assert_on_surfaces(means: np.ndarray, scene: str, within: float = 0.05, share: float = 0.8) -> None:
    """At least ``share`` of (a sample of) the Gaussian centres lie within ``within`` metres of the scene's own
    triangles (trimesh's exact closest-point query)."""
    import trimesh

    from dataset.sources import load_scene

    loaded = load_scene(scene)
    mesh = trimesh.Trimesh(loaded.vertices, loaded.faces, process=False)
    sample = means[np.random.default_rng(0).choice(len(means), min(2000, len(means)), replace=False)]
    near = trimesh.proximity.closest_point(mesh, sample)[1] < within
    assert near.mean() > share, f"only {near.mean():.2f} of the centres lie within {within} m of {scene}'s triangles"

