"""End to end: sampled trajectories stand at eye height on walkable floor, avoid every proxy box, use
stairs, are deterministic, and degrade to a clear note on scenes with no room to walk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sampling_scenes import two_storey_scene
from scene_helpers import make_scene

from dataset.cli import main
from dataset.core.raycast import EmbreeCaster
from dataset.sources import load_scene
from dataset.sources.quake3 import find_openarena_maps
from sampling.collision import check_paths_reference, proxy_boxes
from sampling.paths import PathConfig
from sampling.sampler import SamplingConfig, sample_trajectories


def assert_valid(scene, result, cfg: SamplingConfig):
    """Eye height above upward-facing floor (downward ray), and no proxy box hit (brute force)."""
    assert result.trajectories
    caster = EmbreeCaster(scene.vertices, scene.faces)
    normals = scene.face_normals()
    for t in result.trajectories:
        eye = t.c2w[:, :3, 3].astype(np.float32)
        down = np.tile(np.float32([0, 0, -1]), (len(eye), 1))
        hits = caster.cast(eye, down)
        assert (hits.prim >= 0).all()
        # Heights are smoothed over stairs, so allow one stair rise of slack around eye height.
        np.testing.assert_allclose(hits.t, cfg.path.eye_height, atol=0.25)
        assert (normals[hits.prim, 2] > np.cos(np.radians(cfg.walkable.max_slope_deg))).all()
        steps = np.linalg.norm(np.diff(eye[:, :2], axis=0), axis=1)  # chords: shorter only across corners
        assert steps.max() <= cfg.path.step * 1.001 and abs(np.median(steps) - cfg.path.step) < 1e-3
    boxes, _ = proxy_boxes(scene, cfg.proxies)
    positions = np.stack([t.c2w[:, :3, 3] for t in result.trajectories])
    first, _ = check_paths_reference(boxes, cfg.camera_half_size, positions)
    assert (first == -1).all()


@pytest.mark.parametrize("source", ["procedural:indoor:0", "procedural:indoor:2", "procedural:outdoor:1"])
def test_procedural_trajectories_are_walkable_and_collision_free(source):
    scene = load_scene(source)
    cfg = SamplingConfig(path=PathConfig(frames=49))
    result = sample_trajectories(scene, 6, seed=1, config=cfg)
    assert len(result.trajectories) == 6
    assert_valid(scene, result, cfg)


@pytest.mark.openarena
def test_openarena_trajectories_are_walkable_and_collision_free():
    maps = {name for name, _ in find_openarena_maps()}
    wanted = [m for m in ("oa_dm1", "aggressor", "oa_dm4") if m in maps][:2]
    if len(wanted) < 2:
        pytest.skip("openarena-data is not installed (apt-get install openarena-data)")
    for name in wanted:
        scene = load_scene(f"openarena:{name}")
        cfg = SamplingConfig()
        result = sample_trajectories(scene, 5, seed=0, config=cfg)
        assert_valid(scene, result, cfg)


def test_multi_storey_scenes_get_paths_on_several_levels_and_on_stairs():
    scene = load_scene("procedural:indoor:0")
    storey = scene.provenance["storey_height"]
    cfg = SamplingConfig(path=PathConfig(frames=120, step=0.15))
    result = sample_trajectories(scene, 12, seed=0, config=cfg)
    levels = {int(round(z / storey)) for t in result.trajectories for z in t.floor[:, 2]}
    assert len(levels) >= 2, "paths on more than one storey"
    climbs = [np.ptp(t.floor[:, 2]) for t in result.trajectories]
    assert max(climbs) > 0.5 * storey, "at least one path climbs the stairs"


def test_stairs_are_used_in_a_two_storey_hall():
    cfg = SamplingConfig(path=PathConfig(frames=150, step=0.1))
    result = sample_trajectories(two_storey_scene(), 10, seed=3, config=cfg)
    assert any(t.floor[:, 2].min() < 0.5 and t.floor[:, 2].max() > 2.5 for t in result.trajectories)


def test_path_blocked_by_a_prop_is_discarded_with_its_reason():
    # A corridor 1.6 m wide, blocked at eye height by a 2 cm thin sign hanging between the floor test's
    # ray columns and above its passage rays: only the bounding-box check can catch it.
    scene = make_scene([((-10, -0.8, 0), (10, 0.8, 3), True, (0.7, 0.7, 0.7), "corridor"),
                        ((0.02, -0.8, 1.3), (0.04, 0.8, 1.9), False, (0.6, 0.3, 0.2), "hanging_sign")])
    cfg = SamplingConfig(path=PathConfig(frames=120, step=0.1))
    result = sample_trajectories(scene, 3, seed=0, config=cfg)
    reasons = [d.reason for d in result.discarded]
    assert any("hanging_sign" in r for r in reasons)
    for t in result.trajectories:
        x = t.c2w[:, 0, 3]
        assert x.max() < 0.02 - 0.2 or x.min() > 0.04 + 0.2, "no accepted path passes the sign"


def test_no_walkable_floor_gives_a_note_and_no_paths():
    low = make_scene([((-5, -4, 0), (5, 4, 1.5), True, (0.7, 0.7, 0.7), "crawlspace")])
    result = sample_trajectories(low, 4)
    assert result.trajectories == [] and any("no walkable surface" in n for n in result.notes)
    closet = make_scene([((-0.6, -0.6, 0), (0.6, 0.6, 3), True, (0.7, 0.7, 0.7), "closet")])
    result = sample_trajectories(closet, 4)
    assert result.trajectories == [] and result.notes


def test_cli_writes_trajectories_and_plot_deterministically(tmp_path):
    args = ["sample", "procedural:indoor:1", "--count", "3", "--frames", "20", "--seed", "7"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "trajectories.json").read_text())
    b = json.loads((tmp_path / "b" / "trajectories.json").read_text())
    assert a == b
    assert a["scene_id"] and len(a["trajectories"]) == 3
    t = a["trajectories"][0]
    assert len(t["c2w"]) == 20 and all(len(m) == 16 for m in t["c2w"])
    assert isinstance(a["discarded"], list)
    assert (tmp_path / "a" / "plot.png").stat().st_size > 10_000
    with pytest.raises(SystemExit) as exit_info:  # an out-of-range flag is an argparse error: one line, status 2
        main(["sample", "procedural:indoor:1", "--count", "0", "--out", str(tmp_path / "c")])
    assert exit_info.value.code == 2 and not (tmp_path / "c").exists()
