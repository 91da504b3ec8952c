"""Bounding-box collision checks: the grid-indexed check equals brute force; no tunnelling; proxy rule."""

from __future__ import annotations

import numpy as np
import pytest
from scene_helpers import make_scene

from sampling.collision import BoxIndex, ProxyRule, check_paths_reference, proxy_boxes

GREY = (0.7, 0.7, 0.7)


def random_boxes(rng, n, extent=20.0):
    lo = rng.uniform(-extent, extent, (n, 3)) * [1, 1, 0.1]
    size = rng.uniform(0.02, 2.0, (n, 3))
    return np.stack([lo, lo + size], axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_indexed_check_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300)
    starts = rng.uniform(-20, 20, (40, 1, 3)) * [1, 1, 0.1]
    walk = np.cumsum(rng.normal(0, 0.4, (40, 30, 3)) * [1, 1, 0.05], axis=1)
    paths = starts + walk
    paths[0] = paths[0, :1]  # standing still
    paths[1, :, 1] = paths[1, 0, 1]  # axis-parallel motion
    index = BoxIndex(boxes, 0.2)
    fast = index.check_paths(paths, return_box=True)
    ref = check_paths_reference(boxes, 0.2, paths)
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(fast[1], ref[1])
    assert (ref[0] >= 0).any() and (ref[0] < 0).any(), "the random case has both outcomes"


def test_thin_wall_between_two_far_steps_is_caught():
    wall = np.array([[[1.0, -5.0, 0.0], [1.05, 5.0, 3.0]]])
    path = np.array([[[0.0, 0.0, 1.6], [2.0, 0.0, 1.6], [3.0, 0.0, 1.6]]])
    first, box = BoxIndex(wall, 0.0).check_paths(path, return_box=True)
    assert first[0] == 0 and box[0] == 0


def test_clearance_is_exact_for_a_cube_camera():
    crate = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 2.0]]])
    index = BoxIndex(crate, 0.2)
    xs = np.linspace(-2, 3, 30)

    def beside(gap):
        return np.stack([xs, np.full_like(xs, 1.0 + 0.2 + gap), np.full_like(xs, 1.6)], axis=1)[None]

    assert index.check_paths(beside(0.01))[0] == -1
    assert index.check_paths(beside(-0.01))[0] >= 0
    inside = np.array([[[0.5, 0.5, 1.0]]])
    assert index.check_paths(inside)[0] == 0, "a camera standing inside a box collides"


def test_path_through_an_object_reports_its_step():
    boxes = np.array([[[5.0, -0.5, 0.0], [5.6, 0.5, 2.0]], [[20, 20, 0], [21, 21, 1]]])
    path = np.stack([np.linspace(0, 10, 101), np.zeros(101), np.full(101, 1.6)], axis=1)[None]
    first, box = BoxIndex(boxes, 0.2).check_paths(path, return_box=True)
    assert box[0] == 0
    assert first[0] == 47  # x = 4.7 -> 4.8 reaches the grown box at x = 4.8


def test_empty_index_accepts_everything():
    assert BoxIndex(np.zeros((0, 2, 3))).check_paths(np.zeros((3, 5, 3)))[0] == -1


def test_proxy_rule_keeps_props_and_drops_structure_and_huge_objects():
    scene = make_scene([((-5, -4, 0), (5, 4, 3), True, GREY, "room"),
                        ((0, 0, 0), (1, 1, 1.8), False, GREY, "shelf"),
                        ((2, 2, 0), (2.5, 2.5, 3), False, GREY, "pillar", "structure"),
                        ((-4, -3, 0), (4, 3, 0.4), False, GREY, "huge_stage")])
    boxes, names = proxy_boxes(scene)
    assert names == ["shelf"]
    np.testing.assert_allclose(boxes[0], [[0, 0, 0], [1, 1, 1.8]])
    _, names = proxy_boxes(scene, ProxyRule(skip_kinds=()))
    assert names == ["shelf", "pillar"]
