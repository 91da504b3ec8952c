"""Generation with the panoramic video model: Matrix-3D's sampler over our condition, then the VAE decode.

A request names a panorama + depth (files, or a dataset clip's frame 0), a trajectory (a preset, a file, or the
clip's own poses), a prompt and a model (a folder or ``tiny``) with an optional LoRA (the diffusers file that
``train-video`` writes, or a Matrix-3D / DiffSynth file). ``generate`` renders the guidance along the trajectory
(``inference.guidance``), builds the condition under the LoRA's recorded ``ConditionSpec`` (``condition.json``
beside the LoRA; the default spec without one), samples as Matrix-3D does (``steps`` shifted flow-matching sigmas,
Euler, classifier-free guidance on the text only: ``uncond + cfg * (cond - uncond)`` where ``uncond`` differs
from ``cond`` only by the negative prompt's embedding) from seeded CPU noise (the same seed gives the same start on
any device), and decodes the latents (un-normalised exactly inverse to ``inference.condition.encode_video``, the
width padded circularly in latent space so the panorama's left and right edges agree, tiled for large sizes).

Output folder: ``video.mp4`` (the generated panoramic video), ``cameras.json`` (Matrix-3D format: one
world-to-camera OpenCV 4x4 per frame, relative to the panorama's camera), ``rendered_rgb.mp4`` and
``rendered_mask.mp4`` (the guidance and its mask), ``contact_sheet.png`` (first, middle and last frame:
generated | guidance | mask), ``generation.json`` (everything the video was made with), and with a dataset clip
``clip.json`` (``{"dataset", "clip_id"}``), so that ``matrix-pano eval-video --pred DIR`` finds the ground truth.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from dataset.core.jobspec import StrictModel
from inference.condition import (
    CONDITION_FILE,
    ConditionInputs,
    ConditionSpec,
    _latent_normalisation,
    check_video_size,
    encode_condition,
    encode_text,
    read_condition_spec,
)
from inference.flow import NUM_TRAIN_TIMESTEPS, SHIFT, euler_step, sampling_sigmas
from inference.guidance import DEFAULT_THRESHOLD, GuidanceInputs
from inference.metrics import GENERATION_CLIP, GENERATION_VIDEO
from inference.wan import compute_dtype

if TYPE_CHECKING:
    from inference.wan import WanComponents

LoraFormat = Literal["diffusers", "matrix3d"]
"""A LoRA's key layout: diffusers' (``train-video``'s ``pytorch_lora_weights.safetensors``) or Matrix-3D's."""
LORA_FILE = "pytorch_lora_weights.safetensors"
"""The file diffusers' ``save_lora_weights`` writes and ``load_lora_weights`` reads in a LoRA folder."""
PRESET_FRAMES = 81
"""Frames of a preset trajectory unless told otherwise (Matrix-3D's 81)."""
MASK_CHANNELS = 4
"""Mask channels at the front of the condition (``inference.condition.build_condition``)."""
TILE_PX = 256
"""Tile side of the tiled VAE decode; smaller frames (after seam padding) decode in one piece."""
GENERATION_FILE = "generation.json"
"""What a generation output was made with."""


class GenerationRequest(StrictModel):
    """One ``matrix-pano generate`` run."""

    panorama: Path | None = None
    """Equirect RGB image (PNG/JPG); with ``depth``, instead of ``from_clip``."""
    depth: Path | None = None
    """Its range depth ``.npy`` (H, W) in metres, 0 = no depth."""
    from_clip: tuple[Path, str] | None = None
    """(dataset folder, clip id): the clip's frame 0 and depth, and without ``trajectory`` its own poses."""
    trajectory: str | None = None
    """A preset (``inference.guidance.PRESETS``) or a trajectory file; None: the clip's own poses."""
    frames: int | None = Field(None, ge=1, le=1001)
    """Frames to generate (4k+1): a preset's length (default 81), or the first poses of a file or clip (default
    all of them)."""
    movement: float = Field(0.5, ge=0, le=1)
    """A preset's path length as a fraction of the depth ahead."""
    safety: float = Field(0.0, ge=0, le=1)
    """Shrink the path so the camera stays within this fraction of the depth (0 = off)."""
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0, le=10)
    """Relative depth variation of the guidance mesh's invisible edges."""
    prompt: str = Field(min_length=1)
    """The caption the video is generated for."""
    negative_prompt: str = ""
    """The unconditional branch's text of classifier-free guidance."""
    model: str = "tiny"
    """Wan2.1 I2V folder (``inference.wan.load_wan``) or ``tiny``."""
    lora: Path | None = None
    """A LoRA file, or a folder holding ``pytorch_lora_weights.safetensors`` (and ``condition.json``)."""
    lora_format: LoraFormat | None = None
    """The LoRA's key layout; None: detected from its keys."""
    steps: int = Field(50, ge=1, le=1000)
    """Denoising steps."""
    cfg: float = Field(5.0, ge=0, le=50)
    """Classifier-free guidance scale on the text (1 = none: one transformer pass per step)."""
    shift: float = Field(SHIFT, gt=0, le=100)
    """Sigma shift of the sampling schedule."""
    seed: int = Field(0, ge=0, lt=2**63)
    """Seed of the initial noise (drawn on the CPU)."""
    fps: float = Field(12.0, gt=0, le=240)
    """Frame rate of the written videos for a panorama from files (a clip keeps its own)."""
    device: str | None = None
    """Torch device; None: CUDA when available, else CPU."""
    dtype: str | None = None
    """Transformer and text-encoder dtype (bf16, fp32, fp16); None: bf16 on a GPU, fp32 on a CPU."""
    progress: bool = True
    """Show a progress bar over the denoising steps on stderr."""

    @model_validator(mode="after")
    def _one_source(self) -> GenerationRequest:
        files = self.panorama is not None or self.depth is not None
        if files == (self.from_clip is not None) or (files and (self.panorama is None or self.depth is None)):
            raise ValueError("give --panorama PNG --depth NPY, or --from-clip DATASET_DIR CLIP_ID (not both)")
        if self.from_clip is None and self.trajectory is None:
            raise ValueError("a panorama from files needs --trajectory: a file or one of the presets")
        return self


