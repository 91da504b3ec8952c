"""Captions and 1-5 quality ratings of clips by VideoLLaMA3 (``transformers``' native implementation).

Each clip is shown to the model as a short video: ``num_frames`` frames sampled evenly, either the
equirect panorama itself or 4 horizontal perspective crops tiled 2 x 2 (``view``), with their real
timestamps. One prompt asks for a caption and three ratings in a fixed format; ``parse_answer``
reads it leniently (markdown, "4/5", words around) in linear time. A malformed answer is retried with
sampling, then recorded as the clip's error; a batch that runs past ``timeout_s`` per clip is stopped
and its clips recorded as timed out. Neither stops the job.
"""

from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset.core.jobspec import CaptionerSpec

PROMPT = (
    "This video was recorded by a 360-degree camera moving through a 3D scene; each frame is an "
    "equirectangular panorama.\n"
    "Describe the scene and how the camera moves in two or three sentences. Then rate the video from 1 "
    "(poor) to 5 (excellent) for detail quality (sharp, clean, well-rendered images), semantic information "
    "(recognisable objects and a meaningful layout) and motion richness (how much the view changes).\n"
    "Answer in exactly this format:\nCaption: <description>\nDetail: <1-5>\nSemantic: <1-5>\nMotion: <1-5>"
)
"""The instruction given with every clip."""

CROPS_NOTE = " (Here each frame shows four views, front, right, back and left, tiled 2 x 2.)"

_RATING = re.compile(
    r"(?P<label>details?|semantics?|motion)(?:[ \t]+(?:quality|information|info|richness|score|rating))?"
    r"[ \t*_]*(?:\([ \t]*1[ \t]*-[ \t]*5[ \t]*\)[ \t*_]*)?"  # an echoed "(1-5)"
    r"(?:[:=]|-(?=[ \t]))[ \t*_]*"  # "Detail: 4", "Detail = 4", "Detail - 4" (but "Detail -1" is no rating)
    r"(?P<value>[^\s,;*_]{0,16}(?:[ \t]*/[ \t]*[^\s,;*_]{1,4})?)")
"""A label and the value after it, searched in ASCII-lowercased text (``re.I`` scans 10x slower). No nested or
overlapping repeats, so a search takes time linear in the answer."""
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_VALID = re.compile(r"([1-5])(?:[ \t]*/[ \t]*5)?")
_NUMERIC = re.compile(r"[-+.]*[0-9]")
_CAPTION = re.compile(r"\bcaption[ \t*_]*:")
_MARKUP = " \t*_#>-"
"""Markdown allowed before a label: emphasis, headings, bullets (at most ``_MAX_MARKUP`` characters)."""
_MAX_MARKUP = 16
_FIELD_END = "\n.,;:|!?()[]"
"""Characters after which a label starts a field."""


def _field_start(text: str, label_at: int, last_end: int) -> int | None:
    """Where the rating whose label begins at ``label_at`` starts, markdown included; None when the label is
    a word of running text (a field starts a line, follows punctuation, or follows the previous rating)."""
    window = text[max(0, label_at - _MAX_MARKUP - 1):label_at]
    lead = window.rstrip(_MARKUP)
    start = label_at - (len(window) - len(lead))
    if not lead:
        return start if start == 0 else None
    return start if lead[-1] in _FIELD_END or (lead[-1].isdigit() and start == last_end) else None


