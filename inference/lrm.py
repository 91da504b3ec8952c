"""The feed-forward large panorama reconstruction model (Matrix-3D's Pano LRM, FACTS.md "Models"): Wan-VAE video
latents and camera poses in, per-pixel 3D Gaussians out, in one forward pass.

Architecture (``PanoLRM``; sizes of the ``published`` preset):

- Tokens: the latents (B, T, 16, h, w) (T = (F - 1) / 4 + 1 latent frames of F = 4k + 1 video frames, h, w = 1/8
  of the panorama) through a 2 x 2 stride-2 convolution per latent frame and a LayerNorm; the spherical Plücker
  rays of the F frames (``plucker_rays``, full resolution, 6 channels) through a 3D convolution of kernel and
  stride (4, 16, 16), temporal padding 2, so both give T x h/2 x w/2 tokens; concatenated along channels (latent
  first), projected 2 x width -> width, LayerNorm.
- Transformer: ``depth_layers`` then ``gaussian_layers`` post-norm encoder layers (torch's
  ``TransformerEncoderLayer``, GELU) over all tokens at once, no positional embedding (the Plücker rays say
  where every token is). The depth head reads the first group's four outputs, the Gaussian head the second's
  (four spread over a group of another size).
- DPT heads (one each, ``DPTHead``): the four token maps reassembled at 4x, 2x, 1x and 1/2 of the token grid,
  fused coarse to fine (residual conv units, bilinear 2x upsampling) to 8x the token grid = half the panorama's
  resolution, then a small convolutional head to ``head_channels``.
- Time: a transposed 3D convolution (kernel 5, stride 4, padding 2) per head takes the T latent frames back to
  F frames.
- Activations (per pixel of the half-resolution grid, per frame): depth = ``max_depth`` sigmoid(mean of the
  depth channels); scale = (scale_min + (scale_max - scale_min) sigmoid) x depth x ``scale_unit`` / grid width
  (tied to the pixel's footprint); rotation a normalised quaternion (x, y, z, w) in the camera frame; colour
  degree-0 SH; opacity sigmoid. Means = depth x the pixel's ray (``dataset.core.conventions`` equirect
  directions, OpenCV camera frame) through the frame's pose relative to frame 0.

Presets: ``tiny`` (CPU tests, random weights from a seed) and ``published`` (Matrix-3D's size, about 450 M
parameters). Weights: ``save_lrm`` / ``load_lrm`` use a folder with ``lrm.safetensors`` and ``lrm_config.json``;
``load_matrix3d`` reads Matrix-3D's released ``pano_lrm_480p.pt`` (its state dict under ``module``, keys
``gs_decoder1.*``, read with ``weights_only=True``) into the published preset with Matrix-3D's own ray mapping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from dataset.core.conventions import as_c2w_array, c2w_to_w2c, equirect_directions
from dataset.core.jobspec import StrictModel
from inference.gaussians import Gaussians, quat_multiply, rotmat_to_quat

CONFIG_FILE = "lrm_config.json"
"""The config beside the weights in an LRM folder."""
WEIGHTS_FILE = "lrm.safetensors"
"""The weights in an LRM folder."""
GAUSSIAN_FIELDS = 11
"""Meaningful Gaussian-head channels: scale 3, rotation 4, colour 3, opacity 1 (the last 11 of the head)."""
RAY_MAPPINGS = ("ours", "matrix3d")
"""How Plücker rays map pixels to directions: ours (the conventions module's OpenCV camera frame) or Matrix-3D's
(the same rays as (forward, right, down) before the pose's rotation, which its released weights were trained
with)."""


class LRMConfig(StrictModel):
    """The model's sizes and output activations."""

    latent_channels: int = Field(16, ge=1)
    """Channels of the VAE latents (Wan2.1: 16)."""
    vae_stride: int = Field(8, ge=1)
    """Panorama pixels per latent pixel (Wan2.1: 8)."""
    vae_temporal: int = Field(4, ge=1)
    """Video frames per latent frame after the first (Wan2.1: 4)."""
    latent_patch: int = Field(2, ge=1)
    """Latent pixels per token side."""
    width: int = Field(1024, ge=8)
    """Token width."""
    heads: int = Field(4, ge=1)
    """Attention heads."""
    ffn: int = Field(2048, ge=8)
    """Hidden width of the transformer's feed-forward layers."""
    depth_layers: int = Field(4, ge=1)
    """Transformer layers whose outputs feed the depth head."""
    gaussian_layers: int = Field(4, ge=1)
    """Transformer layers after them, whose outputs feed the Gaussian head."""
    dpt_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    """Channels of the four reassembled token maps (4x, 2x, 1x, 1/2 of the token grid)."""
    dpt_features: int = Field(1024, ge=8)
    """Channels of the DPT fusion blocks."""
    dpt_last: int = Field(512, ge=8)
    """Channels of the DPT output convolutions."""
    head_channels: int = Field(256, ge=8)
    """Channels each DPT head gives the temporal upsampling."""
    depth_channels: int = Field(3, ge=1)
    """Depth-head output channels (averaged into one depth; Matrix-3D: 3)."""
    gaussian_channels: int = Field(14, ge=GAUSSIAN_FIELDS)
    """Gaussian-head output channels; the last 11 are used (Matrix-3D's first 3 are unused)."""
    max_depth: float = Field(30.0, gt=0)
    """Largest depth the model can predict, metres (raise it for outdoor scenes)."""
    scale_min: float = Field(0.5, gt=0)
    """Smallest scale factor (times depth x scale_unit / grid width)."""
    scale_max: float = Field(25.0, gt=0)
    """Largest scale factor."""
    scale_unit: float = Field(0.12, gt=0)
    """Scale = factor x depth x scale_unit / Gaussian-grid width (Matrix-3D: 2.5e-4 at a 480-wide grid)."""
    ray_mapping: Literal["ours", "matrix3d"] = "ours"
    """Plücker ray mapping (``RAY_MAPPINGS``); ``matrix3d`` for Matrix-3D's released weights."""
    gradient_checkpointing: bool = False
    """Recompute each transformer layer in the backward pass (memory for time)."""


PRESETS = {
    "published": LRMConfig(),
    "tiny": LRMConfig(width=64, heads=2, ffn=128, depth_layers=2, gaussian_layers=2, dpt_dims=(16, 32, 64, 128),
                      dpt_features=64, dpt_last=32, head_channels=32, depth_channels=1,
                      gaussian_channels=GAUSSIAN_FIELDS),
}
"""Named sizes: ``published`` (Matrix-3D's) and ``tiny`` (CPU tests)."""


def latent_frames(frames: int, temporal: int = 4) -> int:
    """Latent frames of a video of ``frames`` = temporal k + 1 frames (ValueError otherwise)."""
    if frames < 1 or (frames - 1) % temporal:
        raise ValueError(f"{frames} frames: the model takes {temporal}k + 1 frames (e.g. 81, 49, 17, 9)")
    return (frames - 1) // temporal + 1


def relative_poses(c2w: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(F, 4, 4) float32 poses relative to frame 0: inv(c2w_0) @ c2w_f (frame 0 becomes the identity)."""
    c2w = as_c2w_array(np.asarray(c2w, np.float64))
    return torch.tensor(c2w_to_w2c(c2w[0]) @ c2w, dtype=torch.float32)


def ray_directions(height: int, width: int, mapping: str = "ours") -> torch.Tensor:
    """(H, W, 3) unit camera-frame ray of every equirect pixel centre under ``mapping`` (``RAY_MAPPINGS``)."""
    d = torch.from_numpy(equirect_directions(width, height, dtype=np.float32))
    if mapping == "matrix3d":
        return d[..., [2, 0, 1]]
    if mapping != "ours":
        raise ValueError(f"ray mapping {mapping!r} is not one of {', '.join(RAY_MAPPINGS)}")
    return d


def plucker_rays(c2w_rel: torch.Tensor, height: int, width: int, mapping: str = "ours") -> torch.Tensor:
    """(..., F, H, W, 6) spherical Plücker embedding (o x d, d) of poses (..., F, 4, 4) relative to frame 0: d the
    pixel's ray (``ray_directions``) turned by the pose's rotation, o the pose's centre."""
    d = ray_directions(height, width, mapping).to(c2w_rel)
    world = torch.einsum("...ij,hwj->...hwi", c2w_rel[..., :3, :3], d)
    origin = c2w_rel[..., None, None, :3, 3].expand_as(world)
    return torch.cat([torch.linalg.cross(origin, world, dim=-1), world], -1)


class _ResidualConv(nn.Module):
    """ReLU, 3x3 conv, ReLU, 3x3 conv, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _Fusion(nn.Module):
    """DPT fusion: the coarser path plus a residual unit of the skip, a residual unit, bilinear 2x, 1x1 conv."""

    def __init__(self, channels: int, has_skip: bool) -> None:
        super().__init__()
        self.skip = _ResidualConv(channels) if has_skip else None
        self.unit = _ResidualConv(channels)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x[..., :skip.shape[-2], :skip.shape[-1]] + self.skip(skip)
        x = F.interpolate(self.unit(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out(x)


class DPTHead(nn.Module):
    """Four token maps (N, width, gh, gw) -> (N, head_channels, 8 gh, 8 gw) (DPT, as DUSt3R / CroCo build it)."""

    def __init__(self, cfg: LRMConfig) -> None:
        super().__init__()
        w, dims, feat = cfg.width, cfg.dpt_dims, cfg.dpt_features
        self.reassemble = nn.ModuleList([
            nn.Sequential(nn.Conv2d(w, dims[0], 1), nn.ConvTranspose2d(dims[0], dims[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(w, dims[1], 1), nn.ConvTranspose2d(dims[1], dims[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(w, dims[2], 1)),
            nn.Sequential(nn.Conv2d(w, dims[3], 1), nn.Conv2d(dims[3], dims[3], 3, stride=2, padding=1)),
        ])
        self.project = nn.ModuleList([nn.Conv2d(d, feat, 3, padding=1, bias=False) for d in dims])
        self.fuse = nn.ModuleList([_Fusion(feat, has_skip=i < 3) for i in range(4)])
        self.head = nn.Sequential(nn.Conv2d(feat, cfg.dpt_last, 3, padding=1),
                                  nn.Conv2d(cfg.dpt_last, cfg.dpt_last, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(cfg.dpt_last, cfg.head_channels, 1))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = [proj(re(m)) for re, proj, m in zip(self.reassemble, self.project, maps, strict=True)]
        path = self.fuse[3](x[3])
        for i in (2, 1, 0):
            path = self.fuse[i](path, x[i])
        return self.head(path)


def _four(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """The four layer outputs a DPT head reads: all four of a 4-layer group, else four spread over the group."""
    n = len(maps)
    return [maps[round(i * (n - 1) / 3)] for i in range(4)]


@dataclass
class LRMOutput:
    """The model's per-pixel predictions on the half-resolution grid, per video frame."""

    depth: torch.Tensor
    """(B, F, H', W') range along each pixel's ray, metres."""
    scales: torch.Tensor
    """(B, F, H', W', 3) standard deviations, metres."""
    quats: torch.Tensor
    """(B, F, H', W', 4) unit rotations (w, x, y, z) in the frame's camera frame."""
    sh0: torch.Tensor
    """(B, F, H', W', 3) degree-0 SH colour."""
    opacity_logits: torch.Tensor
    """(B, F, H', W') opacity logits."""


class PanoLRM(nn.Module):
    """Video latents + Plücker rays -> per-pixel Gaussians (see the module doc)."""

    def __init__(self, cfg: LRMConfig) -> None:
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} is not a multiple of heads {cfg.heads}")
        if cfg.scale_max <= cfg.scale_min:
            raise ValueError(f"scale_max {cfg.scale_max} must exceed scale_min {cfg.scale_min}")
        self.cfg = cfg
        w, p, t = cfg.width, cfg.latent_patch, cfg.vae_temporal
        pixels = p * cfg.vae_stride
        self.latent_stem = nn.Conv2d(cfg.latent_channels, w, p, stride=p)
        self.latent_norm = nn.LayerNorm(w)
        self.camera_stem = nn.Conv3d(6, w, (t, pixels, pixels), stride=(t, pixels, pixels), padding=(t // 2, 0, 0))
        self.proj = nn.Linear(2 * w, w)
        self.input_norm = nn.LayerNorm(w, bias=False)

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(w, cfg.heads, cfg.ffn, dropout=0.0, activation="gelu",
                                              batch_first=True)

        self.depth_blocks = nn.ModuleList([layer() for _ in range(cfg.depth_layers)])
        self.gaussian_blocks = nn.ModuleList([layer() for _ in range(cfg.gaussian_layers)])
        self.depth_head = DPTHead(cfg)
        self.gaussian_head = DPTHead(cfg)
        up = dict(kernel_size=(t + 1, 1, 1), stride=(t, 1, 1), padding=(t // 2, 0, 0), bias=False)
        self.depth_time = nn.ConvTranspose3d(cfg.head_channels, cfg.depth_channels, **up)
        self.gaussian_time = nn.ConvTranspose3d(cfg.head_channels, cfg.gaussian_channels, **up)

    def depth_parameters(self) -> list[nn.Parameter]:
        """Every parameter the depth output depends on: stems, projection, the depth layers, the depth head (frozen
        in training stage 2, so stage 2 leaves the depth exactly as stage 1 made it)."""
        parts = (self.latent_stem, self.latent_norm, self.camera_stem, self.proj, self.input_norm, self.depth_blocks,
                 self.depth_head, self.depth_time)
        return [p for part in parts for p in part.parameters()]

    def gaussian_parameters(self) -> list[nn.Parameter]:
        """The parameters only the Gaussians' other attributes depend on (trained in stage 2)."""
        return [p for part in (self.gaussian_blocks, self.gaussian_head, self.gaussian_time) for p in part.parameters()]

    def forward(self, latents: torch.Tensor, plucker: torch.Tensor) -> LRMOutput:
        """latents (B, T, C, h, w), normalised as ``inference.condition.encode_video`` makes them; plucker
        (B, F, H, W, 6) with F = 4 (T - 1) + 1, H = 8 h, W = 8 w."""
        cfg = self.cfg
        b, t, c, h, w = latents.shape
        frames = plucker.shape[1]
        if c != cfg.latent_channels or latent_frames(frames, cfg.vae_temporal) != t:
            raise ValueError(f"latents {tuple(latents.shape)} and rays {tuple(plucker.shape)} do not match: "
                             f"{cfg.latent_channels} channels and {cfg.vae_temporal} (T - 1) + 1 frames expected")
        size = (h * cfg.vae_stride, w * cfg.vae_stride)
        if tuple(plucker.shape[2:4]) != size or h % cfg.latent_patch or w % cfg.latent_patch:
            raise ValueError(f"rays {tuple(plucker.shape[2:4])} are not {cfg.vae_stride} x the latents' {(h, w)}, "
                             f"or the latents are not a multiple of the patch {cfg.latent_patch}")
        gh, gw = h // cfg.latent_patch, w // cfg.latent_patch
        lat = self.latent_stem(latents.reshape(b * t, c, h, w)).flatten(2).transpose(1, 2)
        lat = self.latent_norm(lat).reshape(b, t * gh * gw, -1)
        cam = self.camera_stem(plucker.permute(0, 4, 1, 2, 3)).flatten(2).transpose(1, 2)
        x = self.input_norm(self.proj(torch.cat([lat, cam], -1)))
        depth_maps, gaussian_maps = [], []
        for blocks, maps in ((self.depth_blocks, depth_maps), (self.gaussian_blocks, gaussian_maps)):
            for block in blocks:
                x = checkpoint(block, x, use_reentrant=False) if cfg.gradient_checkpointing and self.training \
                    else block(x)
                maps.append(x.reshape(b * t, gh, gw, -1).permute(0, 3, 1, 2))
        depth_raw = self._in_time(self.depth_head(_four(depth_maps)), self.depth_time, b, t, frames)
        g = self._in_time(self.gaussian_head(_four(gaussian_maps)), self.gaussian_time, b, t, frames)
        g = g[..., cfg.gaussian_channels - GAUSSIAN_FIELDS:]
        depth = cfg.max_depth * torch.sigmoid(depth_raw.mean(-1))
        factor = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * torch.sigmoid(g[..., 0:3])
        scales = factor * depth[..., None] * cfg.scale_unit / depth.shape[-1]
        xyzw = F.normalize(g[..., 3:7], dim=-1, eps=1e-8)
        return LRMOutput(depth=depth, scales=scales, quats=xyzw[..., [3, 0, 1, 2]], sh0=g[..., 7:10],
                         opacity_logits=g[..., 10])

    @staticmethod
    def _in_time(maps: torch.Tensor, up: nn.ConvTranspose3d, b: int, t: int, frames: int) -> torch.Tensor:
        """(B T, C, H', W') head output -> (B, F, H', W', C') through the temporal upsampling."""
        x = maps.reshape(b, t, *maps.shape[1:]).permute(0, 2, 1, 3, 4)
        return up(x)[:, :, :frames].permute(0, 2, 3, 4, 1)


def to_gaussians(out: LRMOutput, c2w: torch.Tensor, frame_stride: int = 2, batch: int = 0) -> Gaussians:
    """The Gaussians of every ``frame_stride``-th frame of sample ``batch``, merged: means = depth x the pixel's
    ray (OpenCV camera frame) through the frame's pose, rotations = the pose's rotation times the predicted one.
    With ``c2w`` (F, 4, 4) relative to frame 0 they are in frame 0's camera frame; with the clip's own poses, in
    its world (the model only ever sees relative poses, so both describe the same prediction)."""
    depth = out.depth[batch, ::frame_stride]
    poses = torch.as_tensor(c2w)[::frame_stride].to(depth)
    h, w = depth.shape[-2:]
    rays = ray_directions(h, w, "ours").to(depth)
    cam = depth[..., None] * rays
    means = torch.einsum("fij,fhwj->fhwi", poses[:, :3, :3], cam) + poses[:, None, None, :3, 3]
    pose_q = rotmat_to_quat(poses[:, :3, :3])[:, None, None].expand(*depth.shape, 4)
    quats = quat_multiply(pose_q, out.quats[batch, ::frame_stride])
    logit = out.opacity_logits[batch, ::frame_stride]
    return Gaussians(means=means.reshape(-1, 3), log_scales=out.scales[batch, ::frame_stride].log().reshape(-1, 3),
                     quats=quats.reshape(-1, 4), opacity_logits=logit.reshape(-1),
                     sh0=out.sh0[batch, ::frame_stride].reshape(-1, 3))


def usable_frames(frames: int, temporal: int = 4) -> int:
    """The longest temporal k + 1 prefix of a clip of ``frames`` frames."""
    if frames < 1:
        raise ValueError("a clip needs at least one frame")
    return (frames - 1) // temporal * temporal + 1


@torch.no_grad()
def predict(model: PanoLRM, vae, frames: np.ndarray, c2w: np.ndarray, frame_stride: int = 2,
            device: torch.device | str | None = None) -> tuple[Gaussians, dict[str, float], int]:
    """The Gaussians (in the clip's world) of a panoramic video (F, H, W, 3) uint8 with poses (F, 4, 4): its
    longest 4k + 1 prefix encoded by the Wan ``vae`` (``inference.condition.encode_video``), its poses relative to
    frame 0 as Plücker rays, one forward pass, every ``frame_stride``-th frame's Gaussians kept. Returns them, the
    seconds of ``encode`` and ``predict``, and the number of frames used."""
    import time

    from inference.condition import encode_video, to_pixels

    device = torch.device(device) if device is not None else next(model.parameters()).device
    n = usable_frames(len(frames), model.cfg.vae_temporal)
    frames, c2w = np.asarray(frames[:n]), as_c2w_array(c2w)[:n]
    t = time.perf_counter()
    latents = encode_video(vae, to_pixels(frames)).permute(0, 2, 1, 3, 4).to(device)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    rays = plucker_rays(relative_poses(c2w).to(device), frames.shape[1], frames.shape[2], model.cfg.ray_mapping)
    out = model(latents, rays[None])
    gaussians = to_gaussians(out, torch.tensor(c2w, dtype=torch.float32, device=device), frame_stride)
    return gaussians, {"encode": encode_s, "predict": time.perf_counter() - t}, n


def build_lrm(preset_or_config: str | LRMConfig, seed: int = 0) -> PanoLRM:
    """A model of a preset name (``PRESETS``) or config, weights drawn from ``seed`` (the global RNG is left as
    it was)."""
    if isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"LRM preset {preset_or_config!r} is not one of {', '.join(PRESETS)}")
        preset_or_config = PRESETS[preset_or_config]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PanoLRM(preset_or_config)


def save_lrm(model: PanoLRM, folder: str | Path) -> Path:
    """Write ``lrm.safetensors`` and ``lrm_config.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(model.cfg.model_dump_json(indent=1) + "\n")
    return folder


def load_lrm(path: str | Path, device: torch.device | str = "cpu") -> PanoLRM:
    """A model from an LRM folder (``save_lrm``; or the ``lrm.safetensors`` in it), ``tiny`` (random weights,
    seed 0), or a Matrix-3D ``.pt`` checkpoint (``load_matrix3d``); in eval mode on ``device``."""
    from safetensors.torch import load_file

    if str(path) == "tiny":
        return build_lrm("tiny").to(device).eval()
    path = Path(path).expanduser()
    if path.suffix == ".pt":
        return load_matrix3d(path).to(device).eval()
    folder = path.parent if path.suffix == ".safetensors" else path
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} does not exist: give a folder written by train-lrm "
                                    f"({WEIGHTS_FILE} + {CONFIG_FILE}), a Matrix-3D .pt checkpoint, or 'tiny'")
    cfg = LRMConfig.model_validate(json.loads((folder / CONFIG_FILE).read_text()))
    with torch.device("meta"):
        model = PanoLRM(cfg)
    model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True, assign=True)
    return model.to(device).eval()


# --- Matrix-3D's checkpoint ---------------------------------------------------------------------------------------

_MATRIX3D_PREFIX = "gs_decoder1."
_MATRIX3D_UNUSED = ("encoder_layer.", "camera_layer_norm.", "dpt_head.dpt.scratch.layer_rn.",
                    "dpt_head_gs.dpt.scratch.layer_rn.", "dpt_head.dpt.scratch.refinenet4.resConfUnit1.",
                    "dpt_head_gs.dpt.scratch.refinenet4.resConfUnit1.")
"""Keys of Matrix-3D's decoder that its forward pass never uses (a spare layer, a norm, aliases)."""


def matrix3d_key(key: str) -> str | None:
    """Our state-dict key for one of Matrix-3D's (``gs_decoder1.`` stripped), or None for an unused one."""
    if key.startswith(_MATRIX3D_UNUSED):
        return None
    simple = {"video_conv.": "latent_stem.", "video_layer_norm.": "latent_norm.", "camera_conv.": "camera_stem.",
              "linear_proj.": "proj.", "transformer_input_layernorm.": "input_norm.",
              "transformer.layers.": "depth_blocks.", "transformer_gs.layers.": "gaussian_blocks.",
              "deconv3d_dpt.": "depth_time.", "deconv3d_sh.": "gaussian_time."}
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old):]
    for old, new in (("dpt_head.dpt.", "depth_head."), ("dpt_head_gs.dpt.", "gaussian_head.")):
        if key.startswith(old):
            rest = key[len(old):]
            for a, b in (("act_postprocess.", "reassemble."), ("head.", "head.")):
                if rest.startswith(a):
                    return new + b + rest[len(a):]
            if rest.startswith("scratch.layer") and "_rn." in rest:  # scratch.layerK_rn.weight
                k = int(rest[len("scratch.layer")]) - 1
                return f"{new}project.{k}.{rest.split('_rn.', 1)[1]}"
            if rest.startswith("scratch.refinenet"):  # scratch.refinenetK.(out_conv|resConfUnitN).…
                k = int(rest[len("scratch.refinenet")]) - 1
                part = rest.split(".", 2)[2]
                part = (part.replace("out_conv.", "out.").replace("resConfUnit1.", "skip.")
                        .replace("resConfUnit2.", "unit."))
                return f"{new}fuse.{k}.{part}"
    raise KeyError(f"unknown key {key!r} in a Matrix-3D LRM checkpoint")


def load_matrix3d(path: str | Path) -> PanoLRM:
    """The published-size model with Matrix-3D's released weights (``pano_lrm_480p.pt``: a dict whose ``module``
    holds the engine's state dict; only tensors are read, ``weights_only=True``) and its ray mapping. Every key
    of ours must be found; Matrix-3D's unused keys are dropped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: download checkpoints/pano_lrm_480p.pt of Skywork/Matrix-3D")
    blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = blob.get("module", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not any(k.startswith(_MATRIX3D_PREFIX) for k in state):
        raise ValueError(f"{path} holds no '{_MATRIX3D_PREFIX}*' weights: not a Matrix-3D LRM checkpoint")
    ours = {}
    for key, value in state.items():
        if key.startswith(_MATRIX3D_PREFIX) and (mapped := matrix3d_key(key[len(_MATRIX3D_PREFIX):])) is not None:
            ours[mapped] = value.float()
    model = PanoLRM(PRESETS["published"].model_copy(update={"ray_mapping": "matrix3d"}))
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the published model: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}")
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["CONFIG_FILE", "DPTHead", "LRMConfig", "LRMOutput", "PRESETS", "PanoLRM", "RAY_MAPPINGS", "WEIGHTS_FILE",
           "build_lrm", "latent_frames", "load_lrm", "load_matrix3d", "matrix3d_key", "parameter_count",
           "plucker_rays", "predict", "ray_directions", "relative_poses", "to_gaussians", "usable_frames"]