# ---------------------------------------------------------------------------------------------- the sampler


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal float32 noise of ``shape`` from a CPU generator seeded with ``seed``: the same on any
    device the sampling then runs on."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def sample_latents(transformer: torch.nn.Module, inputs: ConditionInputs, negative_embeds: torch.Tensor,
                   steps: int = 50, cfg: float = 5.0, seed: int = 0, shift: float = SHIFT,
                   progress: bool = False) -> torch.Tensor:
    """Normalised latents (1, 16, F_lat, h, w) float32 sampled from seeded noise: Euler steps down
    ``sampling_sigmas(steps, shift)`` to 0 along the transformer's velocity, with classifier-free guidance
    ``uncond + cfg * (cond - uncond)`` where ``uncond`` sees ``negative_embeds`` instead of the prompt's
    embedding (same image tokens and condition); ``cfg`` 1 skips the unconditional pass. The transformer gets
    ``cat(sample, condition)`` in its own dtype and ``timestep = 1000 sigma``; the sample stays float32."""
    from tqdm import tqdm

    device, dtype = next(transformer.parameters()).device, compute_dtype(transformer)
    condition = inputs.condition.to(device, dtype)
    image = inputs.image_embeds.to(device, dtype)
    texts = [inputs.prompt_embeds.to(device, dtype)]
    if cfg != 1:
        texts.append(negative_embeds.to(device, dtype))
    channels = condition.shape[1] - MASK_CHANNELS  # condition = mask 4 | latents z: the noisy latents are z too
    sample = initial_noise((condition.shape[0], channels, *condition.shape[2:]), seed).to(device)
    sigmas = [*sampling_sigmas(steps, shift).tolist(), 0.0]
    for i in tqdm(range(steps), desc="denoising", unit="step", file=sys.stderr, disable=not progress):
        hidden = torch.cat([sample.to(dtype), condition], dim=1)
        timestep = torch.full((sample.shape[0],), NUM_TRAIN_TIMESTEPS * sigmas[i], device=device)
        cond, *uncond = (transformer(hidden_states=hidden, timestep=timestep, encoder_hidden_states=text,
                                     encoder_hidden_states_image=image, return_dict=False)[0].float()
                         for text in texts)
        velocity = uncond[0] + cfg * (cond - uncond[0]) if uncond else cond
        sample = euler_step(sample, velocity, sigmas[i], sigmas[i + 1])
    return sample


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, seam_pad_px: int = 0, tile_px: int | None = TILE_PX) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of normalised latents (1, 16, F_lat, h, w): un-normalised exactly inverse to
    ``encode_video`` (``z = latents / (1 / latents_std) + latents_mean``), the latent width padded circularly by
    ``seam_pad_px / 8`` columns on each side and the decoded pixels cropped by ``seam_pad_px``, so the left and
    right edges of the panorama agree; with ``tile_px``, frames larger than it decode in overlapping tiles of
    that side (diffusers' tiled decode; the VAE's tiling settings are restored afterwards)."""
    factor = vae.config.scale_factor_spatial
    if seam_pad_px % factor:
        raise ValueError(f"seam_pad_px {seam_pad_px} is not a multiple of the VAE's {factor}x compression")
    param = next(vae.parameters())
    mean, inv_std = _latent_normalisation(vae)
    z = latents.float().to(param.device) / inv_std.to(param.device) + mean.to(param.device)
    pad = seam_pad_px // factor
    if pad:
        z = torch.cat([z[..., -pad:], z, z[..., :pad]], dim=-1)
    saved = (vae.use_tiling, vae.tile_sample_min_height, vae.tile_sample_min_width,
             vae.tile_sample_stride_height, vae.tile_sample_stride_width)
    try:
        if tile_px:
            vae.enable_tiling(tile_sample_min_height=tile_px, tile_sample_min_width=tile_px,
                              tile_sample_stride_height=tile_px * 3 // 4, tile_sample_stride_width=tile_px * 3 // 4)
        else:
            vae.use_tiling = False
        pixels = vae.decode(z.to(param.dtype), return_dict=False)[0].float()
    finally:
        (vae.use_tiling, vae.tile_sample_min_height, vae.tile_sample_min_width,
         vae.tile_sample_stride_height, vae.tile_sample_stride_width) = saved
    if seam_pad_px:
        pixels = pixels[..., seam_pad_px:-seam_pad_px]
    frames = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, F, H, W)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


# ---------------------------------------------------------------------------------------------- LoRA


def lora_file(path: str | Path) -> Path:
    """The weights file of a LoRA given as a file or as a folder holding ``pytorch_lora_weights.safetensors``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / LORA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"LoRA {path} does not exist: give a LoRA file or a train-video output folder "
                                f"(with {LORA_FILE})")
    return path


