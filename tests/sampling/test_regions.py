"""Which walkable floor gets paths: the ground-connected regions, whatever the triangles' winding; isolated
roofs only on request; scenery never walked, searched for floor or collided with."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from sampling_scenes import plaza_with_building, two_storey_scene
from scene_helpers import make_scene

from dataset.core.jobspec import JobSpecError, parse_job_spec
from sampling.collision import proxy_boxes
from sampling.paths import PathConfig
from sampling.plot import EXCLUDED_COLOUR, plot_sampling
from sampling.sampler import SamplingConfig, sample_trajectories
from sampling.walkable import WalkableConfig, extract_walkable

ROOF, PLAZA = np.array([[0.0, 0.0, 6.0]]), np.array([[-8.0, 0.0, 0.0]])


def flipped(scene):
    """The same scene with every triangle wound the other way (normals reversed)."""
    return dataclasses.replace(scene, faces=scene.faces[:, ::-1].copy())


def nodes_on_edges(graph) -> np.ndarray:
    return graph.points[np.unique(graph.edges)]


def test_closed_building_on_a_plaza_gets_paths_on_the_plaza_only(tmp_path):
    scene = plaza_with_building()
    result = sample_trajectories(scene, 4, seed=0, config=SamplingConfig(path=PathConfig(frames=49)))
    walk = result.walkable
    assert len(result.trajectories) == 4
    assert all(np.abs(t.floor[:, 2]).max() < 1e-3 for t in result.trajectories), "every path on the plaza"
    assert np.abs(nodes_on_edges(result.graph)[:, 2]).max() < 1e-3
    assert np.isnan(walk.floor_at(ROOF)[0][0]) and np.isfinite(walk.floor_at(PLAZA)[0][0])
    roof_cells = np.abs(walk.excluded_z - 6.0) < 1e-3
    assert 40 < roof_cells.sum() * walk.cell**2 < 64, "the roof (8 x 8 m less its eroded rim) is excluded"
    assert any("regions: all" in n for n in result.notes)
    plot_sampling(result, tmp_path / "plot.png")
    rgb = np.asarray(Image.open(tmp_path / "plot.png").convert("RGB")).astype(float)
    grey = (np.abs(rgb - 255 * np.array(EXCLUDED_COLOUR)) <= 2).all(axis=2)
    assert grey.sum() > 10_000, "the excluded roof is drawn in grey"


def test_flipped_winding_gives_the_same_walkable_floor():
    for scene in (plaza_with_building(), two_storey_scene()):
        a, b = extract_walkable(scene), extract_walkable(flipped(scene))
        assert a.area() > 100
        for name in ("z", "region", "excluded_z", "excluded_region"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_roof_reached_by_a_staircase_is_used():
    cfg = SamplingConfig(path=PathConfig(frames=49))
    result = sample_trajectories(plaza_with_building(stairs=True), 4, seed=0, config=cfg)
    walk = result.walkable
    (_, roof), (_, plaza) = walk.floor_at(ROOF), walk.floor_at(PLAZA)
    assert roof[0] == plaza[0] == 0, "plaza, stairs and roof are one region"
    z, _ = walk.floor_at(np.array([[-3.0, -4.75, 4.0]]))  # the 16th tread
    assert abs(z[0] - 4.0) < 1e-3
    assert (nodes_on_edges(result.graph)[:, 2] > 5.99).sum() >= 10, "route graph nodes on the roof"
    assert walk.num_excluded_regions == 1, "only the building's closed interior is left out"


def test_regions_all_uses_the_isolated_roof():
    cfg = SamplingConfig(walkable=WalkableConfig(regions="all"), path=PathConfig(frames=49))
    result = sample_trajectories(plaza_with_building(), 8, seed=0, config=cfg)
    assert np.isfinite(result.walkable.floor_at(ROOF)[0][0]) and result.walkable.num_excluded_regions == 0
    assert (nodes_on_edges(result.graph)[:, 2] > 5.99).sum() >= 10
    with pytest.raises(ValueError, match="regions 'roofs' is not one of ground, all"):
        WalkableConfig(regions="roofs")


def test_spawn_points_choose_the_regions():
    # A spawn point floating 1 m over the roof (level designers place them high) picks the roof, not the plaza.
    scene = dataclasses.replace(plaza_with_building(), spawn_points=np.array([[1.0, 1.0, 7.0, 0.0]]))
    walk = extract_walkable(scene)
    assert np.isfinite(walk.floor_at(ROOF)[0][0]) and np.isnan(walk.floor_at(PLAZA)[0][0])
    assert walk.num_regions == 1 and any("spawn points" in n for n in walk.notes)


def test_job_spec_regions_setting():
    assert parse_job_spec({"scenes": ["a"]}).sampling.regions == "ground"
    spec = parse_job_spec({"scenes": ["a"], "sampling": {"regions": "all"}})
    assert spec.sampling.regions == "all" and spec.config_hash() != parse_job_spec({"scenes": ["a"]}).config_hash()
    with pytest.raises(JobSpecError, match=r"sampling.regions: Input should be 'ground' or 'all'"):
        parse_job_spec({"scenes": ["a"], "sampling": {"regions": "roofs"}})


def test_scenery_is_not_walked_searched_for_floor_or_collided_with():
    # A 10 x 10 m plaza inside a 400 m scenery ground plane, and a scenery box standing on the plaza.
    scene = make_scene([((-5, -5, -0.5), (5, 5, 0), False, (0.7, 0.7, 0.7), "plaza", "structure"),
                        ((-200, -200, -1.0), (200, 200, -0.6), False, (0.4, 0.6, 0.3), "far_terrain", "scenery"),
                        ((1, -0.5, 0), (2, 0.5, 3), False, (0.5, 0.5, 0.5), "far_building", "scenery")])
    walk = extract_walkable(scene)
    ny, nx = walk.z.shape[:2]
    assert nx * walk.cell <= 10.0 + walk.cell and ny * walk.cell <= 10.0 + walk.cell, "grid spans the plaza only"
    z, _ = walk.floor_at(np.array([[1.5, 0.0, 0.0]]))
    assert abs(z[0]) < 1e-4, "the scenery box on the plaza is no obstacle to the floor test"
    assert 75 < walk.area() < 100, "the plaza less its eroded rim, not the 400 m scenery plane"
    boxes, names = proxy_boxes(scene)
    assert "far_building_2" not in names and len(boxes) == 0