def parse_answer(text: str) -> tuple[str, int, int, int]:
    """(caption, detail, semantic, motion) from a model answer; ValueError naming what is missing or malformed.

    A rating is a label (``Detail``, ``Detail quality``, ``**Semantic**``, ...) at the start of a line, after
    punctuation or right after another rating, then ``:``, ``=`` or `` - `` and one whole number 1-5 (``4/5``
    counts as 4). A labelled number that is anything else (``3-4``, ``-1``, ``0``, ``7``, ``4.5``) makes the
    answer malformed, as do two different values for one label. The caption is the text after ``Caption:``
    (else from the start) up to the next rating.
    """
    ratings: dict[str, int] = {}
    starts: list[int] = []
    last_end = -1
    lower = text.translate(_LOWER)  # same length and positions as text
    for m in _RATING.finditer(lower):
        start = _field_start(text, m.start(), last_end)
        token = m["value"].rstrip(".)!?").lstrip("(")
        if start is None or not _NUMERIC.match(token):
            continue  # "a room with 3 motion: 4 ..." and "Motion: the camera walks" are caption text
        name = m["label"].rstrip("s")
        valid = _VALID.fullmatch(token)
        if not valid:
            found = " ".join(text[m.start():m.end()].split())
            raise ValueError(f"no {name} rating (1-5) in the answer: {found!r} is not one whole number from 1 to 5")
        value = int(valid[1])
        if ratings.setdefault(name, value) != value:
            raise ValueError(f"no {name} rating (1-5) in the answer: two different values ({ratings[name]} and "
                             f"{value})")
        starts.append(start)
        last_end = m.end()
    for name in ("detail", "semantic", "motion"):
        if name not in ratings:
            raise ValueError(f"no {name} rating (1-5) in the answer")
    label = _CAPTION.search(lower)
    begin = label.end() if label else 0
    stop = min((s for s in starts if s >= begin), default=len(text))
    caption = " ".join(text[begin:stop].replace("*", " ").split()).strip(" -:")
    if len(caption) < 3:
        raise ValueError("no caption in the answer")
    return caption, ratings["detail"], ratings["semantic"], ratings["motion"]


@dataclass
class VlmResult:
    """The model's verdict on one clip."""

    caption: str | None
    detail: int | None = None
    semantic: int | None = None
    motion: int | None = None
    error: str | None = None
    """Why no valid answer was obtained (with the last raw answer), else None."""

    def scores(self) -> dict[str, float | None]:
        return {"vlm_detail": self.detail, "vlm_semantic": self.semantic, "vlm_motion": self.motion}

    def reject_reasons(self, spec: CaptionerSpec) -> list[str]:
        """Readable reasons for ratings below the spec's minimums."""
        if self.error:
            return []
        return [f"vlm_{name} {value} < {minimum}: the captioning model rates it low"
                for name, value, minimum in (("detail", self.detail, spec.min_vlm_detail),
                                             ("semantic", self.semantic, spec.min_vlm_semantic),
                                             ("motion", self.motion, spec.min_vlm_motion)) if value < minimum]


def model_frames(frames: np.ndarray, fps: float, spec: CaptionerSpec) -> tuple[np.ndarray, np.ndarray]:
    """The frames the model sees (N, h, w, 3) uint8 and their timestamps in seconds."""
    import cv2

    idx = np.unique(np.linspace(0, len(frames) - 1, min(spec.num_frames, len(frames))).round().astype(int))
    out = []
    for i in idx:
        f = frames[i]
        if spec.view == "crops":
            from dataset.core.conventions import crop_rotation, equirect_to_perspective

            side = spec.frame_size // 2
            views = [equirect_to_perspective(f, crop_rotation(yaw, 0.0), side, side) for yaw in (0, 90, 180, 270)]
            f = np.concatenate([np.concatenate(views[:2], 1), np.concatenate(views[2:], 1)], 0)
        else:
            h, w = f.shape[:2]
            scale = spec.frame_size / max(h, w)
            f = cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        out.append(f)
    return np.stack(out), idx / fps


def check_weights(spec: CaptionerSpec) -> None:
    """Before any work starts: ``FileNotFoundError`` naming the fix when ``spec.model`` is neither a checkpoint
    folder (with its ``config.json``) nor, unless downloads are allowed, a hub id in the local Hugging Face cache."""
    path = Path(spec.model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"captioner model {spec.model} has no config.json: give a VideoLLaMA3 checkpoint "
                                    "folder (e.g. a download of DAMO-NLP-SG/VideoLLaMA3-2B)")
        return
    if spec.allow_download:
        return
    from huggingface_hub import try_to_load_from_cache

    cached = None
    if spec.model.count("/") == 1 and not spec.model.startswith((".", "/", "~")):
        cached = try_to_load_from_cache(spec.model, "config.json")
    if not isinstance(cached, str):
        raise FileNotFoundError(f"captioner model {spec.model!r} is not here: no such folder, and not in the local "
                                "Hugging Face cache (nothing is downloaded unless captioner.allow_download is true): "
                                "give the folder of a VideoLLaMA3 checkpoint")


