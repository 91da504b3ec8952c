"""The condition of the panoramic video model, exactly as Matrix-3D builds it for Wan2.1 I2V.

Per clip: the guidance video (mesh renders along the trajectory, ``inference.guidance``) with its unknown pixels
(mask < 0.5) set to ``unknown_fill`` (-1, black) goes through the VAE and is normalised with the VAE's
``latents_mean`` / ``latents_std``; the mask (1 = known) is bilinear-downsampled to the latent size, its frame 0
repeated 4 times and viewed as 4 channels x latent frames. ``build_condition`` returns
``cat(mask 4, condition 16)``, so that the DiT input is ``cat(noisy 16, mask 4, condition 16)`` = 36 channels.
For a first-frame-only guidance with ``unknown_fill`` 0 this is exactly diffusers'
``WanImageToVideoPipeline.prepare_latents``. Global guidance: the image embedding of the whole panorama, squashed
(never centre-cropped) to the image encoder's size, and the prompt's umT5 embedding padded to 512 tokens.

Frame 0 (``Frame0Policy``): ``render`` is Matrix-3D's (frame 0 is the mesh render at the panorama's own pose,
black depth edges included, and the image encoder sees that masked render too); ``panorama`` puts the clean panorama
there (mask 1) and gives it to the image encoder. The policy and the other choices live in a ``ConditionSpec``
that training writes beside every checkpoint (``condition.json``) and inference reads back, so the two agree.

Seam: the equirect's left and right edges are neighbours on the sphere, but a VAE sees two image borders. The
width is padded circularly by ``seam_pad_px`` on each side before the VAE and the latents are cropped after;
``seam_error`` measures how far encoding is from commuting with a horizontal roll.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError, field_validator

from dataset.core.jobspec import StrictModel
from inference.wan import TEXT_LEN

if TYPE_CHECKING:
    from inference.wan import WanComponents

Frame0Policy = Literal["render", "panorama"]
"""What frame 0 of the guidance and the image encoder see: the mesh render (Matrix-3D) or the clean panorama."""
CONDITION_FILE = "condition.json"
"""The ``ConditionSpec`` a checkpoint folder was trained with."""
MASK_THRESHOLD = 0.5
"""Guidance pixels whose mask is below this are unknown."""
TEMPORAL = 4
"""Frames per latent frame of the Wan VAE (after the first)."""
SIZE_MULTIPLE = 16
"""Heights and widths must be multiples of this: 8x VAE compression times the DiT's 2x2 patches."""


class ConditionSpec(StrictModel):
    """How the condition is built; saved with every checkpoint so training and inference build the same one."""

    frame0: Frame0Policy = "render"
    """Frame 0 of the guidance and the image encoder's input: ``render`` (Matrix-3D) or ``panorama``."""
    seam_pad_px: int = Field(32, ge=0, le=512)
    """Pixels of circular padding on each side of the width before the VAE (a multiple of 8; 0 = off)."""
    unknown_fill: float = Field(-1.0, ge=-1.0, le=1.0)
    """Pixel value (in [-1, 1]) of unknown guidance pixels: -1 (black) as Matrix-3D; diffusers' stock I2V uses 0."""

    @field_validator("seam_pad_px")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"seam_pad_px must be a multiple of 8 (the VAE's compression), got {value}: use "
                             f"{value // 8 * 8} or {value // 8 * 8 + 8}")
        return value


def write_condition_spec(folder: str | Path, spec: ConditionSpec) -> Path:
    """Write ``spec`` as ``folder/condition.json``."""
    path = Path(folder) / CONDITION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.model_dump_json(indent=2) + "\n")
    return path


