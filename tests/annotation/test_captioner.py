"""VideoLLaMA3 captioning: robust answer parsing, and the real load / preprocess / generate / parse path
end to end with a tiny random-weight model on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.captioner import VlmResult, model_frames, parse_answer
from dataset.core.jobspec import CaptionerSpec

pytest.importorskip("torchvision", reason="VideoLLaMA3's video processor needs torchvision")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("answer, expected", [
    ("Caption: A kitchen with a table.\nDetail: 4\nSemantic: 3\nMotion: 5", ("A kitchen with a table.", 4, 3, 5)),
    ("**Caption:** A long corridor with doors, the camera walks ahead.\n**Detail quality:** 4/5\n"
     "**Semantic information:** 2/5\n**Motion richness:** 3/5", ("A long corridor with doors, the camera walks ahead.",
                                                                   4, 2, 3)),
    ("Sure! Caption: A street\nwith cars.\n\nDetail = 5, Semantic = 4, Motion = 1.", ("A street with cars.", 5, 4, 1)),
    ("A park with trees seen from a path.\nDetail: 3\nSemantic: 3\nMotion: 2", ("A park with trees seen from a path.",
                                                                                 3, 3, 2)),
])
def test_parse_answer_reads_common_formats(answer, expected):
    assert parse_answer(answer) == expected


@pytest.mark.parametrize("answer, problem", [
    ("Caption: a room. Detail: 4 Semantic: 3", "no motion rating"),
    ("Caption: a room. Detail: 9 Semantic: 3 Motion: 2", "no detail rating"),
    ("Detail: 4\nSemantic: 3\nMotion: 5", "no caption"),
    ("", "no detail rating"),
])
def test_parse_answer_rejects_malformed_answers(answer, problem):
    with pytest.raises(ValueError, match=problem):
        parse_answer(answer)


def test_low_ratings_give_readable_reasons():
    spec = CaptionerSpec(model="x", min_vlm_detail=3)
    reasons = VlmResult("a room", 2, 4, 4).reject_reasons(spec)
    assert reasons == ["vlm_detail 2 < 3.0: the captioning model rates it low"]
    assert VlmResult(None, error="malformed").reject_reasons(spec) == []


def test_model_frames_for_both_views():
    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 128, 3), dtype=np.uint8)
    pano, times = model_frames(frames, 12.0, CaptionerSpec(model="x", num_frames=4, frame_size=112))
    assert pano.shape == (4, 56, 112, 3) and np.allclose(times, [0, 11 / 36, 22 / 36, 11 / 12], atol=0.03)
    crops, _ = model_frames(frames, 12.0, CaptionerSpec(model="x", num_frames=4, frame_size=112, view="crops"))
    assert crops.shape == (4, 112, 112, 3)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_videollama3 import save_tiny_videollama3

    return save_tiny_videollama3(tmp_path_factory.mktemp("tiny_videollama3"))


@pytest.mark.parametrize("view", ["panorama", "crops"])
def test_tiny_model_end_to_end_never_crashes_on_bad_answers(tiny_model, view):
    from annotation.captioner import VideoLlama3Captioner

    spec = CaptionerSpec(model=str(tiny_model), device="cpu", num_frames=4, frame_size=112, batch_size=2,
                         max_new_tokens=12, view=view)
    captioner = VideoLlama3Captioner(spec)
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 255, (6, 64, 128, 3), dtype=np.uint8) for _ in range(3)]
    results = captioner.annotate(videos, [12.0] * 3)
    assert len(results) == 3
    for r in results:  # random weights: answers are gibberish, recorded as errors with the raw answer
        ok = r.error is None and r.caption
        assert ok or ("no valid answer after 2 attempts" in r.error and "answer:" in r.error)


def test_missing_weights_are_a_clear_error_and_nothing_is_downloaded(tmp_path):
    from annotation.captioner import VideoLlama3Captioner

    with pytest.raises(FileNotFoundError, match="nothing is downloaded unless captioner.allow_download"):
        VideoLlama3Captioner(CaptionerSpec(model="DAMO-NLP-SG/VideoLLaMA3-2B", device="cpu"))
    with pytest.raises(FileNotFoundError, match="cannot load VideoLLaMA3"):
        VideoLlama3Captioner(CaptionerSpec(model=str(tmp_path), device="cpu"))
