"""Evaluation of panoramic videos against ground truth: the columns of Matrix-3D's Table 2.

Image quality, per frame, averaged over every frame of every clip (frames weigh the same):

- ``psnr`` (dB) over all pixels and channels of a uint8 frame, capped at ``PSNR_CAP_DB`` = 100 dB per
  frame: identical frames have an infinite PSNR, which JSON cannot hold (``Infinity`` is rejected by
  strict readers), so they count as 100 dB and ``psnr_capped`` says that at least one frame hit the cap.
  Near-identical frames can exceed 100 dB too (one level on one value of a 960 x 480 frame is 109 dB)
  and are capped the same way: 100 dB means "identical or as good as identical".
- ``ssim``: Wang et al.'s SSIM with an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  L = 255, over the valid region (the 5-pixel border where the window leaves the frame is left out),
  on each RGB channel separately and averaged over channels: the same numbers as scikit-image's
  ``structural_similarity(..., channel_axis=-1, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``.
- ``lpips``: LPIPS v0.1 (AlexNet or VGG16 trunk, learned linear heads) on the whole frame.

Distribution distances (need at least 2 samples per side): ``fid`` on Inception-v3 pool features
(2048-d) of every frame, ``fvd`` on I3D features of every clip. The whole equirect is resized to the
network's input size (squashed, never centre-cropped: a crop would drop half the panorama).

Camera following: ``estimate_poses`` recovers each predicted video's camera path (SIFT features on the
equirect, essential matrices on bearing vectors with RANSAC, relative poses chained through
keyframes, scale carried by triangulated depths) and ``pose_errors`` compares it with the requested
trajectory: ``r_err_deg`` and ``t_err``.

Network weights only ever come from paths the user gives (nothing downloads). A metric whose weights
are not given, or whose path does not exist, is reported as ``None`` (``null`` in metrics.json) with the
reason in ``missing``; it is never estimated some other way. Accepted files (all loaded without
executing code: safetensors, or ``torch.load(weights_only=True)``; TorchScript only for I3D):

- LPIPS (``load_lpips``): a file or a folder of files whose merged state dict holds the trunk in
  torchvision's layout (``features.N.weight/bias``: torchvision's ``alexnet-owt-7be5be79.pth`` or
  ``vgg16-397923af.pth``, or lpips' own ``net.sliceK.N.*`` layout) and the five linear heads
  ``linK.model.1.weight`` (``lpips/weights/v0.1/alex.pth`` or ``vgg.pth`` of the lpips package or the
  richzhang/PerceptualSimilarity repository). The trunk is recognised from its keys.
- FID (``load_inception``): the FID Inception-v3 port of TensorFlow's 2015-12-05 graph,
  ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid releases) or
  ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity releases), or the same keys as
  safetensors; the ``fc`` classifier is not used.
- FVD (``load_i3d``): the TorchScript I3D (Kinetics-400) that StyleGAN-V distributes as
  ``i3d_torchscript.pt`` and most PyTorch FVD code uses; it is called as
  ``net(x, rescale=False, resize=False, return_features=True)`` on (B, 3, T, 224, 224) in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dataset.core.codecs import psnr as _stack_psnr
from dataset.core.conventions import as_c2w_array, c2w_to_w2c, check_equirect_size, lonlat_to_direction, pixel_to_lonlat
from dataset.core.jobspec import StrictModel

PSNR_CAP_DB = 100.0
"""PSNR reported for a frame whose PSNR is higher (identical frames: infinite)."""

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
"""Files a weights folder is read from (state dicts; ``.safetensors`` preferred)."""


# ============================================================================================== inputs


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate a stack of uint8 RGB frames (N, H, W, 3) and return it."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty (N, H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    return arr


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = check_frames(pred, "pred"), check_frames(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ: compare videos of the same frame count "
                         f"and size")
    return pred, gt


# ============================================================================================== PSNR, SSIM


def frame_psnr(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N,) PSNR in dB of each frame pair (uint8, peak 255); ``inf`` where the frames are identical."""
    pred, gt = _check_pair(pred, gt)
    return np.array([_stack_psnr(p, g) for p, g in zip(pred, gt, strict=True)])


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR (dB), each capped at ``PSNR_CAP_DB``."""
    return float(np.minimum(frame_psnr(pred, gt), PSNR_CAP_DB).mean())


SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
"""The 11 x 11 window's half size (scikit-image's truncate 3.5 at sigma 1.5)."""


def frame_ssim(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N,) SSIM of each frame pair: Gaussian window 11 x 11, sigma 1.5, per RGB channel, valid region."""
    from scipy.ndimage import correlate1d

    pred, gt = _check_pair(pred, gt)
    r = SSIM_RADIUS
    if min(pred.shape[1:3]) <= 2 * r:
        raise ValueError(f"frames of {pred.shape[2]}x{pred.shape[1]} are too small for SSIM's 11x11 window")
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * SSIM_SIGMA**2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:  # separable window, then the valid region only
        return correlate1d(correlate1d(x, g, axis=0), g, axis=1)[r:-r, r:-r]

    out = []
    for p, t in zip(pred, gt, strict=True):
        a, b = p.astype(np.float64), t.astype(np.float64)
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        s_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(s_map.mean())
    return np.array(out)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean SSIM over frames (1 for identical frames)."""
    return float(frame_ssim(pred, gt).mean())


def torch_ssim(pred, gt):
    """(N,) differentiable SSIM of image batches (N, H, W, 3) with values in [0, 1]: ``frame_ssim``'s window and
    constants (data range 1), for training losses; equals ``frame_ssim`` of the same images scaled to 0..255."""
    import torch
    import torch.nn.functional as F

    r = SSIM_RADIUS
    g = torch.exp(-(torch.arange(-r, r + 1, dtype=pred.dtype, device=pred.device) ** 2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    c1, c2 = 0.01**2, 0.03**2
    a, b = pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2)
    channels = a.shape[1]
    wx, wy = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(x):  # separable window, valid region only
        return F.conv2d(F.conv2d(x, wx, groups=channels), wy, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    s_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s_map.flatten(1).mean(1)


# ============================================================================================== weights


class WeightsMissing(FileNotFoundError):
    """The weights of a network metric are not given or not there: the metric is reported as missing."""


def _weight_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        if not files:
            raise ValueError(f"weights folder {path} holds no {'/'.join(WEIGHT_SUFFIXES)} files")
        return files
    return [path]


def load_state_dict(path: str | Path) -> dict:
    """Tensors of a weights file, or of every weights file of a folder merged, without executing code.

    ``.safetensors`` is read with safetensors; anything else with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.exists():
        raise WeightsMissing(f"{path} does not exist")
    merged: dict = {}
    for f in _weight_files(path):
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                sd = load_file(f)
            else:
                sd = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # any reader error is this file's problem
            raise ValueError(f"cannot read weights {f} as safetensors or a weights-only torch state dict: "
                             f"{type(exc).__name__}: {exc}") from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ValueError(f"weights {f} are not a state dict (a mapping of names to tensors)")
        clash = sorted(set(sd) & set(merged))
        if clash:
            raise ValueError(f"weights {f} repeat key {clash[0]!r} of another file in {path}: give one file each")
        merged.update(sd)
    return merged


