"""VideoLLaMA3 captioning: robust answer parsing, and the real load / preprocess / generate / parse path
end to end with a tiny random-weight model on the CPU."""

from __future__ import annotations

import re
import time

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


@pytest.mark.parametrize("answer, expected", [
    ("Caption: A detailed room with 3 chairs.\nDetail: 5\nSemantic: 4\nMotion: 2",
     ("A detailed room with 3 chairs.", 5, 4, 2)),
    ("Caption: A semantically rich scene with 1 lamp by a window.\nDetail: 4\nSemantic: 4\nMotion: 3",
     ("A semantically rich scene with 1 lamp by a window.", 4, 4, 3)),
    ("Caption: A hall where the camera motion: 2 turns, then a door. Detail - 4 Semantic: **3** Motion (1-5): 2/5",
     ("A hall where the camera motion: 2 turns, then a door.", 4, 3, 2)),
    ("Caption: A hall.\n- **Detail**: 4\n- **Semantic**: 3\n- **Motion**: 5", ("A hall.", 4, 3, 5)),
])
def test_parse_answer_reads_the_labelled_rating_not_a_number_in_the_caption(answer, expected):
    assert parse_answer(answer) == expected


@pytest.mark.parametrize("value", ["-1", "3-4", "0", "7", "4.5", "3/4"])
def test_parse_answer_rejects_a_malformed_rating(value):
    answer = f"Caption: A kitchen with a table.\nDetail: {value}\nSemantic: 3\nMotion: 5"
    with pytest.raises(ValueError, match=f"no detail rating .*'Detail: {value}' is not one whole number from 1 to 5"):
        parse_answer(answer)


def test_parse_answer_rejects_two_different_values_for_one_label():
    with pytest.raises(ValueError, match=r"no motion rating .*two different values \(5 and 2\)"):
        parse_answer("Caption: A kitchen.\nDetail: 4\nSemantic: 3\nMotion: 5\nMotion: 2")


@pytest.mark.parametrize("answer", ["Caption: \nDetail: 4\nSemantic: 3\nMotion: 5",
                                    "Caption: Detail: 4, Semantic: 3, Motion: 5",
                                    "Detail: 4, Semantic: 3, Motion: 5"])
def test_parse_answer_rejects_an_empty_caption(answer):
    with pytest.raises(ValueError, match="no caption in the answer"):
        parse_answer(answer)


def _garbage(n: int) -> str:
    """``n`` seeded characters of labels, separators and markdown; no bare digit, so that no early "malformed"
    cuts the parse short."""
    rng = np.random.default_rng(0)
    pieces = ["Detail", "semantic", "Motion", "caption", ":", "-", "*", "/5", " ", "  ", "\n", ".", "a"]
    text = ""
    while len(text) < n:
        text += "".join(rng.choice(pieces, 1000))
    return text[:n]


@pytest.mark.parametrize("answer", [
    "Detail" + " " * 400,
    _garbage(100_000),
    "Detail " * 15_000,
    "Caption: a room. " + "Detail: 4 Semantic: 3 Motion: 5 " * 1_000,
    "Caption:" + "\n " * 50_000 + "Detail: 4",
    ". " + " " * 100_000 + "Detail",
], ids=["label-400-spaces", "100k-garbage", "repeated-labels", "repeated-ratings", "blank-lines", "long-run"])
def test_parse_answer_takes_linear_time_on_adversarial_answers(answer):
    started = time.thread_time()  # this thread's CPU time: other processes' load does not count
    try:
        parse_answer(answer)
    except ValueError:
        pass
    assert time.thread_time() - started < 0.05, "the answer parser must not backtrack"


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


def test_a_batch_over_the_time_limit_is_stopped_and_the_other_clips_go_on(tiny_model, monkeypatch):
    """Of three one-clip batches, the second runs on a clock that jumps 100 s at every model step: generation
    stops after 3 of its 24 steps (250 s limit), the clip is recorded as timed out and not retried, and the
    other two clips, on the real clock, get their ratings."""
    from annotation.captioner import VideoLlama3Captioner

    spec = CaptionerSpec(model=str(tiny_model), device="cpu", num_frames=4, frame_size=112, batch_size=1,
                         max_new_tokens=24, timeout_s=250.0)
    captioner = VideoLlama3Captioner(spec)
    model = captioner.model
    generate, steps, lag = model.generate, [], [0.0]
    real_time = time.time

    def step(module, args):
        steps[-1] += 1
        if len(steps) == 2:
            lag[0] += 100.0

    def counted_generate(**kwargs):
        steps.append(0)
        return generate(**kwargs, min_new_tokens=spec.max_new_tokens)  # random weights: no early end of answer

    monkeypatch.setattr(time, "time", lambda: real_time() + lag[0])  # also the clock of transformers' MaxTimeCriteria
    monkeypatch.setattr(model, "generate", counted_generate)
    monkeypatch.setattr(captioner.processor, "batch_decode",  # random weights: give the answers a real model would
                        lambda ids, **_: ["Caption: A room.\nDetail: 4\nSemantic: 3\nMotion: 5"] * len(ids))
    hook = model.register_forward_pre_hook(step)
    rng = np.random.default_rng(2)
    try:
        results = captioner.annotate([rng.integers(0, 255, (6, 64, 128, 3), dtype=np.uint8) for _ in range(3)],
                                     [12.0] * 3)
    finally:
        hook.remove()
    assert results[0] == results[2] == VlmResult("A room.", 4, 3, 5)
    assert results[1].caption is None and results[1].detail is None
    limit = "over captioner.timeout_s = 250 s per clip (raise it, or lower max_new_tokens)"
    assert re.fullmatch(rf"timed out: 3\d\d\.\d s for a batch of 1, {re.escape(limit)}", results[1].error)
    assert steps == [24, 3, 24], "generation stops at the time limit and a timed-out clip is not retried"
