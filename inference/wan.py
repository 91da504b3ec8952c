"""Wan2.1 image-to-video components through diffusers: loading from a local folder, the ``tiny`` preset, and
Matrix-3D's LoRA files.

Folders: the diffusers layout of ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` (one subfolder per component). In
Wan-AI's original layout (``Wan-AI/Wan2.1-I2V-14B-480P``) diffusers converts the transformer
(``diffusion_pytorch_model*.safetensors`` + ``config.json``) and the VAE (``Wan2.1_VAE.pth``) through
``from_single_file``; it has no converter for Wan's own umT5 and open-clip files, so the text encoder, tokenizer,
image encoder and image processor must come as diffusers subfolders beside them (the error says how). Nothing
downloads: every ``from_pretrained`` is ``local_files_only``.

``tiny``: every component from small configs with random, seeded weights, written once as a diffusers-layout
folder in the cache (``$MATRIX_PANO_CACHE``, default ``~/.cache/matrix-pano``) and then loaded by the same
code as a real folder. Its tokenizer is a small Unigram model built with the ``tokenizers`` library from a fixed
piece table (umT5's special tokens: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; ``</s>`` appended), because transformers
builds a T5 tokenizer only from files.

dtypes: the transformer and the text encoder in ``dtype`` (bf16 on a GPU, fp32 on a CPU by default); the VAE
and the image encoder always in fp32, as Wan and Matrix-3D run them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

TEXT_LEN = 512
"""Text tokens per prompt: umT5's padded length, which diffusers' ``WanAttnProcessor`` assumes when it splits
the image tokens off the context."""
TINY = "tiny"
"""The preset name ``load_wan`` accepts instead of a folder."""
TINY_REVISION = 1
"""Bumped whenever the tiny configs change, so an old cached tiny folder is not reused."""
UMT5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
"""umT5's special tokens in id order (pad 0, eos 1, unk 2)."""

_SUBFOLDERS = {
    "transformer": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
    "image_encoder": "config.json",
    "image_processor": "preprocessor_config.json",
    "scheduler": "scheduler_config.json",
}
"""Diffusers-layout subfolder -> the file that marks it."""
PARTS = ("transformer", "vae", "text_encoder", "image_encoder")
"""The weighted components ``load_wan(parts=...)`` chooses from (tokenizer, image processor and scheduler are
small and always loaded)."""
_ORIGINAL_VAE = "Wan2.1_VAE.pth"
_ORIGINAL_TRANSFORMER_GLOB = "diffusion_pytorch_model*.safetensors"
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}
_EXPECTED_LAYOUT = ("a diffusers-layout folder with subfolders " + ", ".join(f"{k}/" for k in _SUBFOLDERS)
                    + " (as Wan-AI/Wan2.1-I2V-14B-480P-Diffusers), or 'tiny'")
_FETCH_DIFFUSERS_PARTS = ("huggingface-cli download Wan-AI/Wan2.1-I2V-14B-480P-Diffusers --include 'text_encoder/*' "
                          "'tokenizer/*' 'image_encoder/*' 'image_processor/*' 'scheduler/*' --local-dir {folder}")


class ModelFolderError(ValueError):
    """A model folder is missing, incomplete or not in a layout we load; the message says what to add."""


