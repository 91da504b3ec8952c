"""Generation: the Euler/CFG sampler lands on the data for an oracle velocity, the decode inverts the encode's
normalisation and keeps the seam, and ``matrix-pano generate`` runs end to end on a rendered panorama and on a
dataset clip (deterministic for a seed, cameras.json = the requested poses, LoRAs of both formats, clear errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.cli import main
from dataset.core.codecs import decode_mp4
from dataset.core.conventions import load_matrix3d_cameras, pose_from_heading, save_matrix3d_cameras
from inference.condition import ConditionInputs, ConditionSpec, _latent_normalisation, encode_video, to_pixels
from inference.flow import sampling_sigmas
from inference.generate import (
    GenerationRequest,
    decode_latents,
    detect_lora_format,
    generate,
    initial_noise,
    sample_latents,
)
from inference.wan import load_wan, save_tiny

FRAMES, WIDTH = 5, 64
"""Clip length (4k+1) and equirect width of the end-to-end runs: 5 x 32 x 64 frames, latents 2 x 4 x 8."""


class OracleVelocity(torch.nn.Module):
    """A transformer double whose velocity is exact for known data: ``(x - x0) / sigma`` = noise - x0 on the
    straight path from x0, with x0 = ``base + text.mean() * offset`` (so the text embedding moves the target).
    Records the timesteps and the condition channels it was given."""

    def __init__(self, base: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the sampler a device and dtype
        self.base, self.offset = base, offset
        self.timesteps: list[float] = []
        self.conditions: list[torch.Tensor] = []

    def target(self, text: torch.Tensor) -> torch.Tensor:
        return self.base + text.mean() * self.offset

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image, return_dict):
        z = self.base.shape[1]
        x, condition = hidden_states[:, :z], hidden_states[:, z:]
        sigma = timestep.double() / 1000
        self.timesteps.append(float(timestep[0]))
        self.conditions.append(condition)
        velocity = (x.double() - self.target(encoder_hidden_states).double()) / sigma.view(-1, 1, 1, 1, 1)
        return (velocity.float() * self.scale,)


def oracle_inputs(text_value: float) -> tuple[OracleVelocity, ConditionInputs]:
    gen = torch.Generator().manual_seed(7)
    base, offset = torch.randn(1, 16, 2, 4, 8, generator=gen), torch.randn(1, 16, 2, 4, 8, generator=gen)
    condition = torch.randn(1, 20, 2, 4, 8, generator=gen)
    inputs = ConditionInputs(condition, torch.randn(1, 3, 8, generator=gen), torch.full((1, 512, 8), text_value))
    return OracleVelocity(base, offset), inputs


def test_sampler_with_an_oracle_velocity_lands_on_the_data_and_guides_by_the_text_only():
    model, inputs = oracle_inputs(1.0)
    out = sample_latents(model, inputs, inputs.prompt_embeds, steps=6, cfg=1.0, seed=3)
    assert torch.allclose(out, model.target(inputs.prompt_embeds), atol=1e-5), "Euler lands on x0 at sigma 0"
    assert model.timesteps == pytest.approx((1000 * sampling_sigmas(6)).tolist()), "timestep = 1000 sigma, shifted"
    assert all(torch.equal(c, inputs.condition) for c in model.conditions), "condition = channels 16:36"

    same_a = sample_latents(model, inputs, inputs.prompt_embeds.clone(), steps=6, cfg=5.0, seed=3)
    assert torch.equal(same_a, out), "CFG with identical cond / uncond equals cfg 1"

    negative = torch.full((1, 512, 8), -0.5)
    guided = sample_latents(model, inputs, negative, steps=6, cfg=5.0, seed=3)
    x0_c, x0_u = model.target(inputs.prompt_embeds), model.target(negative)
    assert torch.allclose(guided, x0_u + 5.0 * (x0_c - x0_u), atol=1e-4), "uncond + cfg (cond - uncond)"
    assert not torch.allclose(guided, out, atol=1e-2)


def test_initial_noise_is_seeded_on_the_cpu():
    a, b, c = initial_noise((2, 3, 4), 11), initial_noise((2, 3, 4), 11), initial_noise((2, 3, 4), 12)
    assert torch.equal(a, b) and not torch.allclose(a, c) and a.device.type == "cpu" and a.dtype == torch.float32
    model, inputs = oracle_inputs(1.0)
    start = sample_latents(model, inputs, inputs.prompt_embeds, steps=1, cfg=1.0, seed=11)
    assert torch.allclose(start, model.target(inputs.prompt_embeds), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("wan") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return load_wan(tiny_folder, device="cpu")


def test_a_bf16_transformer_samples_and_trains_in_bf16(tiny_folder):
    """diffusers keeps some of the transformer's modules in fp32 (its first parameter among them): inputs must be
    cast to the weights' dtype, for sampling and for the training loss (with fp32 LoRA weights on top)."""
    from training.video import LoraSpec, add_lora, flow_loss

    transformer = load_wan(tiny_folder, dtype="bf16", device="cpu", parts=("transformer",)).transformer
    assert next(transformer.parameters()).dtype == torch.float32  # scale_shift_table
    gen = torch.Generator().manual_seed(0)
    cfg = transformer.config
    image = torch.randn(1, 5, cfg.image_dim, generator=gen)
    inputs = ConditionInputs(torch.randn(1, 20, 2, 4, 8, generator=gen), image,
                             torch.randn(1, 512, cfg.text_dim, generator=gen))
    out = sample_latents(transformer, inputs, torch.zeros_like(inputs.prompt_embeds), steps=2, cfg=3.0)
    assert out.dtype == torch.float32 and out.shape == (1, 16, 2, 4, 8) and torch.isfinite(out).all()
    params = add_lora(transformer, LoraSpec(rank=2, alpha=2))
    batch = {"latents": torch.randn(1, 16, 2, 4, 8, generator=gen), "condition": inputs.condition,
             "text": inputs.prompt_embeds, "image": inputs.image_embeds}
    loss = flow_loss(transformer, batch, torch.randn(1, 16, 2, 4, 8, generator=gen), torch.tensor([0.5]),
                     torch.tensor([1.0]))
    loss.backward()
    assert torch.isfinite(loss) and all(p.dtype == torch.float32 and p.grad is not None for p in params)