def detect_lora_format(path: str | Path) -> LoraFormat:
    """``diffusers`` when the file's keys are diffusers' (``transformer.``-prefixed), else ``matrix3d``."""
    path = lora_file(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
    else:
        keys = list(torch.load(path, map_location="cpu", weights_only=True))
    return "diffusers" if keys and all(k.startswith("transformer.") for k in keys) else "matrix3d"


def load_lora(components, path: str | Path, fmt: LoraFormat | None = None) -> LoraFormat:
    """Apply a LoRA to ``components.transformer``: a diffusers file through ``load_lora_weights`` (its adapter
    metadata, e.g. ``lora_alpha``, read from the file), a Matrix-3D file merged by
    ``inference.wan.load_matrix3d_lora``. Returns the format used."""
    from inference.wan import load_matrix3d_lora

    file = lora_file(path)
    fmt = fmt or detect_lora_format(file)
    if fmt == "matrix3d":
        load_matrix3d_lora(components, file)
        return fmt
    try:
        with warnings.catch_warnings():
            # diffusers pads a LoRA without the image K/V (add_k_proj, add_v_proj) with zero adapters there, which
            # peft reports as targets beyond the file's config: harmless, the zeros change nothing.
            warnings.filterwarnings("ignore", "While injecting the PEFT adapters", RuntimeWarning)
            components.pipeline().load_lora_weights(str(file.parent), weight_name=file.name, local_files_only=True)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{file}: diffusers cannot load it as a Wan LoRA ({exc}); for a Matrix-3D file give "
                         "--lora-format matrix3d") from None
    return fmt


def lora_condition_spec(path: str | Path | None) -> tuple[ConditionSpec, str]:
    """The ``ConditionSpec`` recorded beside a LoRA (``condition.json`` in its folder) and where it came from;
    the default spec (Matrix-3D's) without a LoRA or without that file."""
    if path is None:
        return ConditionSpec(), "default"
    folder = Path(path).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    if (folder / CONDITION_FILE).is_file():
        return read_condition_spec(folder), str(folder / CONDITION_FILE)
    return ConditionSpec(), "default"


# ---------------------------------------------------------------------------------------------- the command