@dataclass
class WanComponents:
    """The parts of Wan2.1 image-to-video, as diffusers' ``WanImageToVideoPipeline`` holds them; a weighted part
    that ``load_wan(parts=...)`` left out is None."""

    transformer: Any
    """``WanTransformer3DModel`` (36 input channels: noisy 16 | mask 4 | condition 16)."""
    vae: Any
    """``AutoencoderKLWan`` (8x spatial, 4x temporal compression, 16 latent channels), fp32."""
    text_encoder: Any
    """``UMT5EncoderModel``."""
    tokenizer: Any
    """umT5 tokenizer (padded to ``TEXT_LEN``)."""
    image_encoder: Any
    """``CLIPVisionModelWithProjection`` (its penultimate hidden states are the image tokens), fp32."""
    image_processor: Any
    """``CLIPImageProcessor`` (call it without centre crop: see ``inference.condition.encode_image``)."""
    scheduler: Any
    """The folder's diffusers scheduler (``UniPCMultistepScheduler`` with flow sigmas in Wan-AI's folders)."""

    def pipeline(self):
        """diffusers' ``WanImageToVideoPipeline`` over these components (no copies)."""
        from diffusers import WanImageToVideoPipeline

        return WanImageToVideoPipeline(**{f.name: getattr(self, f.name) for f in fields(self)})

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the components as a diffusers-layout folder (safetensors), e.g. to convert an original-layout
        folder once."""
        folder = Path(folder)
        self.pipeline().save_pretrained(folder, safe_serialization=True)
        return folder


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` etc. from a dtype or a name (``bf16``, ``fp32``, ``fp16`` or the torch names)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(_DTYPES))}") from None


def compute_dtype(transformer: torch.nn.Module) -> torch.dtype:
    """The dtype a (possibly DDP-wrapped) diffusers transformer computes in: its weights' dtype, not that of the
    modules diffusers keeps in fp32 (``scale_shift_table`` comes first) nor of fp32 LoRA weights. Any other module:
    its first parameter's dtype."""
    model = getattr(transformer, "module", transformer)
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else next(model.parameters()).dtype


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_wan(path_or_preset: str | Path, dtype: torch.dtype | str | None = None,
             device: torch.device | str | None = None, parts: tuple[str, ...] | list[str] = PARTS) -> WanComponents:
    """Wan2.1 I2V components from a local folder (see the module doc for the layouts) or ``tiny``.

    ``device`` defaults to the GPU when there is one; ``dtype`` (transformer and text encoder) to bf16 on a GPU
    and fp32 on a CPU. The VAE and the image encoder are fp32 always. ``parts`` (a subset of ``PARTS``) names the
    weighted components to load, the others are None and need not be in the folder: caching latents needs no
    transformer (33 GB in bf16 for the 14B model), training needs only the transformer. Every model is in eval
    mode with frozen weights (training adds its LoRA parameters on top). The preset name ``tiny`` shadows a folder
    of that name.
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown Wan parts {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    device = torch.device(device) if device is not None else default_device()
    dtype = as_dtype(dtype) if dtype is not None else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    folder = tiny_folder() if str(path_or_preset) == TINY else Path(path_or_preset).expanduser()
    return _load_folder(folder, dtype, device, set(parts))


def _load_folder(folder: Path, dtype: torch.dtype, device: torch.device, parts: set[str]) -> WanComponents:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModelWithProjection, UMT5EncoderModel

    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist: give {_EXPECTED_LAYOUT}")
    _check_layout(folder, parts)
    local = {"local_files_only": True}
    transformer = vae = text_encoder = image_encoder = None
    if "transformer" in parts and (folder / "transformer").is_dir():
        transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype,
                                                            use_safetensors=True, **local)
    elif "transformer" in parts:
        transformer = _original_transformer(folder, dtype)
    if "vae" in parts and (folder / "vae").is_dir():
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32,
                                               use_safetensors=True, **local)
    elif "vae" in parts:
        vae = _original_vae(folder)
    if "text_encoder" in parts:
        text_encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype, use_safetensors=True,
                                                        **local)
    if "image_encoder" in parts:
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", dtype=torch.float32,
                                                                      use_safetensors=True, **local)
    components = WanComponents(
        transformer=transformer, vae=vae, text_encoder=text_encoder,
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer", **local),
        image_encoder=image_encoder,
        image_processor=CLIPImageProcessor.from_pretrained(folder / "image_processor", **local),
        scheduler=_load_scheduler(folder / "scheduler"))
    for model in (components.transformer, components.vae, components.text_encoder, components.image_encoder):
        if model is not None:
            model.to(device).eval().requires_grad_(False)
    return components


def _check_layout(folder: Path, parts: set[str]) -> None:
    """Raise ``ModelFolderError`` naming the first missing part of a diffusers (or original) layout, among the
    weighted ``parts`` and the small components."""
    original_transformer = sorted(folder.glob(_ORIGINAL_TRANSFORMER_GLOB))
    original_vae = folder / _ORIGINAL_VAE
    for sub, marker in _SUBFOLDERS.items():
        if sub in PARTS and sub not in parts:
            continue
        if sub == "transformer" and not (folder / sub).exists() and original_transformer:
            if not (folder / "config.json").is_file():
                raise ModelFolderError(f"{folder} has Wan-AI's original transformer shards but no config.json beside "
                                       "them: copy config.json from the Wan-AI/Wan2.1-I2V-14B-480P folder")
            continue
        if sub == "vae" and not (folder / sub).exists() and original_vae.is_file():
            continue
        path = folder / sub / marker
        if path.is_file():
            if sub in PARTS and not any((folder / sub).glob("*.safetensors")):
                raise ModelFolderError(f"{folder / sub} has no *.safetensors weights (pickled .bin weights are not "
                                       "loaded): save the component with safe_serialization=True")
            continue
        if original_transformer or original_vae.is_file():
            raise ModelFolderError(
                f"{folder} is in Wan-AI's original layout and lacks {sub}/: diffusers converts only the "
                f"transformer and {_ORIGINAL_VAE} of that layout, not Wan's umT5/open-clip .pth files; add the "
                f"diffusers subfolders beside them with: {_FETCH_DIFFUSERS_PARTS.format(folder=folder)}")
        raise ModelFolderError(f"{folder} lacks {sub}/{marker}: expected {_EXPECTED_LAYOUT}")


def _load_scheduler(folder: Path):
    """The diffusers scheduler class named in ``scheduler_config.json``."""
    import diffusers

    name = json.loads((folder / "scheduler_config.json").read_text()).get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
        raise ModelFolderError(f"{folder}/scheduler_config.json names {name!r}, which is not a diffusers scheduler")
    return cls.from_pretrained(folder, local_files_only=True)


def _original_transformer(folder: Path, dtype: torch.dtype):
    """The transformer from Wan-AI's original shards and ``config.json``, through diffusers' ``from_single_file``
    (its key conversion); the diffusers config is Wan's config mapped by name, with the text and image widths
    read off the weights."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    original = json.loads((folder / "config.json").read_text())
    if original.get("text_len", TEXT_LEN) != TEXT_LEN:
        raise ModelFolderError(f"{folder}/config.json has text_len {original['text_len']}; Wan I2V in diffusers "
                               f"needs {TEXT_LEN}")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob(_ORIGINAL_TRANSFORMER_GLOB)):
        state.update(load_file(shard))
    state = {k.removeprefix("model.diffusion_model."): v for k, v in state.items()}
    i2v = original.get("model_type") == "i2v"
    if i2v and "img_emb.proj.0.weight" not in state:
        raise ModelFolderError(f"{folder}: config.json says i2v but the shards have no img_emb weights")
    try:
        config = {
            "_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2],
            "num_attention_heads": original["num_heads"],
            "attention_head_dim": original["dim"] // original["num_heads"],
            "in_channels": original["in_dim"], "out_channels": original["out_dim"],
            "text_dim": state["text_embedding.0.weight"].shape[1], "freq_dim": original["freq_dim"],
            "ffn_dim": original["ffn_dim"], "num_layers": original["num_layers"], "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "eps": original["eps"],
            "image_dim": state["img_emb.proj.0.weight"].shape[0] if i2v else None,
            "added_kv_proj_dim": original["dim"] if i2v else None,
        }
    except KeyError as exc:
        raise ModelFolderError(f"{folder}: Wan's config.json or shards lack {exc}") from None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "transformer").mkdir()
        (Path(tmp) / "transformer" / "config.json").write_text(json.dumps(config))
        return WanTransformer3DModel.from_single_file(state, config=tmp, subfolder="transformer", torch_dtype=dtype,
                                                      local_files_only=True)


