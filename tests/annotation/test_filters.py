"""Model-free quality filters: bad renders are rejected with a readable reason, good clips are kept."""

from __future__ import annotations

import pytest
from build_helpers import bad_clips

from annotation.filters import StreamingScores, clip_scores, verdict
from dataset.core.codecs import decode_depth, decode_mp4
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
    for rgb, depth in zip(frames.rgb, frames.depth, strict=True):
        stream.add(rgb, depth)
    streamed = stream.finish(c2w)
    whole = clip_scores(frames.rgb, frames.depth, c2w, 0.25)
    assert streamed.keys() == whole.keys() == set(SCORE_NAMES), "the shard schema holds every score"
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
