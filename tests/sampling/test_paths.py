"""Camera paths: constant speed, eye height, heading policies and turn-rate limits, routing over the graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sampling_scenes import two_storey_scene

from dataset.core.conventions import heading_of
from sampling.graph import GraphConfig, build_route_graph
from sampling.paths import PathConfig, camera_poses, headings, resample, route, smooth_floor_walk
from sampling.walkable import WalkableConfig, extract_walkable


def test_resample_walks_at_constant_speed():
    poly = np.array([[0, 0, 0], [3, 0, 0], [3, 4, 0]], float)
    pts = resample(poly, 50, 0.1)
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    assert len(pts) == 50
    np.testing.assert_allclose(steps[steps > 0.0999], 0.1, atol=1e-9)
    assert np.allclose(pts[0], 0) and abs(pts[30, 0] - 3.0) < 1e-9


def test_travel_heading_follows_the_path_with_a_bounded_turn_rate():
    cfg = PathConfig(frames=80, step=0.1, fps=10, max_turn_rate_deg=45)
    xy = np.concatenate([np.column_stack([np.arange(40) * 0.1, np.zeros(40)]),
                         np.column_stack([np.full(40, 3.9), 0.1 + np.arange(40) * 0.1])])
    h = headings(xy, cfg)
    assert abs(h[5]) < 1e-6 and abs(h[-1] - math.pi / 2) < 1e-3, "east first, north at the end"
    assert np.abs(np.diff(h)).max() <= math.radians(45) / 10 + 1e-9
    fixed = headings(xy, PathConfig(frames=80, fps=10, heading="fixed"))
    assert np.ptp(fixed) == 0
    look = headings(xy, PathConfig(frames=80, fps=10, heading="look_around", look_around_deg=30))
    assert np.abs(look - h).max() > math.radians(20)


def test_bad_policy_is_rejected():
    with pytest.raises(ValueError, match="heading policy"):
        PathConfig(heading="spin")


def test_routes_climb_the_stairs_at_eye_height():
    walk = extract_walkable(two_storey_scene(), WalkableConfig())
    graph = build_route_graph(walk, GraphConfig(spacing=0.8), np.random.default_rng(0))
    lower = int(np.argmin(np.linalg.norm(graph.points - [-3.0, -3.25, 0.0], axis=1)))
    upper = int(np.argmin(np.linalg.norm(graph.points - [8.0, 0.0, 3.0], axis=1)))
    assert abs(graph.points[upper, 2] - 3.0) < 1e-3
    from scipy.sparse.csgraph import shortest_path

    dist = shortest_path(graph.adjacency(), indices=lower)
    assert np.isfinite(dist[upper]), "the graph connects the ground floor to the mezzanine via the stairs"
    cfg = PathConfig(frames=60, step=0.25)
    nodes, total = route(graph, lower, cfg.length, cfg.max_legs, np.random.default_rng(1))
    assert total >= cfg.length
    floor = smooth_floor_walk(walk, graph.points[nodes], cfg)
    assert floor is not None
    c2w = camera_poses(walk, floor, cfg)
    np.testing.assert_allclose(c2w[:, 2, 3] - floor[:, 2], cfg.eye_height, atol=0.25)
    assert np.allclose(c2w[:, :3, 1], [0, 0, -1]), "level cameras (y axis down)"
    np.testing.assert_allclose(np.linalg.norm(np.diff(floor[:, :2], axis=0), axis=1).max(), 0.25, atol=0.01)
    assert np.all(np.isfinite(heading_of(c2w)))