def _checked_load(module, sd: dict, what: str, source: Path) -> None:
    """Load ``sd`` into ``module`` strictly; a missing or misshaped key is a one-line error naming it."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise ValueError(f"{source} is not {what}: it lacks {missing[0]!r} ({len(missing)} keys missing)")
    bad = next((k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)), None)
    if bad is not None:
        raise ValueError(f"{source} is not {what}: {bad!r} has shape {tuple(sd[bad].shape)}, expected "
                         f"{tuple(own[bad].shape)}")
    module.load_state_dict({k: sd[k] for k in own})


def _device(device: str | None):
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


# ============================================================================================== LPIPS

_LPIPS_TRUNKS = {
    # name: (layers: (in, out, kernel, stride, padding) convolutions, "M" max pools, each conv followed by a ReLU;
    #        feature-index slices ending at each tapped ReLU; channels per tap)
    "alex": ([(3, 64, 11, 4, 2), "M", (64, 192, 5, 1, 2), "M", (192, 384, 3, 1, 1), (384, 256, 3, 1, 1),
              (256, 256, 3, 1, 1)], ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)), (64, 192, 384, 256, 256)),
    "vgg": ([(3, 64, 3, 1, 1), (64, 64, 3, 1, 1), "M", (64, 128, 3, 1, 1), (128, 128, 3, 1, 1), "M",
             (128, 256, 3, 1, 1), (256, 256, 3, 1, 1), (256, 256, 3, 1, 1), "M", (256, 512, 3, 1, 1),
             (512, 512, 3, 1, 1), (512, 512, 3, 1, 1), "M", (512, 512, 3, 1, 1), (512, 512, 3, 1, 1),
             (512, 512, 3, 1, 1)], ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)), (64, 128, 256, 512, 512)),
}
"""The ImageNet trunks' convolutional layers, numbered exactly as torchvision's ``alexnet().features`` and
``vgg16().features`` (so their weight files load as they are), up to the last tapped ReLU."""
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


class LpipsNetwork(torch.nn.Module):
    """LPIPS v0.1: ImageNet trunk, unit-normalised activations at five ReLUs, learned non-negative 1x1 heads,
    spatial mean, summed over the taps."""

    def __init__(self, trunk: str = "alex") -> None:
        super().__init__()
        if trunk not in _LPIPS_TRUNKS:
            raise ValueError(f"LPIPS trunk {trunk!r} is not one of {', '.join(_LPIPS_TRUNKS)}")
        layers, self.slices, chans = _LPIPS_TRUNKS[trunk]
        self.trunk = trunk
        modules = []
        for layer in layers:
            if layer == "M":
                modules.append(torch.nn.MaxPool2d(kernel_size=3 if trunk == "alex" else 2, stride=2))
            else:
                cin, cout, k, stride, pad = layer
                modules += [torch.nn.Conv2d(cin, cout, k, stride, pad), torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*modules)
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def forward(self, a, b):
        """Per-image distances (B,) of images (B, 3, H, W) in [-1, 1]."""
        x = (a - self.shift) / self.scale
        y = (b - self.shift) / self.scale
        total = 0.0
        for (lo, hi), lin in zip(self.slices, self.lins, strict=True):
            for m in self.features[lo:hi]:
                x, y = m(x), m(y)
            nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def _lpips_state_dict(sd: dict) -> dict:
    """Rename lpips' own layouts (``net.sliceK.N.*``, ``linK.model.1.*``) to ours."""
    import re

    out = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"net\.slice\d+\.(\d+\.(?:weight|bias))", k):
            out[f"features.{m[1]}"] = v
        elif m := re.fullmatch(r"lins?\.?(\d+)\.model\.1\.weight", k):
            out[f"lins.{m[1]}.weight"] = v
        else:
            out[k] = v
    return out


