"""Model-free quality filters: bad renders are rejected with a readable reason, good clips are kept."""

from __future__ import annotations

import numpy as np
import pytest
from build_helpers import bad_clips

from annotation.filters import StreamingScores, clip_scores, depth_scores, verdict
from dataset.core.codecs import decode_depth, decode_mp4
from dataset.core.conventions import pose_from_heading
from dataset.core.jobspec import parse_job_spec
from dataset.jobs.clips import render_clip
from dataset.jobs.worker import plan_scene
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from dataset.store.shards import SCORE_NAMES

SPEC = parse_job_spec({"scenes": ["procedural:indoor:1"], "trajectories_per_scene": 2, "frames_per_clip": 12,
                       "resolution": [256, 128]})


@pytest.fixture(scope="module")
def indoor():
    scene, plan = plan_scene(SPEC, "procedural:indoor:1")
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as renderer:
        yield scene, plan, renderer


def test_good_clips_are_kept_and_bad_renders_rejected(indoor):
    scene, plan, renderer = indoor
    good = [c.c2w for c in plan.clips]
    for c2w in good:
        row = render_clip(renderer, SPEC, c2w)
        assert row["status"] == "accepted", row["reject_reasons"]
    expected = {"no motion": ["camera motion", "no visible motion"], "black frames": ["dark_fraction", "detail"],
                "inside a wall": ["void_fraction"]}
    for name, (r, poses) in bad_clips(scene, renderer, good[0]).items():
        row = render_clip(r, SPEC, poses)
        assert row["status"] == "rejected", name
        reasons = " | ".join(row["reject_reasons"])
        for word in expected[name]:
            assert word in reasons, f"{name}: {reasons}"


def test_streaming_scores_equal_whole_clip_scores(indoor):
    _, plan, renderer = indoor
    c2w = plan.clips[1].c2w
    frames = renderer.render(c2w, 256)
    stream = StreamingScores(len(c2w), 0.25)
    for rgb, depth, pose in zip(frames.rgb, frames.depth, c2w, strict=True):
        stream.add(rgb, depth, pose)
    streamed = stream.finish(c2w)
    whole = clip_scores(frames.rgb, frames.depth, c2w, 0.25)
    # sky_fraction is not a shard column yet (annotation.filters' docstring)
    assert streamed.keys() == whole.keys() == set(SCORE_NAMES) | {"sky_fraction"}, "the shard schema holds the scores"
    for k in whole:
        assert streamed[k] == pytest.approx(whole[k], rel=1e-5, abs=1e-6), k


def test_scores_survive_the_storage_round_trip(indoor):
    """Re-scoring decoded shard payloads (what ``annotate`` does) gives the inline verdict and close scores."""
    _, plan, renderer = indoor
    c2w = plan.clips[0].c2w
    row = render_clip(renderer, SPEC, c2w)
    again = clip_scores(decode_mp4(row["rgb_mp4"]), decode_depth(row["depth"], (12, 128, 256)), c2w, 0.25)
    assert verdict(again, SPEC.annotation)[0] == row["status"]
    for k in ("void_fraction", "mean_depth", "path_length_m", "rotation_deg"):
        assert again[k] == pytest.approx(row["scores"][k], rel=1e-2, abs=1e-3)
    assert again["flow_px"] == pytest.approx(row["scores"]["flow_px"], rel=0.15)


def test_thresholds_come_from_the_spec():
    scores = {"detail": 50.0, "dark_fraction": 0.0, "saturated_fraction": 0.0, "void_fraction": 0.3,
              "near_fraction": 0.0, "mean_depth": 2.0, "depth_invalid_fraction": 0.0, "path_length_m": 3.0,
              "rotation_deg": 40.0, "flow_px": 1.0}
    assert verdict(scores, SPEC.annotation) == ("accepted", [])
    strict = parse_job_spec({"scenes": ["x"], "annotation": {"min_detail": 80, "max_void_fraction": 0.2}})
    status, reasons = verdict(scores, strict.annotation)
    assert status == "rejected" and len(reasons) == 2 and reasons[0].startswith("void_fraction 0.30 > 0.2")


LOOK_DOWN = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1.6], [0, 0, 0, 1]])
"""c2w of a camera looking straight down (x right = world +X, forward = world -Z): world up is -z_cam, so the
rays below the horizon are exactly the middle half of the columns (longitude within 90 deg of forward)."""


def test_sky_is_no_hit_above_the_horizon_and_void_the_rest():
    """Level camera, 64x32: rows 0-15 look above the horizon, rows 16-31 below."""
    depth = np.full((1, 32, 64), 5.0, np.float32)
    depth[0, :10] = 0  # open sky: 10 of the 16 upper rows
    depth[0, 28:] = 0  # no world below the horizon: 4 rows
    depth[0, 12, :8] = 0.1  # a hit nearer than near_limit, above the horizon: void, not sky
    depth[0, 20, :4] = np.nan  # invalid depth: void, not sky
    s = depth_scores(depth, 0.25)
    px = 32 * 64
    assert s["sky_fraction"] == pytest.approx(10 * 64 / px)
    assert s["void_fraction"] == pytest.approx((4 * 64 + 8 + 4) / px)
    assert s["near_fraction"] == pytest.approx(8 / px)
    assert s["depth_invalid_fraction"] == pytest.approx(4 / px)
    level = pose_from_heading((1.0, 2.0, 1.6), 0.7)[None]
    assert depth_scores(depth, 0.25, level) == pytest.approx(s), "a level pose splits at the middle row"


def test_the_horizon_follows_the_camera_pose():
    """Looking straight down, the middle half of the columns is below the horizon whatever the row."""
    sky_cols = np.zeros((1, 32, 64), np.float32)
    sky_cols[..., 16:48] = 3.0  # hits where the rays point down, nothing where they point up
    down = depth_scores(sky_cols, 0.25, LOOK_DOWN[None])
    assert down["sky_fraction"] == pytest.approx(0.5) and down["void_fraction"] == 0
    assert depth_scores(sky_cols, 0.25)["void_fraction"] == pytest.approx(0.25), "taken as level it is void"
    void_cols = np.where(sky_cols > 0, 0, 3.0).astype(np.float32)
    assert depth_scores(void_cols, 0.25, LOOK_DOWN[None])["void_fraction"] == pytest.approx(0.5)
    stream = StreamingScores(1, 0.25)
    stream.add(np.zeros((32, 64, 3), np.uint8), void_cols[0], LOOK_DOWN)
    assert stream.finish(LOOK_DOWN[None])["void_fraction"] == pytest.approx(0.5), "streamed scores use the pose"


def test_sky_is_never_rejected_void_is():
    base = {"detail": 50.0, "dark_fraction": 0.0, "saturated_fraction": 0.0, "near_fraction": 0.0,
            "mean_depth": 20.0, "depth_invalid_fraction": 0.0, "path_length_m": 3.0, "rotation_deg": 40.0,
            "flow_px": 1.0}
    street = {**base, "sky_fraction": 0.55, "void_fraction": 0.01}
    assert verdict(street, SPEC.annotation) == ("accepted", [])
    edge_of_world = {**base, "sky_fraction": 0.3, "void_fraction": 0.65}
    status, reasons = verdict(edge_of_world, SPEC.annotation)
    assert status == "rejected" and reasons[0].startswith("void_fraction 0.65 > 0.6")
