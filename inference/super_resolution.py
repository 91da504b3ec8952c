"""Super-resolution of the perspective crops a reconstruction is fitted to (``ReconConfig.super_resolution``).

Matrix-3D runs StableSR on its keyframe crops (FACTS.md "Models"; not on PyPI): a generated 960x480 panorama has
about 240 px per 90 degrees, so 512 px crops cut from it are blurred upsamplings. The hook takes any transformers
image super-resolution folder (``AutoModelForImageToImage`` + ``AutoImageProcessor``: Swin2SR, e.g. a download of
caidas/swin2SR-classical-sr-x2-64), loaded ``local_files_only`` from safetensors weights, or ``tiny``: a small
Swin2SR (x2) with random, seeded weights written once into the cache (``inference.wan.cached_folder``) and loaded
by the same code. The crops are cut at ``crop_size / scale`` and upscaled to ``crop_size``; held-out ground truth
is never upscaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.wan import ModelFolderError, cached_folder, check_processor_folder, default_device

TINY = "tiny"
"""The preset name ``load_super_resolution`` accepts instead of a folder."""
TINY_REVISION = 1
"""Bumped whenever the tiny config changes, so an old cached tiny folder is not reused."""
BATCH = 16
"""Crops per forward pass."""
_EXPECTED = ("a transformers image super-resolution folder with config.json, preprocessor_config.json and "
             "*.safetensors weights (e.g. a download of caidas/swin2SR-classical-sr-x2-64), or 'tiny'")


@dataclass
class SuperResolution:
    """A transformers image-to-image super-resolution model with its processor, in eval mode."""

    model: Any
    """An ``AutoModelForImageToImage`` model (its output's ``reconstruction`` is the upscaled image)."""
    processor: Any
    """Its ``AutoImageProcessor`` (rescaling to [0, 1], padding to the model's window multiple)."""
    scale: int
    """Upscaling factor (the config's ``upscale``)."""

    def upscale(self, images: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 -> (N, h * scale, w * scale, 3) uint8 (the padding the processor adds is cut off)."""
        images = np.asarray(images)
        h, w = images.shape[1:3]
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(images), BATCH):
            inputs = self.processor(images=list(images[start:start + BATCH]), return_tensors="pt").to(device)
            with torch.no_grad():
                rec = self.model(**inputs).reconstruction[:, :, :h * self.scale, :w * self.scale]
            out.append((rec.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)


def load_super_resolution(path_or_tiny: str | Path, device: torch.device | str | None = None) -> SuperResolution:
    """A super-resolution model from a local transformers folder (safetensors only, nothing downloads) or
    ``tiny``; ``device`` defaults to the GPU when there is one, fp32."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageToImage

    folder = tiny_folder() if str(path_or_tiny) == TINY else Path(path_or_tiny).expanduser()
    check_processor_folder(folder, "super-resolution", _EXPECTED)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    scale = int(getattr(config, "upscale", 0) or 0)
    if scale < 2:
        raise ModelFolderError(f"{folder} holds a {config.model_type!r} model without an upscale factor of 2 or "
                               "more in its config: not a super-resolution model")
    try:
        model = AutoModelForImageToImage.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                         dtype=torch.float32)
    except ValueError as exc:
        raise ModelFolderError(f"{folder} is not a transformers image-to-image model: {exc}") from None
    device = torch.device(device) if device is not None else default_device()
    model.to(device).eval().requires_grad_(False)
    return SuperResolution(model=model, processor=AutoImageProcessor.from_pretrained(folder, local_files_only=True),
                           scale=scale)


def save_tiny(folder: str | Path, seed: int = 0) -> Path:
    """Write a small Swin2SR x2 (one stage of 2 blocks, width 16, window 4) with random weights drawn from
    ``seed`` and its image processor as a transformers folder (safetensors). The global RNG is left as it was."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    config = Swin2SRConfig(image_size=16, embed_dim=16, depths=[2], num_heads=[2], window_size=4, upscale=2,
                           mlp_ratio=2.0, upsampler="pixelshuffle")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Swin2SRForImageSuperResolution(config)
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    Swin2SRImageProcessor(size_divisor=config.window_size).save_pretrained(folder)
    return folder


def tiny_folder(seed: int = 0) -> Path:
    """The cached tiny super-resolution folder for ``seed``, written on first use."""
    import transformers

    return cached_folder(f"sr-tiny-r{TINY_REVISION}-seed{seed}-t{transformers.__version__}", "config.json",
                         lambda folder: save_tiny(folder, seed))


__all__ = ["SuperResolution", "TINY", "load_super_resolution", "save_tiny", "tiny_folder"]