def load_lpips(path: str | Path, device: str | None = None) -> LpipsNetwork:
    """LPIPS from a weights file or folder (trunk + heads, see the module docstring); the trunk is found from
    its keys (``features.28.weight`` only exists in VGG16)."""
    sd = _lpips_state_dict(load_state_dict(path))
    net = LpipsNetwork("vgg" if "features.28.weight" in sd else "alex")
    _checked_load(net, sd, f"LPIPS weights ({net.trunk} trunk + linK.model.1.weight heads)", Path(path))
    return net.to(_device(device))


def frame_lpips(pred: np.ndarray, gt: np.ndarray, weights: str | Path | LpipsNetwork, chunk: int = 4) -> np.ndarray:
    """(N,) LPIPS distance of each frame pair (0 for identical frames); ``weights`` is a path or ``load_lpips``."""
    pred, gt = _check_pair(pred, gt)
    net = weights if isinstance(weights, LpipsNetwork) else load_lpips(weights)
    dev = net.shift.device
    out = []
    with torch.inference_mode():
        for s in range(0, len(pred), chunk):
            a, b = (torch.from_numpy(v[s:s + chunk]).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
                    for v in (pred, gt))
            out.append(net(a, b).double().cpu().numpy())
    return np.concatenate(out)


def lpips(pred: np.ndarray, gt: np.ndarray, weights: str | Path | LpipsNetwork) -> float:
    """Mean LPIPS over frames."""
    return float(frame_lpips(pred, gt, weights).mean())


# ============================================================================================== FID


def _inception_blocks():
    """torchvision's Inception-v3 blocks with the pooling of TensorFlow's FID graph: average pools that do not
    count padding, and a max pool in the last block's pool branch."""
    from torchvision.models import inception as tv

    def avg(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class BlockA(tv.InceptionA):
        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg(x))], 1)

    class BlockC(tv.InceptionC):
        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
                bd = m(bd)
            return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg(x))], 1)

    class BlockE(tv.InceptionE):
        def __init__(self, in_channels: int, max_pool: bool) -> None:
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else avg(x)
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pool)], 1)

    return tv, BlockA, BlockC, BlockE


class InceptionFeatures(torch.nn.Module):
    """FID's Inception-v3 (TensorFlow 2015-12-05 graph) up to its 2048-d pool features."""

    SIZE = 299

    def __init__(self) -> None:
        super().__init__()
        tv, block_a, block_c, block_e = _inception_blocks()
        conv = tv.BasicConv2d
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = block_a(192, 32), block_a(256, 64), block_a(288, 64)
        self.Mixed_6a = tv.InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = block_c(768, 128), block_c(768, 160)
        self.Mixed_6d, self.Mixed_6e = block_c(768, 160), block_c(768, 192)
        self.Mixed_7a = tv.InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = block_e(1280, max_pool=False), block_e(2048, max_pool=True)
        self.pool = torch.nn.MaxPool2d(kernel_size=3, stride=2)
        self.eval().requires_grad_(False)

    def forward(self, x):
        """(B, 2048) features of images (B, 3, 299, 299) normalised as (x - 128) / 128."""
        x = self.pool(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def load_inception(path: str | Path, device: str | None = None) -> InceptionFeatures:
    """FID Inception-v3 from a weights file (pytorch-fid / torch-fidelity layout, see the module docstring)."""
    net = InceptionFeatures()
    _checked_load(net, load_state_dict(path), "FID Inception-v3 weights (pt_inception-2015-12-05 layout)", Path(path))
    return net.to(_device(device))


def inception_features(frames: np.ndarray, weights: str | Path | InceptionFeatures, chunk: int = 16) -> np.ndarray:
    """(N, 2048) float64 pool features of frames (N, H, W, 3) uint8, each resized (bilinear) to 299 x 299."""
    frames = check_frames(frames)
    net = weights if isinstance(weights, InceptionFeatures) else load_inception(weights)
    dev = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for s in range(0, len(frames), chunk):
            x = torch.from_numpy(frames[s:s + chunk]).to(dev).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(net.SIZE, net.SIZE), mode="bilinear", align_corners=False)
            out.append(net((x - 128) / 128).double().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature sets a (N, D) and b (M, D), N, M >= 2:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with tr (S_a S_b)^(1/2) computed as the sum of the
    square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, so exact for rank-deficient S)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per side, got {len(a)} and {len(b)}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ sb @ root_a)
    d = float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())
    return max(d, 0.0)


def fid(pred_frames: np.ndarray, gt_frames: np.ndarray, weights: str | Path | InceptionFeatures) -> float:
    """FID between two sets of frames (each (N, H, W, 3) uint8, N >= 2)."""
    net = weights if isinstance(weights, InceptionFeatures) else load_inception(weights)
    return frechet_distance(inception_features(pred_frames, net), inception_features(gt_frames, net))


# ============================================================================================== FVD

I3D_SIZE = 224