def smooth_panorama(frames: int = 1, h: int = 32, w: int = 64) -> np.ndarray:
    """A smooth equirect video (F, H, W, 3) uint8, continuous across its seam."""
    u = np.arange(w) / w * 2 * np.pi
    v = np.arange(h)[:, None] / h * np.pi
    base = np.stack([np.sin(u + k) * np.sin(v) for k in (0, 2, 4)], -1)
    return np.stack([((base + 1) * 127.5 * (1 - 0.05 * i)).astype(np.uint8) for i in range(frames)])


def test_decode_inverts_the_encode_normalisation_and_seam_padding_keeps_the_edges_together(tiny):
    vae = tiny.vae
    raw = torch.randn(1, 16, 2, 4, 8, generator=torch.Generator().manual_seed(0))
    mean, inv_std = _latent_normalisation(vae)
    with torch.no_grad():
        direct = vae.decode(raw, return_dict=False)[0]
    direct = ((direct[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    ours = decode_latents(vae, (raw - mean) * inv_std, seam_pad_px=0, tile_px=None)
    assert ours.shape == (FRAMES, 32, 64, 3) and np.abs(ours.astype(int) - direct.astype(int)).max() <= 1

    latents = encode_video(vae, to_pixels(smooth_panorama(FRAMES)), 32)

    def roll_error(pad: int) -> float:  # decoding a latent rolled by half the width vs rolling the decoded frames
        a = decode_latents(vae, latents, pad, tile_px=None).astype(float)
        b = decode_latents(vae, torch.roll(latents, 4, dims=-1), pad, tile_px=None).astype(float)
        return float(np.abs(np.roll(a, 32, axis=2) - b).mean())

    assert roll_error(32) < 0.5 * roll_error(0), "circular padding makes the seam an ordinary column"
    assert vae.use_tiling is False, "the VAE's tiling setting is restored"


def test_tiled_decode_matches_one_piece_decode(tiny):
    latents = torch.randn(1, 16, 2, 8, 16, generator=torch.Generator().manual_seed(1))
    whole = decode_latents(tiny.vae, latents, 0, tile_px=None).astype(float)
    tiled = decode_latents(tiny.vae, latents, 0, tile_px=64).astype(float)
    assert tiled.shape == whole.shape == (FRAMES, 64, 128, 3)
    assert np.abs(tiled - whole).mean() < 8, "overlapping tiles blend into the same video"
    assert tiny.vae.use_tiling is False


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    """A rendered 64 x 32 panorama of a procedural room, its depth, and 5 world poses as a Matrix-3D camera file."""
    from PIL import Image

    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.sources import load_scene

    out = tmp_path_factory.mktemp("scene_files")
    with EmbeddedRenderer(load_scene("procedural:room:6x8x3"), RenderSettings(threads=1)) as r:
        f = r.render(pose_from_heading((0, 0, 1.6), 0.0), WIDTH)
    Image.fromarray(f.rgb[0]).save(out / "pano.png")
    np.save(out / "depth.npy", f.depth[0])
    poses = np.stack([pose_from_heading((0.1 * i, 0.05 * i, 1.6), 0.1 * i) for i in range(FRAMES)])
    save_matrix3d_cameras(out / "path.json", poses)
    return out, poses


def test_generate_from_files_is_deterministic_for_a_seed_and_writes_the_requested_cameras(tiny, scene_files,
                                                                                        tmp_path):
    folder, poses = scene_files
    request = {"panorama": folder / "pano.png", "depth": folder / "depth.npy", "trajectory": str(folder / "path.json"),
               "prompt": "a living room with a sofa", "negative_prompt": "blurry", "steps": 2, "seed": 5,
               "progress": False}
    summary = generate(GenerationRequest(**request), tmp_path / "a", tiny)
    generate(GenerationRequest(**request), tmp_path / "b", tiny)
    generate(GenerationRequest(**{**request, "seed": 6}), tmp_path / "c", tiny)

    a, b, c = (decode_mp4((tmp_path / x / "video.mp4").read_bytes()) for x in "abc")
    assert a.shape == (FRAMES, 32, WIDTH, 3)
    assert (tmp_path / "a" / "video.mp4").read_bytes() == (tmp_path / "b" / "video.mp4").read_bytes()
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1, "another seed, another video"
    requested = load_matrix3d_cameras(tmp_path / "a" / "cameras.json")
    assert np.allclose(requested, poses, atol=1e-9), "cameras.json (w2c) inverts to the requested c2w"
    for name in ("rendered_rgb.mp4", "rendered_mask.mp4", "contact_sheet.png", "generation.json"):
        assert (tmp_path / "a" / name).is_file(), name
    assert not (tmp_path / "a" / "clip.json").exists()
    recorded = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert recorded["seed"] == 5 and recorded["steps"] == 2 and recorded["cfg"] == 5.0
    assert recorded["frames"] == FRAMES and recorded["size"] == [WIDTH, 32] and recorded == summary
    assert recorded["condition"] == ConditionSpec().model_dump() and recorded["condition_source"] == "default"


@pytest.fixture(scope="module")
def clip_dataset(tmp_path_factory) -> Path:
    """A built dataset of one 5-frame 64 x 32 clip, committed as ``matrix-pano build`` does it."""
    from dataset.core.jobspec import JobSpec
    from dataset.jobs.clips import clip_row
    from dataset.render.embedded import EmbeddedRenderer
    from dataset.sources import load_scene
    from dataset.store.shards import ShardWriter

    scene = "procedural:room:6x8x3"
    spec = JobSpec.model_validate({"scenes": [scene], "frames_per_clip": FRAMES, "resolution": [WIDTH, WIDTH // 2],
                                   "fps": 12})
    out = tmp_path_factory.mktemp("clip_dataset")
    writer = ShardWriter(out / "shards", rows_per_group=1)
    c2w = np.stack([pose_from_heading((-0.5 + 0.12 * i, 0.3, 1.6), 0.2 + 0.05 * i) for i in range(FRAMES)])
    with EmbeddedRenderer(load_scene(scene)) as renderer:
        writer.add(clip_row(renderer, spec, scene, "room", "walk", "walk", c2w))
    writer.commit(0)
    return out


def test_generate_from_clip_with_a_diffusers_lora_and_its_condition_spec_then_eval_video(
        tiny_folder, clip_dataset, tmp_path, capsys):
    from peft import LoraConfig

    from dataset.store.reader import PanoDataset
    from inference.condition import write_condition_spec
    from training.video import save_lora

    components = load_wan(tiny_folder, device="cpu")
    components.transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v"]))
    with torch.no_grad():
        for name, p in components.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    lora_dir = tmp_path / "lora"
    lora_dir.mkdir()
    save_lora(lora_dir, components.transformer)
    spec = ConditionSpec(frame0="panorama", seam_pad_px=8)
    write_condition_spec(lora_dir, spec)
    assert detect_lora_format(lora_dir) == "diffusers"

    out = tmp_path / "gen"
    status = main(["generate", "--from-clip", str(clip_dataset), "walk", "--prompt", "a room", "--model",
                   str(tiny_folder), "--lora", str(lora_dir), "--steps", "2", "--cfg", "3", "--quiet", "--out",
                   str(out)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0 and line["frames"] == FRAMES and line["lora_format"] == "diffusers"
    recorded = json.loads((out / "generation.json").read_text())
    assert recorded["condition"] == spec.model_dump(), "the LoRA's condition.json decides the condition"
    assert json.loads((out / "clip.json").read_text())["clip_id"] == "walk"
    clip = next(PanoDataset(clip_dataset).clips())
    cams = load_matrix3d_cameras(out / "cameras.json")
    relative = np.linalg.inv(clip.c2w[0])[None] @ clip.c2w
    assert np.allclose(cams, relative, atol=1e-9), "the clip's own poses, relative to its panorama's camera"

    plain = tmp_path / "plain"
    assert main(["generate", "--from-clip", str(clip_dataset), "walk", "--prompt", "a room", "--model",
                 str(tiny_folder), "--steps", "2", "--cfg", "3", "--quiet", "--out", str(plain)]) == 0
    with_lora, without = (decode_mp4((d / "video.mp4").read_bytes()).astype(int) for d in (out, plain))
    assert np.abs(with_lora - without).mean() > 1, "the LoRA changes the video"

    assert main(["eval-video", "--pred", str(out), "--gt", str(clip_dataset), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["clips"] == 1 and metrics["frames"] == FRAMES and np.isfinite(metrics["psnr"])


def test_generate_with_a_matrix3d_lora_file_merges_it(tiny_folder, scene_files, tmp_path, capsys):
    from safetensors.torch import save_file
    from tiny_wan import diffsynth_lora

    folder, _ = scene_files
    transformer = load_wan(tiny_folder, device="cpu").transformer
    save_file(diffsynth_lora(transformer, rank=2, seed=1), tmp_path / "pano_lora.safetensors")
    assert detect_lora_format(tmp_path / "pano_lora.safetensors") == "matrix3d"
    args = ["generate", "--panorama", str(folder / "pano.png"), "--depth", str(folder / "depth.npy"),
            "--trajectory", str(folder / "path.json"), "--prompt", "a room", "--model", str(tiny_folder),
            "--steps", "1", "--cfg", "1", "--quiet"]
    assert main([*args, "--lora", str(tmp_path / "pano_lora.safetensors"), "--out", str(tmp_path / "m3d")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lora_format"] == "matrix3d"
    assert main([*args, "--out", str(tmp_path / "base")]) == 0
    merged, base = (decode_mp4((tmp_path / d / "video.mp4").read_bytes()).astype(int) for d in ("m3d", "base"))
    assert np.abs(merged - base).mean() > 1


def test_bad_frame_counts_sizes_and_inputs_are_one_line_errors(scene_files, clip_dataset, tmp_path, capsys):
    from PIL import Image

    folder, _ = scene_files
    base = ["generate", "--prompt", "a room", "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "o")]
    files = ["--panorama", str(folder / "pano.png"), "--depth", str(folder / "depth.npy")]

    def error(args: list[str]) -> str:
        assert main([*base, *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert "6 frames: Wan needs 4k+1 frames (nearest: 5 or 9)" in error([*files, "--trajectory", "straight",
                                                                          "--frames", "6"])
    assert "--frames 9: the trajectory has only 5 poses" in error([*files, "--trajectory", str(folder / "path.json"),
                                                                    "--frames", "9"])
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(tmp_path / "odd.png")
    np.save(tmp_path / "odd.npy", np.ones((40, 80), np.float32))
    assert "height 40: Wan needs multiples of 16" in error(["--panorama", str(tmp_path / "odd.png"), "--depth",
                                                           str(tmp_path / "odd.npy"), "--trajectory", "straight",
                                                           "--frames", "5"])
    assert "--from-clip" in error(["--trajectory", "straight"])
    assert "needs --trajectory" in error(files)
    assert "does not exist" in error([*files, "--trajectory", "straight", "--frames", "5", "--lora",
                                      str(tmp_path / "missing.safetensors")])
    assert "has no committed clip" in error(["--from-clip", str(clip_dataset), "nope"])
    assert not (tmp_path / "o" / "video.mp4").exists()

