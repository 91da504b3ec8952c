"""The condition of the panoramic video model: equal to diffusers' own ``prepare_latents`` for a first frame,
Matrix-3D's layout for a full guidance video, strict sizes, the seam padding, the uncropped image embedding,
512-token text, and the frame-0 policy recorded with a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inference.condition import (
    CONDITION_FILE,
    ConditionSpec,
    apply_frame0_policy,
    build_condition,
    encode_condition,
    encode_image,
    encode_text,
    read_condition_spec,
    seam_error,
    write_condition_spec,
)
from inference.wan import TEXT_LEN, load_wan, save_tiny

H, W = 32, 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_wan(save_tiny(tmp_path_factory.mktemp("wan") / "tiny"), device="cpu")


def panorama(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A smooth random equirect (H, W, 3) uint8, continuous across its left/right seam."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((3, h // 8, w // 8))).float()[None]
    coarse = torch.cat([coarse[..., -1:], coarse, coarse[..., :1]], dim=-1)
    fine = F.interpolate(coarse, size=(h, w + 16), mode="bilinear", align_corners=False)[..., 8:-8]
    return (fine[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_first_frame_condition_equals_diffusers_prepare_latents_exactly(tiny):
    frames = 5
    image = panorama()
    guidance = np.zeros((frames, H, W, 3), np.uint8)
    guidance[0] = image
    guidance[1:] = 200  # unknown pixels: whatever they hold is replaced
    mask = np.zeros((frames, H, W), np.float32)
    mask[0] = 1.0
    ours = build_condition(tiny.vae, guidance, mask, ConditionSpec(seam_pad_px=0, unknown_fill=0.0))
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    _, theirs = tiny.pipeline().prepare_latents(pixels, 1, 16, H, W, frames, torch.float32, torch.device("cpu"))
    assert ours.shape == theirs.shape == (1, 20, 2, H // 8, W // 8)
    assert torch.equal(ours[:, :4], theirs[:, :4])  # mask channels
    assert torch.equal(ours[:, 4:], theirs[:, 4:])  # normalised condition latents


def test_full_guidance_has_the_documented_layout(tiny):
    frames = 9
    guidance = np.stack([panorama(i) for i in range(frames)])
    # frame f is known with weight f / 8 everywhere: each mask channel says which frame it came from
    mask = np.broadcast_to((np.arange(frames) / 8.0)[:, None, None], (frames, H, W)).astype(np.float32)
    cond = build_condition(tiny.vae, guidance, mask)
    assert cond.shape == (1, 20, 3, H // 8, W // 8) and cond.dtype == torch.float32
    channels = cond[0, :4, :, 0, 0]  # (4 channels, 3 latent frames)
    expected = torch.tensor([[0, 1, 5], [0, 2, 6], [0, 3, 7], [0, 4, 8]], dtype=torch.float32) / 8.0
    assert torch.allclose(channels, expected, atol=1e-6)  # frame 0 repeated 4x, then 4 frames per latent frame
    assert torch.isfinite(cond).all()


def test_unknown_pixels_become_black_and_only_known_pixels_matter(tiny):
    frames = 5
    guidance = np.stack([panorama(i) for i in range(frames)])
    mask = np.ones((frames, H, W), np.float32)
    mask[2:, :, : W // 2] = 0.2  # below 0.5: unknown
    spec = ConditionSpec(seam_pad_px=0)
    base = build_condition(tiny.vae, guidance, mask, spec)
    junk = guidance.copy()
    junk[2:, :, : W // 2] = np.random.default_rng(1).integers(0, 256, junk[2:, :, : W // 2].shape)
    assert torch.equal(build_condition(tiny.vae, junk, mask, spec), base)
    black = guidance.copy()
    black[2:, :, : W // 2] = 0  # uint8 0 is -1: the same as the fill
    assert torch.equal(build_condition(tiny.vae, black, mask, spec), base)
    changed = guidance.copy()
    changed[0, :, W // 2:] = 255 - changed[0, :, W // 2:]
    assert not torch.allclose(build_condition(tiny.vae, changed, mask, spec)[:, 4:], base[:, 4:])


def test_frame_counts_and_sizes_are_checked_never_rounded(tiny):
    def cond(frames, h, w):
        return build_condition(tiny.vae, np.zeros((frames, h, w, 3), np.uint8), np.ones((frames, h, w)))

    with pytest.raises(ValueError, match=r"10 frames: Wan needs 4k\+1 frames \(nearest: 9 or 13\)"):
        cond(10, H, W)
    with pytest.raises(ValueError, match=r"height 40: Wan needs multiples of 16 \(nearest: 32 or 48\)"):
        cond(5, 40, W)
    with pytest.raises(ValueError, match=r"width 72: .*\(nearest: 64 or 80\)"):
        cond(5, H, 72)
    with pytest.raises(ValueError, match="mask shape"):
        build_condition(tiny.vae, np.zeros((5, H, W, 3), np.uint8), np.ones((5, H, W // 2)))
    with pytest.raises(ValueError, match="seam_pad_px must be a multiple of 8"):
        ConditionSpec(seam_pad_px=12)


def test_circular_seam_padding_makes_encoding_nearly_roll_equivariant(tiny):
    image = panorama(3)
    plain = seam_error(tiny.vae, image, seam_pad_px=0)
    padded = seam_error(tiny.vae, image, seam_pad_px=32)
    print(f"seam error {H}x{W}: no padding {plain:.4f}, 32 px circular padding {padded:.4f}")
    assert plain > 0.03
    assert padded < plain / 4
    guidance, mask = image[None], np.ones((1, H, W))
    assert build_condition(tiny.vae, guidance, mask).shape == build_condition(
        tiny.vae, guidance, mask, ConditionSpec(seam_pad_px=0)).shape


def test_image_embedding_sees_the_whole_panorama(tiny):
    image = panorama(4)
    edited = image.copy()
    edited[:, : W // 4] = 255 - edited[:, : W // 4]  # only the left and right quarters change
    edited[:, -W // 4:] = 255 - edited[:, -W // 4:]
    # the processor's own default (centre crop of the 2:1 image) would not see the change at all
    default = tiny.image_processor(images=[image], return_tensors="pt").pixel_values
    assert torch.equal(default, tiny.image_processor(images=[edited], return_tensors="pt").pixel_values)
    ours = encode_image(tiny.image_encoder, tiny.image_processor, image)
    side = tiny.image_encoder.config.image_size
    assert ours.shape == (1, (side // tiny.image_encoder.config.patch_size) ** 2 + 1,
                          tiny.image_encoder.config.hidden_size)
    assert not torch.allclose(ours, encode_image(tiny.image_encoder, tiny.image_processor, edited), atol=1e-4)


def test_text_embeddings_are_padded_to_512_tokens(tiny):
    prompts = ["a room", "a  living room with a sofa &amp; a lamp, the camera walks forward"]
    emb = encode_text(tiny.text_encoder, tiny.tokenizer, prompts)
    assert emb.shape == (2, TEXT_LEN, tiny.text_encoder.config.d_model)
    lengths = [len(tiny.tokenizer(p.replace("&amp;", "&").replace("  ", " ")).input_ids) for p in prompts]
    for row, n in zip(emb, lengths, strict=True):
        assert (row[:n].abs().sum(-1) > 0).all() and (row[n:] == 0).all()
    assert torch.equal(encode_text(tiny.text_encoder, tiny.tokenizer, prompts[0]), emb[:1])


def test_frame0_policy_render_masks_the_encoder_image_and_panorama_puts_the_clean_panorama_first():
    guidance = np.stack([panorama(i) for i in range(5)])
    mask = np.ones((5, H, W), np.float32)
    mask[0, :, :8] = 0.0  # a depth edge in the frame-0 render
    pano = panorama(5)
    g, m, image = apply_frame0_policy(guidance, mask, pano, ConditionSpec(frame0="render"))
    assert g is guidance and m is mask
    assert (image[:, :8] == 0).all() and np.array_equal(image[:, 8:], guidance[0, :, 8:])  # as the VAE sees it
    g, m, image = apply_frame0_policy(guidance, mask, pano, ConditionSpec(frame0="panorama"))
    assert np.array_equal(g[0], pano) and (m[0] == 1).all() and np.array_equal(g[1:], guidance[1:]) and image is pano
    assert not np.array_equal(guidance[0], pano) and (mask[0, :, :8] == 0).all()  # inputs untouched
    with pytest.raises(ValueError, match="must be uint8"):
        apply_frame0_policy(guidance / 255.0, mask, pano, ConditionSpec())


def test_checkpoint_records_the_condition_spec_that_inference_reads(tiny, tmp_path):
    spec = ConditionSpec(frame0="panorama", seam_pad_px=16)
    path = write_condition_spec(tmp_path / "ckpt", spec)
    assert path.name == CONDITION_FILE
    read = read_condition_spec(tmp_path / "ckpt")
    assert read == spec
    frames = 5
    guidance = np.stack([panorama(10 + i) for i in range(frames)])
    guidance[0] = 0  # a render with nothing known at frame 0
    mask = np.ones((frames, H, W), np.float32)
    mask[0] = 0.0
    pano = panorama(20)
    inputs = encode_condition(tiny, guidance, mask, pano, "a room", read)
    assert torch.equal(inputs.condition[:, :4, 0], torch.ones(1, 4, H // 8, W // 8))  # frame 0 known: the panorama
    assert torch.equal(inputs.image_embeds, encode_image(tiny.image_encoder, tiny.image_processor, pano))
    assert inputs.prompt_embeds.shape == (1, TEXT_LEN, tiny.text_encoder.config.d_model)
    render = encode_condition(tiny, guidance, mask, pano, "a room", ConditionSpec(seam_pad_px=16))
    assert torch.equal(render.condition[:, :4, 0], torch.zeros(1, 4, H // 8, W // 8))
    assert not torch.allclose(render.image_embeds, inputs.image_embeds)
    (tmp_path / "ckpt" / CONDITION_FILE).write_text('{"frame0": "mesh"}')
    with pytest.raises(ValueError, match="condition.json: frame0:"):
        read_condition_spec(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="condition.json does not exist"):
        read_condition_spec(tmp_path)