def request_inputs(request: GenerationRequest) -> tuple[GuidanceInputs, np.ndarray]:
    """The panorama inputs and the world poses to generate along (checked: 4k+1 frames, a 2:1 equirect with
    sides multiples of 16), before any model is loaded."""
    from inference.guidance import guidance_poses, inputs_from_clip, inputs_from_files

    inputs = (inputs_from_clip(*request.from_clip) if request.from_clip is not None
              else inputs_from_files(request.panorama, request.depth))
    preset_frames = request.frames or PRESET_FRAMES
    poses = guidance_poses(inputs, request.trajectory, preset_frames, request.movement, request.safety)
    if request.frames is not None:
        if len(poses) < request.frames:
            raise ValueError(f"--frames {request.frames}: the trajectory has only {len(poses)} poses")
        poses = poses[:request.frames]
    height, width = inputs.rgb.shape[:2]
    if width != 2 * height:
        raise ValueError(f"panorama is {width}x{height}: an equirect panorama is twice as wide as it is high")
    if inputs.depth.shape != (height, width):
        raise ValueError(f"depth {inputs.depth.shape} and panorama {(height, width)} sizes differ")
    try:
        check_video_size(len(poses), height, width)
    except ValueError as exc:
        hint = "" if request.frames is not None else "; give --frames N to use the trajectory's first N poses"
        raise ValueError(f"{exc}{hint}") from None
    return inputs, poses


def contact_sheet(generated: np.ndarray, guidance: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """First, middle and last frame, one row each: generated | guidance | mask."""
    picks = sorted({0, len(generated) // 2, len(generated) - 1})
    mask_rgb = np.repeat((np.asarray(mask, bool)[..., None] * 255).astype(np.uint8), 3, axis=-1)
    return np.concatenate([np.concatenate([generated[i], guidance[i], mask_rgb[i]], axis=1) for i in picks])


def generate(request: GenerationRequest, out_dir: str | Path, components: WanComponents | None = None) -> dict:
    """Run ``request`` and write its output folder (see the module doc); returns ``generation.json``'s content
    (with the seconds each stage took). ``components``: the model already loaded (from ``request.model``, which is
    then only recorded), to generate many videos with one load; a LoRA of the request is applied to it in place."""
    from PIL import Image

    from dataset.core.codecs import encode_mp4
    from inference.guidance import panorama_mesh, render_guidance, write_guidance
    from inference.wan import load_wan

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    inputs, poses = request_inputs(request)
    spec, spec_source = lora_condition_spec(request.lora)
    if request.lora is not None:
        lora_file(request.lora)  # a missing LoRA fails before the guidance is rendered
    out = Path(out_dir)
    fps = inputs.fps if inputs.fps is not None else request.fps
    write_guidance(out, inputs.rgb, inputs.depth, inputs.c2w, poses, fps, request.threshold)
    guidance, mask = render_guidance(panorama_mesh(inputs.rgb, inputs.depth, inputs.c2w, request.threshold), poses,
                                     inputs.rgb.shape[1])
    seconds["guidance"] = time.perf_counter() - start

    start = time.perf_counter()
    components = components or load_wan(request.model, request.dtype, request.device)
    lora_format = load_lora(components, request.lora, request.lora_format) if request.lora is not None else None
    seconds["load"] = time.perf_counter() - start

    start = time.perf_counter()
    condition = encode_condition(components, guidance, mask.astype(np.float32), inputs.rgb, request.prompt, spec)
    negative = encode_text(components.text_encoder, components.tokenizer, request.negative_prompt)
    seconds["condition"] = time.perf_counter() - start

    start = time.perf_counter()
    latents = sample_latents(components.transformer, condition, negative, request.steps, request.cfg, request.seed,
                             request.shift, request.progress)
    seconds["sampling"] = time.perf_counter() - start

    start = time.perf_counter()
    video = decode_latents(components.vae, latents, spec.seam_pad_px)
    seconds["decode"] = time.perf_counter() - start

    (out / GENERATION_VIDEO).write_bytes(encode_mp4(video, fps))
    Image.fromarray(contact_sheet(video, guidance, mask)).save(out / "contact_sheet.png")
    summary = {
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "seed": request.seed,
        "steps": request.steps, "cfg": request.cfg, "shift": request.shift, "model": request.model,
        "lora": None if request.lora is None else str(request.lora), "lora_format": lora_format,
        "condition": spec.model_dump(), "condition_source": spec_source, "frames": len(video),
        "size": [int(video.shape[2]), int(video.shape[1])], "fps": fps, "trajectory": request.trajectory,
        "device": str(next(components.transformer.parameters()).device),
        "dtype": str(next(components.transformer.parameters()).dtype).removeprefix("torch."),
        "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    if request.from_clip is not None:
        dataset_dir, clip_id = request.from_clip
        summary["from_clip"] = {"dataset": str(Path(dataset_dir).resolve()), "clip_id": clip_id}
        (out / GENERATION_CLIP).write_text(json.dumps(summary["from_clip"]) + "\n")
    (out / GENERATION_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
