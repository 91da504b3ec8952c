"""3DGS optimisation on a rendered clip of a procedural room (CPU, reference rasterizer, small crops): held-out
frames improve well beyond the depth-initialised point cloud, and the fitted centres stay on the room's surfaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset.core.conventions import pose_from_heading
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from inference.gaussians import Gaussians
from inference.gs_opt import OptConfig, evaluate, optimise, view_loss
from inference.recon_views import crop_views, held_out_indices, init_gaussians, keyframe_indices

ROOM_LO, ROOM_HI = np.array([-2.0, -3.0, 0.0]), np.array([2.0, 3.0, 3.0])


@pytest.fixture(scope="module")
def clip():
    from scene_helpers import make_scene

    scene = make_scene([((-2, -3, 0), (2, 3, 3), True, (0.8, 0.8, 0.8), "room"),
                        ((1.0, 2.0, 0.0), (1.5, 2.5, 0.5), False, (0.8, 0.2, 0.2), "crate")])
    c2w = np.stack([pose_from_heading((0.05 * i, -0.5 + 0.03 * i, 1.5), 0.3 + 0.04 * i) for i in range(11)])
    with EmbeddedRenderer(scene, RenderSettings(threads=2)) as renderer:
        return renderer.render(c2w, 512), c2w  # fine enough that the floor is not a depth edge


def wall_distance(points: np.ndarray) -> np.ndarray:
    """Distance of points to the nearest wall, floor or ceiling of the room (the crate ignored: a bound)."""
    return np.minimum(np.abs(points - ROOM_LO), np.abs(points - ROOM_HI)).min(axis=1)


def test_the_loss_is_l1_and_ssim_mixed():
    a, b = torch.rand(16, 16, 3), torch.rand(16, 16, 3)
    assert float(view_loss(a, a, 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(view_loss(a, b, 0.0)) == pytest.approx(float((a - b).abs().mean()))


@pytest.mark.slow
def test_optimisation_beats_the_opaque_point_cloud_on_held_out_frames(clip):
    frames, c2w = clip
    keys, held = keyframe_indices(len(c2w)), held_out_indices(len(c2w))
    train = crop_views(frames.rgb, c2w, keys, 32, depth=frames.depth)
    test = crop_views(frames.rgb, c2w, held[::2], 32)
    init = init_gaussians(frames.rgb, frames.depth, c2w, keys, max_points=20000, opacity=0.99)
    cfg = OptConfig(iterations=200, densify_from=70, densify_until=140, densify_every=70)
    result = optimise(init, train, cfg, backend="torch")
    before, after = evaluate(init, test, backend="torch"), evaluate(result.gaussians, test, backend="torch")
    print(f"held-out PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, SSIM {before['ssim']:.3f} -> "
          f"{after['ssim']:.3f}, {len(init)} -> {len(result.gaussians)} Gaussians, {result.seconds:.1f} s")
    assert before["psnr"] > 25, "the depth point cloud alone is already a good baseline here"
    assert after["psnr"] >= before["psnr"] + 3.0 and after["ssim"] > before["ssim"]
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20])
    assert result.counts and result.counts[0][1] > len(init), "densification added Gaussians"
    near = wall_distance(result.gaussians.means.numpy()) < 0.05
    assert near.mean() > 0.8, "most centres within 5 cm of the room's surfaces"
    assert isinstance(result.gaussians, Gaussians) and not result.gaussians.means.requires_grad