def load_i3d(path: str | Path, device: str | None = None):
    """The TorchScript I3D of FVD (``i3d_torchscript.pt``, see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise WeightsMissing(f"{path} does not exist")
    try:
        net = torch.jit.load(str(path), map_location=_device(device))
    except Exception as exc:  # any TorchScript reader error means: not that file
        raise ValueError(f"{path} is not a TorchScript I3D (i3d_torchscript.pt): {type(exc).__name__}: {exc}") \
            from None
    return net.eval()


def i3d_features(videos: Iterable[np.ndarray], weights) -> np.ndarray:
    """(V, D) float64 I3D features of videos, each (T, H, W, 3) uint8 with all its frames, squashed to 224 x 224."""
    net = load_i3d(weights) if isinstance(weights, str | Path) else weights
    dev = next(iter(net.parameters()), torch.empty(0)).device
    out = []
    with torch.inference_mode():
        for video in videos:
            x = torch.from_numpy(check_frames(video, "video")).to(dev).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False) / 127.5 - 1
            feats = net(x.permute(1, 0, 2, 3)[None], rescale=False, resize=False, return_features=True)
            out.append(feats.reshape(1, -1).double().cpu().numpy())
    return np.concatenate(out)


def fvd(pred_videos: Sequence[np.ndarray], gt_videos: Sequence[np.ndarray], weights) -> float:
    """FVD between two sets of videos (at least 2 each); ``weights`` is a path or ``load_i3d``'s network."""
    net = load_i3d(weights) if isinstance(weights, str | Path) else weights
    return frechet_distance(i3d_features(pred_videos, net), i3d_features(gt_videos, net))


# ============================================================================================== camera poses

SIFT_FEATURES = 4000
"""Most SIFT keypoints kept per frame (the strongest)."""
SIFT_CONTRAST = 0.005
"""SIFT's contrast threshold: a tenth of OpenCV's default, so that smooth rendered walls still give features."""
MATCH_RATIO = 0.8
"""Lowe's ratio test on the two nearest descriptors."""
RANSAC_PIXELS = 1.0
"""Inlier threshold: angle of a bearing to its epipolar plane, in equator pixels (2 pi / W each)."""
RANSAC_ITERATIONS = 2000
"""Most 8-point hypotheses per pair (fewer once the inlier ratio found makes 99.9 % confidence)."""
MIN_INLIERS = 16
"""Fewest inliers of a usable pair; a frame without one keeps the previous frame's pose."""
KEYFRAME_KEEP = 0.5
"""A new keyframe starts when a frame keeps fewer inliers with the keyframe than this fraction of the
keyframe's first pair."""
MIN_PARALLAX_PIXELS = 0.5
"""Median inlier parallax (equator pixels) below which a pair counts as a pure rotation (no translation)."""
DEPTH_PARALLAX_PIXELS = 1.0
"""Smallest parallax (equator pixels) of a point whose triangulated depth carries the scale."""
MIN_SCALE_POINTS = 8
"""Fewest shared points with known depth that set a pair's length; fewer: the previous frame's distance."""


@dataclass
class _Features:
    bearings: np.ndarray
    """(K, 3) unit camera-frame rays of the keypoints (DESIGN.md equirect convention)."""
    descriptors: np.ndarray
    """(K, 128) float32 SIFT descriptors."""


@dataclass
class _Pair:
    """The relative pose of frame j in the camera frame of frame i, and what carries its scale."""

    rot: np.ndarray
    """(3, 3) orientation of camera j in camera i's frame."""
    direction: np.ndarray
    """(3,) unit direction from camera i to camera j in camera i's frame; zeros for a pure rotation."""
    inliers: int
    parallax: float
    """Median inlier parallax (radians)."""
    idx_i: np.ndarray
    """Keypoint indices (in frame i) of the inliers whose depth is known."""
    idx_j: np.ndarray
    depth_i: np.ndarray
    """Their range in camera i, for a unit distance between the cameras."""
    depth_j: np.ndarray


