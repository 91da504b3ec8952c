"""Wan2.1 I2V loading: the tiny preset through the diffusers-layout code, Wan-AI's original layout, clear errors for
folders we cannot load, dtypes, and Matrix-3D's LoRA files merged as Matrix-3D merges them."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from safetensors.torch import save_file
from tiny_wan import DIFFSYNTH_TARGETS, diffsynth_lora, save_original_layout

from inference.wan import (
    TEXT_LEN,
    ModelFolderError,
    load_matrix3d_lora,
    load_wan,
    save_tiny,
    tiny_components,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("wan") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_wan(tiny_dir, device="cpu")


def dit_inputs(components, frames: int = 2, h: int = 4, w: int = 8, seed: int = 0) -> dict:
    """Random inputs of one transformer forward: 36 latent channels, 512 text tokens, the encoder's image tokens."""
    gen = torch.Generator().manual_seed(seed)
    tcfg, icfg = components.transformer.config, components.image_encoder.config
    tokens = (icfg.image_size // icfg.patch_size) ** 2 + 1
    return {"hidden_states": torch.randn(1, tcfg.in_channels, frames, h, w, generator=gen),
            "timestep": torch.tensor([500.0]),
            "encoder_hidden_states": torch.randn(1, TEXT_LEN, tcfg.text_dim, generator=gen),
            "encoder_hidden_states_image": torch.randn(1, tokens, tcfg.image_dim, generator=gen),
            "return_dict": False}


def forward(transformer, inputs) -> torch.Tensor:
    with torch.no_grad():
        return transformer(**inputs)[0]


def test_tiny_preset_is_a_diffusers_folder_loaded_like_a_real_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MATRIX_PANO_CACHE", str(tmp_path))
    components = load_wan("tiny", device="cpu")
    (folder,) = tmp_path.iterdir()
    assert {p.name for p in folder.iterdir()} >= {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer",
                                                   "image_encoder", "image_processor", "scheduler"}
    t = components.transformer.config
    assert (t.in_channels, t.out_channels, t.image_dim, t.added_kv_proj_dim) == (36, 16, 32, 32)
    assert components.transformer.config.text_dim == components.text_encoder.config.d_model
    assert components.transformer.config.image_dim == components.image_encoder.config.hidden_size
    assert (components.vae.config.scale_factor_spatial, components.vae.config.scale_factor_temporal) == (8, 4)
    assert components.vae.config.z_dim == 16
    out = forward(components.transformer, dit_inputs(components))
    assert out.shape == (1, 16, 2, 4, 8) and torch.isfinite(out).all()
    again = load_wan("tiny", device="cpu")  # the cached folder, not a second build
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # nor a temporary build folder left behind
    ours, cached = components.transformer.state_dict(), again.transformer.state_dict()
    assert all(torch.equal(ours[k], cached[k]) for k in ours)


def test_tiny_tokenizer_pads_to_512_with_umt5_special_tokens(tiny):
    enc = tiny.tokenizer("a living room, the camera walks forward", padding="max_length", max_length=TEXT_LEN,
                         return_tensors="pt")
    ids = enc.input_ids[0]
    n = int(enc.attention_mask.sum())
    assert ids.shape == (TEXT_LEN,) and 2 < n < TEXT_LEN
    assert ids[n - 1] == 1 and (ids[n:] == 0).all()  # </s> then <pad>
    assert tiny.tokenizer.decode(ids, skip_special_tokens=True) == "a living room, the camera walks forward"


def test_same_seed_gives_identical_weights_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = tiny_components(0), tiny_components(0), tiny_components(1)
    assert torch.equal(torch.rand(1), before)
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        sa, sb, sc = (getattr(x, name).state_dict() for x in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not all(torch.equal(sa[k], sc[k]) for k in sa), name
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


def test_dtypes_bf16_models_and_fp32_vae_and_image_encoder(tiny_dir, tiny):
    assert all(m.dtype == torch.float32 for m in (tiny.transformer, tiny.text_encoder, tiny.vae, tiny.image_encoder))
    half = load_wan(tiny_dir, dtype="bf16", device="cpu")
    assert half.transformer.dtype == torch.bfloat16 and half.text_encoder.dtype == torch.bfloat16
    assert half.vae.dtype == torch.float32 and half.image_encoder.dtype == torch.float32
    assert not half.transformer.training and not any(p.requires_grad for p in half.transformer.parameters())
    with pytest.raises(ValueError, match="unknown dtype 'int7'"):
        load_wan(tiny_dir, dtype="int7", device="cpu")


def test_folders_that_are_not_a_diffusers_layout_name_the_missing_part(tiny_dir, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_wan(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "image_processor")
    with pytest.raises(ModelFolderError, match=r"lacks image_processor/preprocessor_config.json: expected a "
                                               r"diffusers-layout folder with subfolders transformer/"):
        load_wan(broken, device="cpu")
    shutil.copytree(tiny_dir / "image_processor", broken / "image_processor")
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"vae has no \*.safetensors weights"):
        load_wan(broken, device="cpu")


def test_parts_load_only_what_a_job_needs_and_need_no_other_weights(tiny_dir, tiny, tmp_path):
    encoders = tmp_path / "encoders"  # a folder as a cache worker needs it: no transformer at all
    shutil.copytree(tiny_dir, encoders)
    shutil.rmtree(encoders / "transformer")
    with pytest.raises(ModelFolderError, match="lacks transformer/config.json"):
        load_wan(encoders, device="cpu")
    parts = load_wan(encoders, device="cpu", parts=("vae", "text_encoder", "image_encoder"))
    assert parts.transformer is None and parts.tokenizer is not None and parts.scheduler is not None
    ours, ref = parts.vae.state_dict(), tiny.vae.state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    only = load_wan(tiny_dir, device="cpu", parts=("transformer",))
    assert only.vae is None and only.text_encoder is None and only.image_encoder is None
    inputs = dit_inputs(tiny)
    assert torch.equal(forward(only.transformer, inputs), forward(tiny.transformer, inputs))
    with pytest.raises(ValueError, match="unknown Wan parts unet"):
        load_wan(tiny_dir, device="cpu", parts=("unet",))


def test_original_layout_transformer_and_vae_load_through_diffusers_conversion(tiny_dir, tiny, tmp_path):
    folder = save_original_layout(tmp_path / "orig", tiny_dir, tiny)
    assert not (folder / "transformer").exists() and not (folder / "vae").exists()
    loaded = load_wan(folder, device="cpu")
    for name in ("transformer", "vae"):
        ours, ref = getattr(loaded, name).state_dict(), getattr(tiny, name).state_dict()
        assert ours.keys() == ref.keys(), name
        assert all(torch.equal(ours[k], ref[k]) for k in ref), name
    assert loaded.transformer.config.image_dim == 32 and loaded.transformer.config.text_dim == 32
    inputs = dit_inputs(tiny)  # same weights; kernels may differ in the last bit with the memory layout
    assert torch.allclose(forward(loaded.transformer, inputs), forward(tiny.transformer, inputs), atol=1e-6, rtol=0)


def test_original_layout_without_diffusers_encoders_says_how_to_get_them(tiny_dir, tiny, tmp_path):
    folder = save_original_layout(tmp_path / "orig", tiny_dir, tiny, with_encoders=False)
    (folder / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"")
    with pytest.raises(ModelFolderError, match=r"original layout and lacks text_encoder/.*huggingface-cli download "
                                               r"Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"):
        load_wan(folder, device="cpu")
    (folder / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="no config.json"):
        load_wan(folder, device="cpu")


def manual_merge(transformer, lora: dict[str, torch.Tensor], alpha: float):
    """The reference: a copy of ``transformer`` with W += alpha * B @ A on each named layer, by hand."""
    merged = copy.deepcopy(transformer)
    for i in range(transformer.config.num_layers):
        for theirs, ours in DIFFSYNTH_TARGETS.items():
            a = lora[f"blocks.{i}.{theirs}.lora_A.default.weight"]
            b = lora[f"blocks.{i}.{theirs}.lora_B.default.weight"]
            merged.get_submodule(f"blocks.{i}.{ours}").weight.data += alpha * b @ a
    return merged


def test_matrix3d_lora_merges_w_plus_alpha_b_a_without_rank_scaling(tiny_dir, tmp_path):
    base = load_wan(tiny_dir, device="cpu")
    lora = diffsynth_lora(base.transformer, rank=4)
    path = tmp_path / "pano_video_gen.safetensors"
    save_file(lora, path)
    reference = manual_merge(base.transformer, lora, alpha=0.5)
    inputs = dit_inputs(base)
    before = forward(base.transformer, inputs)
    merged = load_matrix3d_lora(base, path, alpha=0.5)
    assert len(merged) == base.transformer.config.num_layers * len(DIFFSYNTH_TARGETS)
    assert "blocks.0.attn2.add_k_proj" in merged
    after = forward(base.transformer, inputs)
    assert torch.allclose(after, forward(reference, inputs), atol=1e-6, rtol=0)
    assert not torch.allclose(after, before, atol=1e-3)
    # the scaling is alpha, not alpha / r: the change of one weight is exactly 0.5 * B @ A
    fresh = load_wan(tiny_dir, device="cpu").transformer.blocks[0].attn1.to_q.weight
    delta = base.transformer.blocks[0].attn1.to_q.weight - fresh
    b, a = lora["blocks.0.self_attn.q.lora_B.default.weight"], lora["blocks.0.self_attn.q.lora_A.default.weight"]
    assert torch.allclose(delta, 0.5 * b @ a, atol=1e-6)


def test_lora_key_variants_and_pickle_free_ckpt_load_alike(tiny_dir, tmp_path):
    base = load_wan(tiny_dir, device="cpu")
    plain = diffsynth_lora(base.transformer, seed=3)
    prefixed = diffsynth_lora(base.transformer, seed=3, prefix="diffusion_model.", default=False)
    save_file(plain, tmp_path / "plain.safetensors")
    torch.save(prefixed, tmp_path / "prefixed.ckpt")
    one, two = load_wan(tiny_dir, device="cpu"), load_wan(tiny_dir, device="cpu")
    load_matrix3d_lora(one, tmp_path / "plain.safetensors")
    load_matrix3d_lora(two, tmp_path / "prefixed.ckpt")
    s1, s2 = one.transformer.state_dict(), two.transformer.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["blocks.1.ffn.net.2.weight"], base.transformer.state_dict()["blocks.1.ffn.net.2.weight"])


def test_lora_files_that_do_not_fit_are_refused(tiny_dir, tmp_path):
    base = load_wan(tiny_dir, device="cpu")
    lora = diffsynth_lora(base.transformer)
    odd = dict(lora, **{"blocks.0.self_attn.q.alpha": torch.tensor(4.0)})
    save_file(odd, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError, match="key 'blocks.0.self_attn.q.alpha' is not a LoRA A/B weight"):
        load_matrix3d_lora(base, tmp_path / "odd.safetensors")
    wide = dict(lora, **{"blocks.0.ffn.0.lora_A.default.weight": torch.zeros(4, 99)})
    save_file(wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match=r"blocks.0.ffn.net.0.proj has A \(4, 99\).*do not fit its weight \(64, 32\)"):
        load_matrix3d_lora(base, tmp_path / "wide.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_matrix3d_lora(base, tmp_path / "missing.safetensors")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_defaults_bf16_transformer_and_fp32_vae_on_cuda(tiny_dir, tiny):
    gpu = load_wan(tiny_dir)
    assert gpu.transformer.device.type == "cuda" and gpu.transformer.dtype == torch.bfloat16
    assert gpu.vae.device.type == "cuda" and gpu.vae.dtype == torch.float32
    inputs = {k: v.to("cuda", torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in dit_inputs(tiny).items()}
    out, ref = forward(gpu.transformer, inputs).float().cpu(), forward(tiny.transformer, dit_inputs(tiny))
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 keeps about 3 significant digits