class VideoLlama3Captioner:
    """One VideoLLaMA3 model on one device, captioning and rating batches of clips."""

    def __init__(self, spec: CaptionerSpec) -> None:
        import torch
        from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration

        self.spec = spec
        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = spec.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        local_only = not spec.allow_download
        try:
            self.processor = AutoProcessor.from_pretrained(spec.model, local_files_only=local_only)
            self.model = VideoLlama3ForConditionalGeneration.from_pretrained(
                spec.model, local_files_only=local_only, dtype=getattr(torch, dtype)).to(device).eval()
        except (OSError, ValueError) as exc:  # missing folder, not in the cache, or not a VideoLLaMA3 checkpoint
            hint = "" if spec.allow_download else " (nothing is downloaded unless captioner.allow_download is true)"
            raise FileNotFoundError(f"cannot load VideoLLaMA3 from {spec.model!r}{hint}: "
                                    f"{' '.join(str(exc).split())[:300]}") from None
        self.processor.tokenizer.padding_side = "left"
        self.device = device

    def _generate(self, batch: list[tuple[np.ndarray, np.ndarray]], sample: bool, started: float,
                  budget: float) -> list[str]:
        """The raw answers; generation stops ``budget`` seconds after ``started`` (``time.time()``)."""
        import torch
        from transformers import MaxTimeCriteria, StoppingCriteriaList
        from transformers.video_utils import VideoMetadata

        prompt = PROMPT + (CROPS_NOTE if self.spec.view == "crops" else "")
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        metadata = []
        for frames, times in batch:
            step = float(times[1] - times[0]) if len(times) > 1 else 1.0
            metadata.append(VideoMetadata(total_num_frames=len(frames), fps=1.0 / max(step, 1e-3),
                                          frames_indices=list(range(len(frames)))))
        inputs = self.processor(text=[text] * len(batch), videos=[f for f, _ in batch], video_metadata=metadata,
                                return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.spec.max_new_tokens, do_sample=sample,
                                      temperature=0.7 if sample else None, top_p=0.9 if sample else None,
                                      stopping_criteria=StoppingCriteriaList([MaxTimeCriteria(budget, started)]))
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def annotate(self, videos: list[np.ndarray], fps: list[float]) -> list[VlmResult]:
        """Caption and rate clips given as (T, H, W, 3) uint8 equirect frames."""
        inputs = [model_frames(v, f, self.spec) for v, f in zip(videos, fps, strict=True)]
        results: list[VlmResult | None] = [None] * len(inputs)
        last: dict[int, str] = {}
        for attempt in range(self.spec.max_attempts):
            todo = [i for i, r in enumerate(results) if r is None]
            for start in range(0, len(todo), self.spec.batch_size):
                chunk = todo[start:start + self.spec.batch_size]
                started, budget = time.time(), self.spec.timeout_s * len(chunk)
                answers = self._generate([inputs[i] for i in chunk], attempt > 0, started, budget)
                parsed: list[tuple[str, int, int, int] | str] = []
                for answer in answers:
                    try:
                        parsed.append(parse_answer(answer))
                    except ValueError as exc:
                        parsed.append(f"{exc}; answer: {' '.join(answer.split())[:200]!r}")
                took = time.time() - started
                for i, verdict in zip(chunk, parsed, strict=True):
                    if took > budget:  # abandoned: a late or cut-off answer is not trusted, nor retried
                        results[i] = VlmResult(None, error=f"timed out: {took:.1f} s for a batch of {len(chunk)}, "
                                                           f"over captioner.timeout_s = {self.spec.timeout_s:g} s "
                                                           f"per clip (raise it, or lower max_new_tokens)")
                    elif isinstance(verdict, str):
                        last[i] = verdict
                    else:
                        results[i] = VlmResult(*verdict)
        return [r if r is not None else VlmResult(None, error=f"no valid answer after {self.spec.max_attempts} "
                                                          f"attempts ({last[i]})")
                for i, r in enumerate(results)]