def read_condition_spec(folder: str | Path) -> ConditionSpec:
    """The ``ConditionSpec`` recorded in ``folder/condition.json`` (a checkpoint or LoRA folder)."""
    path = Path(folder) / CONDITION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a checkpoint folder written by train-video records its "
                                "condition there")
    try:
        return ConditionSpec.model_validate_json(path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{path}: {'.'.join(map(str, first['loc'])) or 'file'}: {first['msg']}") from None


def check_video_size(frames: int, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``frames`` is 4k+1 and ``height``, ``width`` are multiples of 16 (never rounded
    silently: the message names the nearest valid values)."""
    if frames < 1 or (frames - 1) % TEMPORAL:
        low = max(1, (frames - 1) // TEMPORAL * TEMPORAL + 1)
        raise ValueError(f"{frames} frames: Wan needs 4k+1 frames (nearest: {low} or {low + TEMPORAL})")
    for name, value in (("height", height), ("width", width)):
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            low = max(SIZE_MULTIPLE, value // SIZE_MULTIPLE * SIZE_MULTIPLE)
            raise ValueError(f"{name} {value}: Wan needs multiples of {SIZE_MULTIPLE} "
                             f"(nearest: {low} or {low + SIZE_MULTIPLE})")


def to_pixels(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) uint8, or float in [-1, 1], -> (1, 3, F, H, W) float32 in [-1, 1]."""
    video = torch.as_tensor(np.asarray(video) if isinstance(video, np.ndarray) else video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video (F, H, W, 3), got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        video = video.float() / 127.5 - 1.0
    else:
        video = video.float()
        if video.min() < -1.0 or video.max() > 1.0:
            raise ValueError("a float video must lie in [-1, 1] (pass uint8 for 0..255 pixels)")
    return video.permute(3, 0, 1, 2).unsqueeze(0)


def _latent_normalisation(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / std) of the VAE's latents as (1, z, 1, 1, 1) float32, formed as ``prepare_latents`` forms them."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)
    return mean.float(), inv_std.float()


@torch.no_grad()
def encode_video(vae, pixels: torch.Tensor, seam_pad_px: int = 0) -> torch.Tensor:
    """Normalised VAE latents (1, 16, F_lat, H/8, W/8) float32 of ``pixels`` (1, 3, F, H, W) in [-1, 1]: the
    distribution's mode, ``(z - latents_mean) / latents_std``. With ``seam_pad_px`` the width is padded
    circularly before encoding and the latents cropped after. Target and condition latents both come from here."""
    factor = vae.config.scale_factor_spatial
    if seam_pad_px % factor:
        raise ValueError(f"seam_pad_px {seam_pad_px} is not a multiple of the VAE's {factor}x compression")
    x = pixels
    if seam_pad_px:
        x = torch.cat([x[..., -seam_pad_px:], x, x[..., :seam_pad_px]], dim=-1)
    param = next(vae.parameters())
    latents = vae.encode(x.to(param.device, param.dtype)).latent_dist.mode().float()
    if seam_pad_px:
        crop = seam_pad_px // factor
        latents = latents[..., crop:-crop]
    mean, inv_std = _latent_normalisation(vae)
    return (latents - mean.to(latents.device)) * inv_std.to(latents.device)


def latent_mask(mask: np.ndarray | torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """The 4 mask channels (1, 4, F_lat, h, w) float32 of a mask (F, H, W) in [0, 1] (1 = known): bilinear to
    ``latent_size``, frame 0 repeated 4 times, then every 4 consecutive frames are one latent frame's channels."""
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).float()
    if m.ndim != 3:
        raise ValueError(f"expected a mask (F, H, W), got shape {tuple(m.shape)}")
    frames = m.shape[0]
    m = F.interpolate(m[:, None], size=latent_size, mode="bilinear", align_corners=False)[:, 0]  # (F, h, w)
    m = m[None, None]  # (1, 1, F, h, w)
    m = torch.cat([m[:, :, :1].repeat_interleave(TEMPORAL, dim=2), m[:, :, 1:]], dim=2)
    return m.view(1, (frames + TEMPORAL - 1) // TEMPORAL, TEMPORAL, *latent_size).transpose(1, 2)


def build_condition(vae, guidance: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                    spec: ConditionSpec | None = None) -> torch.Tensor:
    """The DiT's condition (1, 20, F_lat, H/8, W/8) float32: ``cat(mask 4, VAE latents 16)`` of a guidance video
    (F, H, W, 3) (uint8, or float in [-1, 1]) whose pixels with ``mask`` (F, H, W) < 0.5 become
    ``spec.unknown_fill``. F must be 4k+1 and H, W multiples of 16. Cast it to the transformer's dtype at use."""
    spec = spec or ConditionSpec()
    pixels = to_pixels(guidance)
    _, _, frames, height, width = pixels.shape
    check_video_size(frames, height, width)
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).float()
    if tuple(m.shape) != (frames, height, width):
        raise ValueError(f"mask shape {tuple(m.shape)} does not match the guidance's {(frames, height, width)}")
    known = (m >= MASK_THRESHOLD)[None, None]
    pixels = torch.where(known, pixels, torch.tensor(spec.unknown_fill, dtype=pixels.dtype))
    latents = encode_video(vae, pixels, spec.seam_pad_px)
    return torch.cat([latent_mask(m, latents.shape[-2:]).to(latents.device), latents], dim=1)


def apply_frame0_policy(guidance: np.ndarray, mask: np.ndarray, panorama: np.ndarray, spec: ConditionSpec
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(guidance, mask, image for the image encoder) under ``spec.frame0``, all uint8 pixels: ``render`` keeps the
    guidance and mask and gives the encoder frame 0 as the VAE sees it (unknown pixels filled with
    ``spec.unknown_fill``, black by default: Matrix-3D's masked render); ``panorama`` puts the panorama
    (H, W, 3) into frame 0 with mask 1 and gives the encoder the panorama. The inputs are not modified."""
    guidance, panorama = np.asarray(guidance), np.asarray(panorama)
    if guidance.dtype != np.uint8 or panorama.dtype != np.uint8:
        raise ValueError(f"guidance ({guidance.dtype}) and panorama ({panorama.dtype}) must be uint8 pixels here")
    if spec.frame0 == "panorama":
        if panorama.shape != guidance.shape[1:]:
            raise ValueError(f"panorama {panorama.shape} and guidance frames {guidance.shape[1:]} differ in size")
        guidance, mask = guidance.copy(), np.array(mask, dtype=np.float32)
        guidance[0] = panorama
        mask[0] = 1.0
        return guidance, mask, panorama
    fill = np.uint8(round((spec.unknown_fill + 1.0) * 127.5))
    image = np.where((np.asarray(mask[0]) >= MASK_THRESHOLD)[..., None], guidance[0], fill)
    return guidance, mask, image


@torch.no_grad()
def encode_image(image_encoder, image_processor, image: np.ndarray) -> torch.Tensor:
    """Image tokens (1, N, D) of a whole equirect (H, W, 3) uint8: squashed to the encoder's square input (the
    processor's centre crop is turned off: it would drop half of a 2:1 panorama), and the encoder's penultimate
    hidden states, as diffusers' Wan I2V uses them."""
    side = image_encoder.config.image_size
    inputs = image_processor(images=[np.asarray(image)], do_center_crop=False, size={"height": side, "width": side},
                             return_tensors="pt")
    param = next(image_encoder.parameters())
    out = image_encoder(pixel_values=inputs.pixel_values.to(param.device, param.dtype), output_hidden_states=True)
    return out.hidden_states[-2]


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning (HTML entities unescaped twice, whitespace collapsed), without ftfy's mojibake repair."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


@torch.no_grad()
def encode_text(text_encoder, tokenizer, prompts: str | list[str]) -> torch.Tensor:
    """umT5 embeddings (B, 512, D) of the prompts: tokens padded (and truncated) to 512, the encoder run with
    the attention mask, and the positions after each prompt's last token set to 0, as Wan and diffusers do."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    tokens = tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=TEXT_LEN,
                       truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    ids, attention = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    hidden = text_encoder(ids, attention).last_hidden_state
    return hidden * attention[..., None].to(hidden.dtype)


@dataclass
class ConditionInputs:
    """Everything the DiT is conditioned on for one clip besides the noisy latents."""

    condition: torch.Tensor
    """(1, 20, F_lat, h, w) float32: mask 4 | condition latents 16."""
    image_embeds: torch.Tensor
    """(1, N, D) image tokens of the frame-0 image."""
    prompt_embeds: torch.Tensor
    """(1, 512, D) text embedding."""


def encode_condition(components: WanComponents, guidance: np.ndarray, mask: np.ndarray, panorama: np.ndarray,
                     prompt: str, spec: ConditionSpec | None = None) -> ConditionInputs:
    """The condition, image and text embeddings of one clip under ``spec`` (its frame-0 policy applied first)."""
    spec = spec or ConditionSpec()
    guidance, mask, image = apply_frame0_policy(guidance, mask, panorama, spec)
    return ConditionInputs(
        condition=build_condition(components.vae, guidance, mask, spec),
        image_embeds=encode_image(components.image_encoder, components.image_processor, image),
        prompt_embeds=encode_text(components.text_encoder, components.tokenizer, prompt))


@torch.no_grad()
def seam_error(vae, panorama: np.ndarray | torch.Tensor, seam_pad_px: int = 0, shift_px: int | None = None
               ) -> float:
    """How far VAE encoding is from commuting with a horizontal roll of the panorama: the relative error
    ``|E(roll(x)) - roll(E(x))| / |E(x)|`` of the normalised latents, rolling by ``shift_px`` (default half the
    width, which moves the seam to the middle). ``panorama`` is (H, W, 3) or a video (F, H, W, 3)."""
    video = panorama[None] if panorama.ndim == 3 else panorama
    pixels = to_pixels(video)
    factor = vae.config.scale_factor_spatial
    shift_px = pixels.shape[-1] // 2 if shift_px is None else shift_px
    if shift_px % factor:
        raise ValueError(f"shift_px {shift_px} is not a multiple of the VAE's {factor}x compression")
    base = encode_video(vae, pixels, seam_pad_px)
    rolled = encode_video(vae, torch.roll(pixels, shift_px, dims=-1), seam_pad_px)
    expected = torch.roll(base, shift_px // factor, dims=-1)
    return float((rolled - expected).norm() / base.norm())
