"""Tiny Wan2.1 I2V fixtures: a folder in Wan-AI's original layout (transformer shards with Wan's own key names,
``Wan2.1_VAE.pth``) made from the tiny diffusers folder, and Matrix-3D (DiffSynth) LoRA files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

_TRANSFORMER_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."), (".add_v_proj.", ".v_img."), (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    (".norm2.", ".norm3."),  # Wan's cross-attention norm is norm3
    ("proj_out", "head.head"),
)
"""diffusers -> Wan original names of the transformer, applied in order (the inverse of diffusers' table)."""

DIFFSYNTH_TARGETS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
"""Wan original (DiffSynth) module of a block -> its diffusers name: Matrix-3D's LoRA targets and the I2V image K/V."""


def original_transformer_key(key: str) -> str:
    """Wan's original name of a diffusers ``WanTransformer3DModel`` parameter."""
    if key == "scale_shift_table":
        return "head.modulation"
    key = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", key)
    for ours, theirs in _TRANSFORMER_TO_ORIGINAL:
        key = key.replace(ours, theirs)
    return key


_RESNET = (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."), ("norm2.gamma", "residual.3.gamma"),
           ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut."))


def _resnet(tail: str) -> str:
    for ours, theirs in _RESNET:
        if tail.startswith(ours):
            return theirs + tail[len(ours):]
    return tail


def original_vae_key(key: str) -> str:
    """Wan's original name (``Wan2.1_VAE.pth``) of a diffusers ``AutoencoderKLWan`` parameter."""
    top = {"quant_conv.": "conv1.", "post_quant_conv.": "conv2."}
    for ours, theirs in top.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    side, rest = key.split(".", 1)
    for ours, theirs in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(ours):
            return f"{side}.{theirs}{rest[len(ours):]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        return f"{side}.middle.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", rest):
        return f"{side}.middle.1.{m[1]}"
    if m := re.match(r"down_blocks\.(\d+)\.(.*)", rest):
        return f"encoder.downsamples.{m[1]}.{_resnet(m[2])}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        return f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_resnet(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest):
        return f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
    raise KeyError(key)


def save_original_layout(folder: Path, diffusers_folder: Path, components, with_encoders: bool = True) -> Path:
    """Write ``components``' transformer (2 shards + Wan's ``config.json``) and VAE (``Wan2.1_VAE.pth``) in
    Wan-AI's original layout; with ``with_encoders``, copy the diffusers subfolders diffusers cannot convert
    (text encoder, tokenizer, image encoder and processor, scheduler) from ``diffusers_folder`` beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = components.transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "dim": dim, "eps": cfg.eps, "ffn_dim": cfg.ffn_dim, "freq_dim": cfg.freq_dim,
        "in_dim": cfg.in_channels, "model_type": "i2v", "num_heads": cfg.num_attention_heads,
        "num_layers": cfg.num_layers, "out_dim": cfg.out_channels, "text_len": 512}))
    state = {original_transformer_key(k): v.contiguous() for k, v in components.transformer.state_dict().items()}
    keys = sorted(state)
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        save_file({k: state[k] for k in part}, folder / f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors")
    torch.save({original_vae_key(k): v for k, v in components.vae.state_dict().items()}, folder / "Wan2.1_VAE.pth")
    if with_encoders:
        for sub in ("text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler"):
            shutil.copytree(diffusers_folder / sub, folder / sub)
    return folder


def diffsynth_lora(transformer, rank: int = 4, seed: int = 0, prefix: str = "", default: bool = True
                   ) -> dict[str, torch.Tensor]:
    """A random Matrix-3D-style LoRA state dict (DiffSynth/peft keys on Wan's original module names) for every
    block of ``transformer``; B is nonzero so that the merge changes the model."""
    gen = torch.Generator().manual_seed(seed)
    adapter = ".default" if default else ""
    out = {}
    for i in range(transformer.config.num_layers):
        for theirs, ours in DIFFSYNTH_TARGETS.items():
            out_f, in_f = transformer.get_submodule(f"blocks.{i}.{ours}").weight.shape
            out[f"{prefix}blocks.{i}.{theirs}.lora_A{adapter}.weight"] = torch.randn(rank, in_f, generator=gen) * 0.3
            out[f"{prefix}blocks.{i}.{theirs}.lora_B{adapter}.weight"] = torch.randn(out_f, rank, generator=gen) * 0.3
    return out
