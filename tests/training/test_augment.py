"""Cache-time augmentations: a yaw roll of the frames is exactly a turn of the poses (proved by rendering), depth
jitter keeps sky at 0 and has the spreads asked for, mask erosion wraps across the seam, and a variant is the same
for the same (seed, clip, index)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataset.core.conventions import as_c2w_array
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from training.augment import (
    AugmentSpec,
    augment_inputs,
    erode_guidance,
    erode_mask,
    jitter_depth,
    roll_yaw,
    smooth_noise,
    variant_rng,
)

WIDTH = 128


@pytest.fixture(scope="module")
def indoor():
    """The procedural indoor scene, a 3-frame clip of it and its render at ``WIDTH``: (scene, c2w, frames)."""
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.worker import plan_scene

    spec = parse_job_spec({"scenes": ["procedural:indoor:1"], "trajectories_per_scene": 1, "frames_per_clip": 3})
    scene, plan = plan_scene(spec, "procedural:indoor:1")
    c2w = plan.clips[0].c2w
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        return scene, c2w, r.render(c2w, WIDTH)


@pytest.mark.parametrize("k", [37, -5])
def test_rolled_frames_are_what_the_rolled_poses_see(indoor, k):
    scene, c2w, real = indoor
    rgb, poses = roll_yaw(real.rgb, c2w, k)
    assert np.array_equal(rgb, np.roll(real.rgb, k, axis=2))
    assert np.allclose(poses[:, :3, 3], c2w[:, :3, 3]) and as_c2w_array(poses).shape == c2w.shape  # rigid, in place
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        seen = r.render(poses, WIDTH).depth
    same = np.isclose(seen, np.roll(real.depth, k, axis=2), rtol=1e-4, atol=1e-4)
    assert same.mean() > 0.999
    other_way = np.isclose(seen, np.roll(real.depth, -k, axis=2), rtol=1e-4, atol=1e-4)
    assert other_way.mean() < 0.8, "the opposite turn would not match: the test tells the sign"


def test_jitter_keeps_sky_at_zero_and_has_the_spreads_asked_for(indoor):
    depth = indoor[2].depth[0].copy()
    depth[:5] = 0.0  # a band of sky (the scene's windows have none either)
    sky = depth == 0
    out, factor = jitter_depth(depth, np.random.default_rng(3), 0.1, 0.05)
    assert out.dtype == np.float32 and (out[sky] == 0).all() and (out[~sky] > 0).all()
    assert not np.allclose(out[~sky] / depth[~sky], factor)  # the field varies over the panorama
    factors = [jitter_depth(depth, np.random.default_rng(s), 0.1, 0.0)[1] for s in range(400)]
    assert np.std(np.log(factors)) == pytest.approx(0.1, rel=0.15)
    fields = np.stack([smooth_noise(depth.shape, np.random.default_rng(s)) for s in range(400)])
    assert np.std(fields, axis=0).min() > 0.8 and np.std(fields, axis=0).max() < 1.2  # unit std at every pixel
    seam = np.abs(fields[:, :, 0] - fields[:, :, -1]).max()
    inside = np.abs(np.diff(fields, axis=2)).max()
    assert seam <= inside, "the field is as continuous across the 360° seam as anywhere else"


def test_erosion_shrinks_the_mask_by_px_wrapping_across_the_seam():
    mask = np.zeros((2, 32, 64), bool)
    mask[:, 10:21, 60:] = mask[:, 10:21, :5] = True  # columns 60..68 (wrapping), rows 10..20
    eroded = erode_mask(mask, 2)
    expected = np.zeros_like(mask)
    expected[:, 12:19, 62:] = expected[:, 12:19, :3] = True  # columns 62..66: the seam is no edge
    assert np.array_equal(eroded, expected)
    assert erode_mask(np.ones((32, 64), bool), 3).all(), "a full mask has no edge to erode, not even at the poles"
    assert np.array_equal(erode_mask(mask, 0), mask)
    guidance = np.full((*mask.shape, 3), 200, np.uint8)
    g, m = erode_guidance(guidance, mask, 2)
    assert np.array_equal(m, expected) and (g[~m] == 0).all() and (g[m] == 200).all() and g.dtype == np.uint8


def test_a_variant_is_determined_by_seed_clip_and_index(indoor):
    _, c2w, real = indoor
    spec = AugmentSpec(copies=1, mask_erosion_px=3)

    def variant(seed, clip, index):
        return augment_inputs(real.rgb, c2w, real.depth[0], spec, variant_rng(seed, clip, index))

    a, b = variant(0, "clip-a", 1), variant(0, "clip-a", 1)
    assert a.applied == b.applied and np.array_equal(a.depth0, b.depth0)
    assert json.loads(json.dumps(a.applied)) == a.applied
    others = [variant(0, "clip-a", 2).applied, variant(1, "clip-a", 1).applied, variant(0, "clip-b", 1).applied]
    assert all(o != a.applied for o in others)
    k = a.applied["roll_px"]
    assert 0 <= k < WIDTH and 0 <= a.erosion_px == a.applied["erosion_px"] <= 3
    assert np.array_equal(a.frames, np.roll(real.rgb, k, axis=2))
    assert np.allclose(a.c2w, roll_yaw(real.rgb, c2w, k)[1])
    rolled = np.roll(real.depth[0], k, axis=1)
    assert np.array_equal(a.depth0 == 0, rolled == 0)
    assert np.median(a.depth0[rolled > 0] / rolled[rolled > 0]) == pytest.approx(a.applied["depth_factor"], rel=0.2)
    plain = augment_inputs(real.rgb, c2w, real.depth[0], AugmentSpec(yaw_roll=False, depth_scale=0, depth_noise=0,
                                                                      mask_erosion_px=0), variant_rng(0, "c", 1))
    assert plain.applied["roll_px"] == 0 and np.array_equal(plain.frames, real.rgb)
    assert np.allclose(plain.depth0, real.depth[0]) and plain.erosion_px == 0
