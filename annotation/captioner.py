"""Captions and 1-5 quality ratings of clips by VideoLLaMA3 (``transformers``' native implementation).

Each clip is shown to the model as a short video: ``num_frames`` frames sampled evenly, either the
equirect panorama itself or 4 horizontal perspective crops tiled 2 x 2 (``view``), with their real
timestamps. One prompt asks for a caption and three ratings in a fixed format; ``parse_answer``
reads it leniently (markdown, "4/5", words around). A malformed answer is retried with sampling, then
recorded as the clip's error: it never stops the job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

_RATING = {name: re.compile(rf"{name}[a-z ]*\W{{0,4}}\s*[:=\-]?\s*\**\s*([1-5])(?:\s*/\s*5)?(?!\.?[0-9])", re.I)
           for name in ("detail", "semantic", "motion")}
_CAPTION = re.compile(r"caption\W*:\s*\**\s*(.+?)(?=\n\s*\**\s*(?:detail|semantic|motion)\b|\Z)", re.I | re.S)


def parse_answer(text: str) -> tuple[str, int, int, int]:
    """(caption, detail, semantic, motion) from a model answer; ValueError naming what is missing."""
    ratings = {}
    for name, pattern in _RATING.items():
        m = pattern.search(text)
        if not m:
            raise ValueError(f"no {name} rating (1-5) in the answer")
        ratings[name] = int(m.group(1))
    m = _CAPTION.search(text)
    caption = m.group(1) if m else text[: min(_RATING[n].search(text).start() for n in _RATING)]
    caption = " ".join(caption.replace("*", " ").split()).strip(" -:")
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

    def _generate(self, batch: list[tuple[np.ndarray, np.ndarray]], sample: bool) -> list[str]:
        import torch
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
                                      temperature=0.7 if sample else None, top_p=0.9 if sample else None)
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
                answers = self._generate([inputs[i] for i in chunk], sample=attempt > 0)
                for i, answer in zip(chunk, answers, strict=True):
                    try:
                        caption, d, s, m = parse_answer(answer)
                        results[i] = VlmResult(caption, d, s, m)
                    except ValueError as exc:
                        last[i] = f"{exc}"
                        last[i] += f"; answer: {' '.join(answer.split())[:200]!r}"
        return [r if r is not None else VlmResult(None, error=f"no valid answer after {self.spec.max_attempts} "
                                                          f"attempts ({last[i]})")
                for i, r in enumerate(results)]