def _original_vae(folder: Path):
    """The VAE from Wan-AI's ``Wan2.1_VAE.pth`` (loaded weights-only) through diffusers' ``from_single_file``;
    ``AutoencoderKLWan``'s default config is Wan2.1's, with base and latent widths read off the weights."""
    from diffusers import AutoencoderKLWan

    state = torch.load(folder / _ORIGINAL_VAE, map_location="cpu", weights_only=True)
    try:
        widths = {"base_dim": state["encoder.conv1.weight"].shape[0], "z_dim": state["conv2.weight"].shape[0]}
    except KeyError as exc:
        raise ModelFolderError(f"{folder / _ORIGINAL_VAE} is not a Wan2.1 VAE state dict (no {exc})") from None
    with tempfile.TemporaryDirectory() as tmp:
        with torch.device("meta"):
            AutoencoderKLWan(**widths).save_config(Path(tmp) / "vae")
        return AutoencoderKLWan.from_single_file(state, config=tmp, subfolder="vae", torch_dtype=torch.float32,
                                                 local_files_only=True)


# --- tiny preset -----------------------------------------------------------------------------------------------

_TINY_CORPUS = (
    "a panoramic video of a living room with a sofa, a table, a lamp and a wooden door",
    "the camera walks forward through a corridor and turns left towards a bright window",
    "an outdoor courtyard with stone walls, trees, grass, a fountain and the blue sky",
    "a kitchen with white cabinets, a metal sink and a tiled floor; the camera moves right",
    "an arena level with red pillars, metal stairs and lava under a dark ceiling",
)
"""The words the tiny tokenizer has whole pieces for (other words split into characters)."""