def _features(frame: np.ndarray) -> _Features:
    """SIFT keypoints of an equirect frame as bearings; the image is padded circularly so that features across
    the 360° seam are found once."""
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    pad = max(16, w // 16)
    padded = np.ascontiguousarray(np.concatenate([gray[:, -pad:], gray, gray[:, :pad]], axis=1))
    kps, desc = cv2.SIFT_create(nfeatures=SIFT_FEATURES, contrastThreshold=SIFT_CONTRAST).detectAndCompute(padded, None)
    if desc is None or not kps:
        return _Features(np.zeros((0, 3)), np.zeros((0, 128), np.float32))
    pts = np.array([k.pt for k in kps], np.float64)
    x = pts[:, 0] - pad
    keep = (x >= 0) & (x < w)
    # OpenCV puts pixel centres at integers; the project's convention at integer + 0.5.
    lon, lat = pixel_to_lonlat(x[keep] + 0.5, pts[keep, 1] + 0.5, w, h)
    return _Features(lonlat_to_direction(lon, lat), desc[keep])


def _match(a: _Features, b: _Features) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ratio-test matches of a's keypoints in b (nearest descriptors by exhaustive L2 search), each
    keypoint of b used at most once (by its best match)."""
    if len(a.descriptors) < 2 or len(b.descriptors) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    da, db = a.descriptors, b.descriptors
    d2 = (da * da).sum(1)[:, None] + (db * db).sum(1)[None] - 2 * da @ db.T  # squared distances
    two = np.argpartition(d2, 1, axis=1)[:, :2]
    rows = np.arange(len(da))[:, None]
    two = np.take_along_axis(two, np.argsort(d2[rows, two], axis=1), axis=1)
    best, second = np.maximum(d2[rows[:, 0], two[:, 0]], 0), np.maximum(d2[rows[:, 0], two[:, 1]], 0)
    ia = np.flatnonzero(best < MATCH_RATIO**2 * second)
    ia = ia[np.argsort(best[ia], kind="stable")]
    ib = two[ia, 0]
    _, first = np.unique(ib, return_index=True)  # best match first: keep it for each keypoint of b
    keep = np.sort(first)
    return ia[keep], ib[keep]


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _to_essential(e: np.ndarray) -> np.ndarray:
    """Closest essential matrices (singular values 1, 1, 0) of (..., 3, 3) matrices."""
    u, _, vt = np.linalg.svd(e)
    return (u * np.array([1.0, 1.0, 0.0])) @ vt


def _eight_point(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Essential matrices E with f2^T E f1 = 0 from bearing pairs (..., M, 3), M >= 8 (least squares)."""
    a = (f2[..., :, None] * f1[..., None, :]).reshape(*f1.shape[:-1], 9)
    _, vec = np.linalg.eigh(np.swapaxes(a, -1, -2) @ a)  # null vector of a: smallest eigenvalue of a^T a
    return _to_essential(vec[..., :, 0].reshape(*f1.shape[:-2], 3, 3))


def _epipolar_error(e: np.ndarray, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Sine of the larger angle between a bearing and the epipolar plane of its partner, per hypothesis and pair:
    (..., M) for essential matrices (..., 3, 3) and bearings (M, 3)."""
    l2 = np.einsum("...ij,mj->...mi", e, f1)
    l1 = np.einsum("...ji,mj->...mi", e, f2)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.abs((l2 * f2).sum(-1)) / np.linalg.norm(l2, axis=-1)
        r1 = np.abs((l1 * f1).sum(-1)) / np.linalg.norm(l1, axis=-1)
    return np.nan_to_num(np.maximum(r1, r2), nan=1.0)


def _ransac(f1: np.ndarray, f2: np.ndarray, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Inlier mask of the best 8-point essential matrix found (hypotheses drawn 64 at a time)."""
    m = len(f1)
    best = np.zeros(m, bool)
    needed, done = RANSAC_ITERATIONS, 0
    while done < needed:
        sample = np.argpartition(rng.random((64, m)), 8, axis=1)[:, :8]
        inliers = _epipolar_error(_eight_point(f1[sample], f2[sample]), f1, f2) < threshold
        k = int(inliers.sum(1).argmax())
        if inliers[k].sum() > best.sum():
            best = inliers[k]
            ratio = best.sum() / m
            needed = RANSAC_ITERATIONS if ratio < 0.1 else min(
                RANSAC_ITERATIONS, math.ceil(math.log(1e-3) / math.log(max(1 - ratio**8, 1e-12))))
        done += 64
    return best


def _triangulate(rot: np.ndarray, t: np.ndarray, f1: np.ndarray, f2: np.ndarray):
    """Ranges (l1, l2) along f1 in camera 1 and f2 in camera 2 of the midpoint of the two rays, for X2 = R X1 + t,
    and the rays' parallax angle."""
    c = -rot.T @ t  # camera 2's centre in camera 1
    d2 = f2 @ rot  # camera 2's rays in camera 1 (R^T f2)
    b = (f1 * d2).sum(-1)
    p, q = f1 @ c, d2 @ c
    det = np.maximum(1 - b**2, 1e-12)
    return (p - b * q) / det, (b * p - q) / det, np.arccos(np.clip(b, -1, 1))


def _pose_from_essential(e: np.ndarray, f1: np.ndarray, f2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decomposition (R, t) of E, X2 = R X1 + t, that puts most points in front of both cameras."""
    u, _, vt = np.linalg.svd(e)
    u, vt = u * np.sign(np.linalg.det(u)), vt * np.sign(np.linalg.det(vt))
    w = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    best, score = None, -1
    for rot in (u @ w @ vt, u @ w.T @ vt):
        for t in (u[:, 2], -u[:, 2]):
            l1, l2, _ = _triangulate(rot, t, f1, f2)
            n = int(((l1 > 0) & (l2 > 0)).sum())
            if n > score:
                best, score = (rot, t), n
    return best


def _refine(rot: np.ndarray, t: np.ndarray, f1: np.ndarray, f2: np.ndarray, threshold: float):
    """Least-squares (soft L1) refinement of R and the unit t over the epipolar angles of the inliers."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    basis = np.linalg.svd(t[None])[2][1:]  # two unit vectors orthogonal to t

    def unpack(x):
        tt = t + basis.T @ x[3:]
        return Rotation.from_rotvec(x[:3]).as_matrix() @ rot, tt / np.linalg.norm(tt)

    def residuals(x):
        r, tt = unpack(x)
        e = _skew(tt) @ r
        l2, l1 = f1 @ e.T, f2 @ e
        return np.concatenate([(l2 * f2).sum(-1) / np.linalg.norm(l2, axis=-1),
                               (l1 * f1).sum(-1) / np.linalg.norm(l1, axis=-1)])

    sol = least_squares(residuals, np.zeros(5), loss="soft_l1", f_scale=threshold, method="trf")
    return unpack(sol.x)


def _rotation_only(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum |f2 - R f1|^2 (Kabsch)."""
    u, _, vt = np.linalg.svd(f2.T @ f1)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def _relative_pose(a: _Features, b: _Features, pixel: float, rng: np.random.Generator) -> _Pair | None:
    """Pose of frame b in frame a's camera from matched bearings, or None without enough inliers."""
    ia, ib = _match(a, b)
    if len(ia) < MIN_INLIERS:
        return None
    f1, f2 = a.bearings[ia], b.bearings[ib]
    threshold = math.sin(RANSAC_PIXELS * pixel)
    mask = _ransac(f1, f2, threshold, rng)
    if mask.sum() < MIN_INLIERS:
        return None
    rot, t = _pose_from_essential(_eight_point(f1[mask], f2[mask]), f1[mask], f2[mask])
    rot, t = _refine(rot, t, f1[mask], f2[mask], threshold)
    inl = _epipolar_error(_skew(t) @ rot, f1, f2) < threshold
    l1, l2, parallax = _triangulate(rot, t, f1, f2)
    inl &= (l1 > 0) & (l2 > 0)
    if inl.sum() < MIN_INLIERS:
        return None
    med = float(np.median(parallax[inl]))
    if med < MIN_PARALLAX_PIXELS * pixel:  # the translation is not observable: fit a rotation only
        rot = _rotation_only(f1[mask], f2[mask])
        inl = np.einsum("ij,mj,mi->m", rot, f1, f2) > math.cos(RANSAC_PIXELS * pixel)
        if inl.sum() < MIN_INLIERS:
            return None
        rot = _rotation_only(f1[inl], f2[inl])
        empty = np.zeros(0)
        return _Pair(rot.T, np.zeros(3), int(inl.sum()), med, empty.astype(int), empty.astype(int), empty, empty)
    deep = inl & (parallax > DEPTH_PARALLAX_PIXELS * pixel)
    return _Pair(rot.T, -rot.T @ t, int(inl.sum()), med, ia[deep], ib[deep], l1[deep], l2[deep])


def estimate_poses(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    """Camera path (N, 4, 4) c2w of an equirect video (N, H, W, 3) uint8, relative to frame 0 (identity),
    translation up to one global scale.

    Each frame is matched to the current keyframe (frame 0 first): SIFT on the equirect, bearing vectors of
    the project's convention, 8-point essential matrices in RANSAC, the (R, t) with most points in front of
    both cameras, refined by least squares on the epipolar angles. A pair whose median parallax is under
    ``MIN_PARALLAX_PIXELS`` is a pure rotation. When a frame keeps fewer than ``KEYFRAME_KEEP`` of the
    keyframe's first inlier count, the previous frame becomes the keyframe. Lengths: within the first
    keyframe's frames, the pair with the widest parallax has length 1 and its triangulated depths fix the
    others' (median depth ratio of shared points); the last pair of a keyframe's frames hands its depths, at
    that scale, to the next keyframe. A frame with no usable pair keeps the previous frame's pose."""
    frames = check_frames(frames)
    w, _ = check_equirect_size(frames.shape[2], frames.shape[1])
    pixel = 2 * math.pi / w
    rng = np.random.default_rng(seed)
    feats = [_features(f) for f in frames]
    c2w = np.repeat(np.eye(4)[None], len(frames), axis=0)
    key, anchor, segment = 0, None, []
    for i in range(1, len(frames)):
        pair = _relative_pose(feats[key], feats[i], pixel, rng)
        first = next((p.inliers for _, p in segment if p is not None), None)
        weak = pair is None or (first is not None and pair.inliers < KEYFRAME_KEEP * first)
        if weak and key < i - 1:
            anchor = _place(c2w, key, anchor, segment, feats)
            key, segment = i - 1, []
            pair = _relative_pose(feats[key], feats[i], pixel, rng)
        segment.append((i, pair))
    if segment:
        _place(c2w, key, anchor, segment, feats)
    return c2w


def _place(c2w: np.ndarray, key: int, anchor: np.ndarray | None, segment: list, feats: list[_Features]
           ) -> np.ndarray:
    """Write the poses of a keyframe's frames into ``c2w``; return the ranges (NaN = unknown) of the last frame's
    keypoints at the path's scale, for that frame as the next keyframe."""
    if anchor is None or not np.isfinite(anchor).any():
        moving = [p for _, p in segment if p is not None and len(p.idx_i)]
        anchor = np.full(len(feats[key].bearings), np.nan)
        if moving:
            base = max(moving, key=lambda p: p.parallax)
            steps = np.linalg.norm(np.diff(c2w[:key + 1, :3, 3], axis=0), axis=1)
            unit = steps[steps > 0][-1] if (steps > 0).any() else 1.0  # later keyframes keep the earlier scale
            anchor[base.idx_i] = base.depth_i * unit
    length = 0.0
    for i, pair in segment:
        if pair is None:
            c2w[i] = c2w[i - 1]
            continue
        ratios = anchor[pair.idx_i] / pair.depth_i
        ratios = ratios[np.isfinite(ratios)]
        if not pair.direction.any():
            length = 0.0
        elif len(ratios) >= MIN_SCALE_POINTS:
            length = float(np.median(ratios))
        else:  # too few shared depths: as far from the keyframe as the previous frame
            length = float(np.linalg.norm(c2w[i - 1, :3, 3] - c2w[key, :3, 3]))
        rel = np.eye(4)
        rel[:3, :3], rel[:3, 3] = pair.rot, length * pair.direction
        c2w[i] = c2w[key] @ rel
    last_i, last = segment[-1]
    handed = np.full(len(feats[last_i].bearings), np.nan)
    if last is not None and length > 0:
        handed[last.idx_j] = last.depth_j * length
    return handed


def pose_errors(estimated: np.ndarray, requested: np.ndarray) -> dict[str, float | None]:
    """Camera-following errors of an estimated path against the requested one (both (N, 4, 4) c2w).

    Alignment: both paths are expressed relative to their own frame 0 (c2w_0^-1 c2w_i), which aligns origin
    and orientation at frame 0; the estimated positions are then scaled by the least-squares factor
    s = sum(p_i . q_i) / sum(|p_i|^2) onto the requested ones q_i.
    ``r_err_deg``: mean over all N frames (frame 0 contributes 0) of the geodesic angle between estimated and
    requested relative rotations, degrees. ``t_err``: mean over all N frames of |s p_i - q_i| divided by the
    requested path length (sum of its step lengths); None when the requested camera does not move."""
    from scipy.spatial.transform import Rotation

    est, req = as_c2w_array(estimated), as_c2w_array(requested)
    if len(est) != len(req):
        raise ValueError(f"{len(est)} estimated poses for {len(req)} requested ones: give one pose per frame")
    rel_est = c2w_to_w2c(est[0]) @ est
    rel_req = c2w_to_w2c(req[0]) @ req
    diff = np.swapaxes(rel_est[:, :3, :3], 1, 2) @ rel_req[:, :3, :3]
    r_err = float(np.degrees(Rotation.from_matrix(diff).magnitude()).mean())
    p, q = rel_est[:, :3, 3], rel_req[:, :3, 3]
    path = float(np.linalg.norm(np.diff(q, axis=0), axis=1).sum())
    if path <= 1e-9:
        return {"r_err_deg": r_err, "t_err": None}
    pp = float((p * p).sum())
    s = float((p * q).sum()) / pp if pp > 0 else 0.0
    return {"r_err_deg": r_err, "t_err": float(np.linalg.norm(s * p - q, axis=1).mean() / path)}


# ============================================================================================== evaluation

GENERATION_VIDEO = "video.mp4"
"""A generation output folder's panoramic video."""
GENERATION_CAMERAS = "cameras.json"
"""Its requested trajectory: Matrix-3D camera file (JSON list of world-to-camera OpenCV 4x4, one per frame)."""
GENERATION_CLIP = "clip.json"
"""Which ground-truth clip it was generated for: ``{"clip_id": "..."}`` (``generate --from-clip`` writes it)."""


class MetricWeights(StrictModel):
    """Where the metric networks' weights are (see the module docstring for the accepted files)."""

    lpips: Path | None = None
    """LPIPS trunk + linear heads: a file or a folder of files."""
    inception: Path | None = None
    """FID Inception-v3 state dict (pt_inception-2015-12-05-6726825d.pth)."""
    i3d: Path | None = None
    """FVD's TorchScript I3D (i3d_torchscript.pt)."""
    device: str | None = None
    """Torch device for the networks; None: CUDA when available, else CPU."""


WEIGHT_FLAGS = {"lpips": "--lpips-weights", "fid": "--inception-weights", "fvd": "--i3d-weights"}
"""The ``eval-video`` flag that gives each network metric its weights (named in ``missing``)."""


@dataclass
class VideoPair:
    """One predicted video with its ground truth and the trajectory that was requested for it."""

    clip_id: str
    pred: np.ndarray
    """(N, H, W, 3) uint8 predicted equirect frames."""
    gt: np.ndarray
    """(N, H, W, 3) uint8 ground-truth frames."""
    requested: np.ndarray
    """(N, 4, 4) c2w the prediction was asked to follow."""


def _networks(weights: MetricWeights) -> tuple[dict, dict[str, str]]:
    """Loaded networks by metric name, and the reason of every metric left without one."""
    loaders = {"lpips": (weights.lpips, load_lpips), "fid": (weights.inception, load_inception),
               "fvd": (weights.i3d, load_i3d)}
    nets, missing = {}, {}
    for name, (path, load) in loaders.items():
        if path is None:
            missing[name] = f"no {WEIGHT_FLAGS[name]} given"
            continue
        try:
            nets[name] = load(path, weights.device)
        except WeightsMissing as exc:
            missing[name] = f"{WEIGHT_FLAGS[name]} {exc}"
    return nets, missing


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_videos(pairs: Iterable[VideoPair], weights: MetricWeights | None = None) -> dict:
    """metrics.json's content for predicted videos against their ground truth.

    Keys: ``psnr`` (dB, frames capped at ``PSNR_CAP_DB``), ``psnr_capped``, ``ssim``, ``lpips``, ``fid``,
    ``fvd`` (None where the weights are missing or, for FID/FVD, fewer than 2 frames/clips exist),
    ``r_err_deg`` and ``t_err`` (means over clips of ``pose_errors(estimate_poses(pred), requested)``;
    ``t_err`` is None when no requested camera moves), ``missing`` (metric -> reason for every None),
    ``clips``, ``frames`` and ``per_clip`` (each clip's id, frames and its own psnr, ssim, lpips, r_err_deg,
    t_err). Frame metrics average over all frames of all clips."""
    nets, missing = _networks(weights or MetricWeights())
    per_clip, psnrs, ssims, lpipss = [], [], [], []
    feats: dict[str, tuple[list, list]] = {"fid": ([], []), "fvd": ([], [])}
    capped = False
    for pair in pairs:
        pred, gt = _check_pair(pair.pred, pair.gt)
        requested = np.asarray(pair.requested, np.float64)
        if len(requested) != len(pred):
            raise ValueError(f"clip {pair.clip_id}: {len(requested)} requested poses for {len(pred)} predicted "
                             f"frames: give one pose per frame")
        p = frame_psnr(pred, gt)
        capped |= bool((p > PSNR_CAP_DB).any())
        p = np.minimum(p, PSNR_CAP_DB)
        s = frame_ssim(pred, gt)
        lp = frame_lpips(pred, gt, nets["lpips"]) if "lpips" in nets else None
        if "fid" in nets:
            feats["fid"][0].append(inception_features(pred, nets["fid"]))
            feats["fid"][1].append(inception_features(gt, nets["fid"]))
        if "fvd" in nets:
            feats["fvd"][0].append(i3d_features([pred], nets["fvd"]))
            feats["fvd"][1].append(i3d_features([gt], nets["fvd"]))
        errors = pose_errors(estimate_poses(pred), requested)
        psnrs.append(p)
        ssims.append(s)
        if lp is not None:
            lpipss.append(lp)
        per_clip.append({"clip_id": pair.clip_id, "frames": len(pred), "psnr": float(p.mean()),
                         "ssim": float(s.mean()), "lpips": None if lp is None else float(lp.mean()), **errors})
    if not per_clip:
        raise ValueError("no clips to evaluate: --pred holds no videos")
    result = {"psnr": float(np.concatenate(psnrs).mean()), "psnr_capped": capped,
              "ssim": float(np.concatenate(ssims).mean()),
              "lpips": float(np.concatenate(lpipss).mean()) if lpipss else None}
    for name, (pred_f, gt_f) in feats.items():
        result[name] = None
        if name in nets:
            a, b = np.concatenate(pred_f), np.concatenate(gt_f)
            if min(len(a), len(b)) < 2:
                missing[name] = f"needs at least 2 {'clips' if name == 'fvd' else 'frames'}, got {len(a)}"
            else:
                result[name] = frechet_distance(a, b)
    result["r_err_deg"] = _mean([c["r_err_deg"] for c in per_clip])
    result["t_err"] = _mean([c["t_err"] for c in per_clip if c["t_err"] is not None])
    if result["t_err"] is None:
        missing["t_err"] = "no requested trajectory moves (T_err is relative to the path length)"
    result.update({"missing": missing, "clips": len(per_clip), "frames": int(sum(c["frames"] for c in per_clip)),
                   "per_clip": per_clip})
    return result


# ---------------------------------------------------------------------------------------------- inputs on disk


def _dataset_clip(dataset, clip_id: str):
    """The committed clip ``clip_id`` of a PanoDataset, or None."""
    import pyarrow.parquet as pq

    from dataset.store.reader import Clip

    for shard in dataset.shards:
        rows = pq.read_table(shard, filters=[("clip_id", "==", clip_id)]).to_pylist()
        if rows:
            return Clip(rows[0])
    return None


def _generation_outputs(pred: Path, clip: str | None) -> list[tuple[Path, str]]:
    """(folder, gt clip id) of a generation output folder, or of each one inside a folder of them."""
    import json

    folders = [pred] if (pred / GENERATION_VIDEO).is_file() else sorted(
        p for p in pred.iterdir() if (p / GENERATION_VIDEO).is_file()) if pred.is_dir() else []
    if not folders:
        raise ValueError(f"--pred {pred} is neither a dataset (shards/), a generation output ({GENERATION_VIDEO} + "
                         f"{GENERATION_CAMERAS}) nor a folder of generation outputs")
    if clip is not None and len(folders) > 1:
        raise ValueError(f"--clip names one ground-truth clip but --pred {pred} holds {len(folders)} generation "
                         f"outputs: give each its own {GENERATION_CLIP}")
    out = []
    for folder in folders:
        cid = clip
        if cid is None:
            try:
                cid = json.loads((folder / GENERATION_CLIP).read_text())["clip_id"]
            except FileNotFoundError:
                raise ValueError(f"{folder} has no {GENERATION_CLIP}: give --clip CLIP_ID (the ground-truth clip "
                                 f"it was generated for)") from None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{folder / GENERATION_CLIP} must be {{\"clip_id\": \"...\"}}: {exc}") from None
        out.append((folder, str(cid)))
    return out


def video_pairs(pred: str | Path, gt: str | Path, clip: str | None = None) -> Iterable[VideoPair]:
    """The videos to evaluate, decoded one clip at a time.

    ``pred`` is a built dataset (every committed clip is matched to the ``gt`` clip of the same ``clip_id``;
    the requested trajectory is the prediction's own ``c2w``), a generation output folder (``video.mp4``,
    ``cameras.json`` as the requested trajectory, and the gt clip id from ``clip`` or ``clip.json``), or a
    folder of generation output folders. ``gt`` is a built dataset. A prediction shorter than its ground truth
    is compared with the clip's first frames (a generation takes the first 4k+1 frames of a longer clip)."""
    from dataset.core.codecs import decode_mp4
    from dataset.core.trajectories import read_trajectory_file
    from dataset.store.reader import PanoDataset

    pred, truth = Path(pred), PanoDataset(gt)
    if not pred.exists():
        raise ValueError(f"--pred {pred} does not exist")
    if (pred / "shards").is_dir():
        if clip is not None:
            raise ValueError("--clip is for a generation output; a dataset --pred is matched to --gt by clip_id")
        sources = ((c.clip_id, c.frames, lambda c=c: c.c2w) for c in PanoDataset(pred).clips())
    else:
        sources = ((cid, lambda f=folder: decode_mp4((f / GENERATION_VIDEO).read_bytes()),
                    lambda f=folder: read_trajectory_file(f / GENERATION_CAMERAS).c2w)
                   for folder, cid in _generation_outputs(pred, clip))
    for cid, frames, requested in sources:
        reference = _dataset_clip(truth, cid)
        if reference is None:
            raise ValueError(f"--gt {gt} has no committed clip {cid!r} (the clip --pred was generated for)")
        pred_frames, gt_frames = frames(), reference.frames()
        if len(pred_frames) > len(gt_frames):
            raise ValueError(f"clip {cid}: the prediction has {len(pred_frames)} frames, its ground truth only "
                             f"{len(gt_frames)}: generate at most as many frames as the clip has")
        yield VideoPair(cid, pred_frames, gt_frames[:len(pred_frames)], requested())
