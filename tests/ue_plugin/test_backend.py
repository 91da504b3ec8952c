"""The Unreal backend through the stand-in: the same panoramas and depth as the embedded renderer, within
the float16 and cube-seam limits."""

from __future__ import annotations

import io

import numpy as np
import pytest

from dataset.core.codecs import psnr
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from ue_plugin.backend import UnrealCVRenderer, decode_depth_npy, parse_endpoint
from ue_plugin.standin import StandinServer


@pytest.fixture(scope="module")
def indoor():
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.worker import plan_scene

    spec = parse_job_spec({"scenes": ["procedural:indoor:1"], "trajectories_per_scene": 1, "frames_per_clip": 3})
    scene, plan = plan_scene(spec, "procedural:indoor:1")
    return scene, plan.clips[0].c2w


def test_panoramas_match_the_embedded_renderer(indoor):
    scene, c2w = indoor
    with StandinServer(scene) as srv, UnrealCVRenderer(f"127.0.0.1:{srv.port}") as ue:
        assert ue.camera > 0, "never camera 0"
        got = ue.render(c2w, 512)
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        ref = r.render(c2w, 512)
    assert got.rgb.shape == ref.rgb.shape and psnr(got.rgb, ref.rgb) > 30
    assert ((got.depth > 0) == (ref.depth > 0)).mean() > 0.999
    hit = (got.depth > 0) & (ref.depth > 0)
    rel = np.abs(got.depth[hit] - ref.depth[hit]) / ref.depth[hit]
    # float16 planar cm (2^-11 relative) + nearest resampling of cube faces (errors at slanted surfaces and edges)
    assert np.median(rel) < 0.005 and (rel < 0.01).mean() > 0.95


def test_depth_npy_decoding():
    planar = np.array([[100.0, 65504.0], [250.0, 0.0]], np.float32)  # cm; far plane; no data
    buf = io.BytesIO()
    np.save(buf, planar)
    rng = decode_depth_npy(buf.getvalue(), 90.0)
    scale = np.sqrt(1 + 0.5**2 + 0.5**2)  # pixel centres of a 2x2 FOV-90 image sit at x_n, y_n = +-0.5
    assert rng == pytest.approx(np.array([[1.0 * scale, 0.0], [2.5 * scale, 0.0]]), rel=1e-6)


def test_bad_endpoints_are_clear():
    with pytest.raises(ValueError, match="must be host:port"):
        parse_endpoint("localhost")
    assert parse_endpoint("10.0.0.2:9001") == ("10.0.0.2", 9001)


def test_fast_stitcher_equals_the_reference():
    from dataset.core.conventions import CUBE_LAYOUT, crop_rotation, perspective_to_equirect
    from ue_plugin.backend import CubeStitcher

    rng = np.random.default_rng(0)
    faces = [rng.uniform(0.5, 20, (48, 48)).astype(np.float32) for _ in range(6)]
    rots = [crop_rotation(y, p) for y, p in CUBE_LAYOUT]
    fast = CubeStitcher(192, 48)(faces, nearest=True)
    ref = perspective_to_equirect(faces, rots, 192, 90.0, "nearest")
    assert (fast == ref).mean() > 0.995  # pixels on exact face borders may pick the neighbour
    smooth = [np.full((48, 48, 3), 40 * k, np.uint8) for k in range(6)]
    assert (CubeStitcher(192, 48)(smooth) == perspective_to_equirect(smooth, rots, 192, 90.0)).mean() > 0.99
