"""Reconstruction inputs: keyframes, posed perspective crops with planar depth that agree with the renderer, and
initial Gaussians on the depth surfaces without depth-edge pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset.core.conventions import pose_from_heading, range_to_planar
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from inference.guidance import invisible_pixels
from inference.recon_views import (
    crop_views,
    depth_points,
    edge_threshold,
    held_out_indices,
    init_gaussians,
    keyframe_indices,
    supersample_factor,
)


@pytest.fixture(scope="module")
def clip(request):
    from scene_helpers import make_scene

    scene = make_scene([((-2, -3, 0), (2, 3, 3), True, (0.8, 0.8, 0.8), "room"),
                        ((1.0, 2.0, 0.0), (1.5, 2.5, 0.5), False, (0.8, 0.2, 0.2), "crate")])
    c2w = np.stack([pose_from_heading((0.1 * i, -0.5, 1.5), 0.3 + 0.05 * i) for i in range(7)])
    renderer = EmbeddedRenderer(scene, RenderSettings(threads=2))
    request.addfinalizer(renderer.close)
    return renderer, renderer.render(c2w, 256), c2w


def test_keyframes_every_fifth_frame_and_the_rest_held_out():
    assert keyframe_indices(12).tolist() == [0, 5, 10] and held_out_indices(12).tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 11]
    with pytest.raises(ValueError, match="at least one frame"):
        keyframe_indices(0)


def test_crops_are_the_pinhole_views_of_their_poses_with_planar_depth(clip):
    renderer, frames, c2w = clip
    views = crop_views(frames.rgb, c2w, [0, 5], 32, depth=frames.depth)
    assert len(views) == 24 and views.rgb.shape == (24, 32, 32, 3) and views.depth.shape == (24, 32, 32)
    assert views.names[13] == "f0005_y090_p+00" and views.frame.tolist() == [0] * 12 + [5] * 12
    for v in (0, 6, 13, 20):  # a few crops: what the renderer sees from the crop's own camera
        real = renderer.render_perspective(views.c2w[v], 32, 32, 90.0).depth[0]
        rel = np.abs(range_to_planar(real) - views.depth[v]) / range_to_planar(real)
        assert np.median(rel) < 0.01, views.names[v]


def test_crops_coarser_than_the_panorama_are_area_averaged():
    from dataset.core.conventions import equirect_to_crops

    stripes = np.zeros((256, 512, 3), np.uint8)
    stripes[:, ::2] = 255  # a texture finer than any 32 px crop's pixel
    assert supersample_factor(512, 32) == 6 and supersample_factor(512, 128) == 2 and supersample_factor(512, 512) == 1
    views = crop_views(stripes[None], np.eye(4)[None], [0], 32)
    horizon = views.rgb[:4, 8:24, 8:24].astype(float)  # the pitch-0 crops' centres
    assert abs(horizon.mean() - 127.5) < 10 and horizon.std() < 25
    aliased = equirect_to_crops(stripes, 32)[0][:4, 8:24, 8:24].astype(float)
    assert aliased.std() > 2 * horizon.std()  # what point sampling gives instead


def test_initial_points_lie_on_the_surfaces_and_skip_depth_edges(clip):
    _, frames, c2w = clip
    points, colours = depth_points(frames.rgb, frames.depth, c2w, [0])
    edge = invisible_pixels(frames.depth[0], edge_threshold(256))
    assert len(points) == int(((frames.depth[0] > 0) & ~edge).sum()) and colours.dtype == np.uint8
    assert 0 < edge.mean() < invisible_pixels(frames.depth[0]).mean()  # the crate's outline, not the grazing floor
    inside = np.all((points > [-2.001, -3.001, -0.001]) & (points < [2.001, 3.001, 3.001]), axis=1)
    assert inside.all(), "every point on or inside the room's walls"
    g = init_gaussians(frames.rgb, frames.depth, c2w, [0, 5], max_points=5000)
    assert len(g) == 5000 and torch.allclose(g.opacities, torch.full((5000,), 0.1))
    assert 0.001 < float(g.scales.median()) < 0.2 and torch.allclose(g.rotations[:, 0], torch.ones(5000))
    again = init_gaussians(frames.rgb, frames.depth, c2w, [0, 5], max_points=5000)
    assert torch.equal(g.means, again.means), "seeded subsampling"
    with pytest.raises(ValueError, match="no depth"):
        init_gaussians(frames.rgb, np.zeros_like(frames.depth), c2w, [0])