def tiny_configs() -> dict[str, dict]:
    """The tiny components' configs: the Wan I2V layout (36 input channels, image tokens through added K/V,
    8x/4x VAE compression, 16 latent channels) at a width that runs on a CPU in milliseconds."""
    return {
        "transformer": {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16,
                        "in_channels": 36, "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64,
                        "num_layers": 2, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6,
                        "image_dim": 32, "added_kv_proj_dim": 32, "rope_max_seq_len": 1024},
        "vae": {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                "temperal_downsample": [False, True, True], "dropout": 0.0},
        "text_encoder": {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
                         "relative_attention_num_buckets": 8, "relative_attention_max_distance": 32,
                         "feed_forward_proj": "gated-gelu", "pad_token_id": 0, "eos_token_id": 1,
                         "decoder_start_token_id": 0},
        "image_encoder": {"hidden_size": 32, "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        "image_processor": {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
        "scheduler": {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
                      "num_train_timesteps": 1000},
    }


def tiny_tokenizer():
    """A small umT5-style tokenizer: a Unigram model over fixed pieces (whole words of ``_TINY_CORPUS``, then
    single characters, so any text tokenizes), Metaspace word boundaries, ``</s>`` appended. Built from a
    fixed table rather than trained, so every build is identical."""
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pad, eos, unk = UMT5_SPECIAL_TOKENS
    words = sorted({w.strip(",.;") for line in _TINY_CORPUS for w in line.split()})
    chars = ["\u2581", *sorted(set(string.ascii_lowercase + string.digits + string.punctuation))]
    vocab = [(t, 0.0) for t in UMT5_SPECIAL_TOKENS] + [("\u2581" + w, -2.0) for w in words] + [(c, -5.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=UMT5_SPECIAL_TOKENS.index(unk)))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, UMT5_SPECIAL_TOKENS.index(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token=unk,
                                   model_max_length=TEXT_LEN)


def tiny_components(seed: int = 0) -> WanComponents:
    """Every component from ``tiny_configs`` with random weights drawn from ``seed`` (same seed, same weights);
    the global RNG is left as it was. ``load_wan('tiny')`` goes through a saved folder instead."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        UMT5Config,
        UMT5EncoderModel,
    )

    cfg = tiny_configs()
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**cfg["transformer"])
        vae = AutoencoderKLWan(**cfg["vae"])
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **cfg["text_encoder"]))
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["image_encoder"]))
    return WanComponents(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         image_encoder=image_encoder, image_processor=CLIPImageProcessor(**cfg["image_processor"]),
                         scheduler=UniPCMultistepScheduler(**cfg["scheduler"]))


def save_tiny(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny components (``tiny_components(seed)``) as a diffusers-layout folder."""
    return tiny_components(seed).save_pretrained(folder)


def cache_dir() -> Path:
    """Where generated model folders are kept: ``$MATRIX_PANO_CACHE`` or ``~/.cache/matrix-pano``."""
    return Path(os.environ.get("MATRIX_PANO_CACHE") or Path.home() / ".cache" / "matrix-pano").expanduser()


def tiny_folder(seed: int = 0) -> Path:
    """The cached tiny diffusers-layout folder for ``seed``, written on first use (built in a temporary folder
    and renamed into place, so concurrent first uses are safe)."""
    import diffusers
    import transformers

    name = f"wan-tiny-r{TINY_REVISION}-seed{seed}-d{diffusers.__version__}-t{transformers.__version__}"
    return cached_folder(name, "model_index.json", lambda folder: save_tiny(folder, seed))


def check_processor_folder(folder: Path, what: str, expected: str) -> Path:
    """``folder`` if it is a transformers model folder with an image processor (config.json,
    preprocessor_config.json, safetensors weights), else ``ModelFolderError`` naming what is missing and
    ``expected``."""
    if not folder.is_dir():
        raise ModelFolderError(f"{what} folder {folder} does not exist: give {expected}")
    for name in ("config.json", "preprocessor_config.json"):
        if not (folder / name).is_file():
            raise ModelFolderError(f"{folder} lacks {name}: expected {expected}")
    if not any(folder.glob("*.safetensors")):
        raise ModelFolderError(f"{folder} has no *.safetensors weights (pickled .bin weights are not loaded): "
                               "save the model with safe_serialization=True")
    return folder


def cached_folder(name: str, marker: str, build) -> Path:
    """``cache_dir() / name``, built on first use by ``build(folder)`` in a temporary folder and renamed into place
    (so concurrent first uses are safe); ``marker`` is the file whose presence says the folder is complete."""
    final = cache_dir() / name
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its copy first
            if not (final / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --- Matrix-3D LoRA ----------------------------------------------------------------------------------------------


def read_diffsynth_lora(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A DiffSynth/Matrix-3D LoRA file as ``{diffusers module name: (A (r, in), B (out, r))}``.

    Their keys are peft names on Wan's original module names (``blocks.0.self_attn.q.lora_A.default.weight``,
    optionally ``diffusion_model.``-prefixed, ``.default`` optional); diffusers' own Wan LoRA conversion
    (``WanImageToVideoPipeline.lora_state_dict``) renames them to diffusers' modules (``blocks.0.attn1.to_q``).
    ``.safetensors`` files are read as such, ``.ckpt``/``.bin``/``.pt`` with ``torch.load(weights_only=True)``.
    """
    from diffusers import WanImageToVideoPipeline

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(path)
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path} is not a flat LoRA state dict of tensors")
    normalised = {}
    for key, value in raw.items():
        name = key.removeprefix("diffusion_model.").replace(".lora_A.default.", ".lora_A.").replace(
            ".lora_B.default.", ".lora_B.")
        if not name.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ValueError(f"{path}: key {key!r} is not a LoRA A/B weight (expected e.g. "
                             "'blocks.0.self_attn.q.lora_A.default.weight')")
        normalised["diffusion_model." + name] = value
    try:
        converted = WanImageToVideoPipeline.lora_state_dict(normalised)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: diffusers cannot map these LoRA keys onto Wan's modules ({exc})") from None
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in converted:
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            b_key = key.replace(".lora_A.weight", ".lora_B.weight")
            if b_key not in converted:
                raise ValueError(f"{path}: {module} has a LoRA A but no B matrix")
            pairs[module] = (converted[key], converted[b_key])
    if len(pairs) * 2 != len(converted):
        raise ValueError(f"{path}: some LoRA B matrices have no A matrix")
    return pairs


@torch.no_grad()
def load_matrix3d_lora(components: WanComponents, path: str | Path, alpha: float = 1.0) -> list[str]:
    """Merge a Matrix-3D LoRA file into the transformer the way Matrix-3D's loader does:
    ``W += alpha * B @ A`` per layer, with no ``1 / r`` factor (equal to peft's merge only when its
    ``lora_alpha`` equals the rank and ``alpha`` is 1). Matrix-3D loads its files with ``alpha = 1``.
    The product is formed in fp32 and added in the weight's dtype. Returns the merged module names."""
    pairs = read_diffsynth_lora(path)
    weights = {}
    for name, (a, b) in pairs.items():  # every layer checked before any is changed
        try:
            weight = components.transformer.get_submodule(name).weight
        except AttributeError:
            raise ValueError(f"{path}: LoRA layer {name} is not in this transformer") from None
        if (b.shape[0], a.shape[1]) != tuple(weight.shape) or a.shape[0] != b.shape[1]:
            raise ValueError(f"{path}: LoRA {name} has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not fit "
                             f"its weight {tuple(weight.shape)} (a LoRA for another model size?)")
        weights[name] = weight
    for name, (a, b) in pairs.items():
        weight = weights[name]
        delta = alpha * (b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32))
        weight.add_(delta.to(weight.dtype))
    return sorted(pairs)
