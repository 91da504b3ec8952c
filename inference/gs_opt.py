"""Optimisation of 3D Gaussians against posed perspective views: Matrix-3D's 3DGS recipe (FACTS.md "Models").

``optimise`` runs Adam on the Gaussians' parameters with per-parameter learning rates (the means' decaying
exponentially from ``lr_means`` to ``lr_means_final``, both times the scene extent as in 3DGS), one random view
per iteration, loss ``(1 - lambda_ssim) L1 + lambda_ssim (1 - SSIM)``, and the densify / prune schedule: from
``densify_from`` to ``densify_until`` every ``densify_every`` iterations, Gaussians whose mean positional gradient
exceeds ``grad_threshold`` are cloned (small) or split in two (large, scales / 1.6), and nearly transparent or
oversized ones pruned.

The gradient statistic: 3DGS thresholds the gradient of the projected mean in normalised device coordinates. With
a 90° crop (focal length W/2) that is the world-space gradient of the mean across the view times the mean's
camera depth, which is what is accumulated here (the reference rasterizer has no screen-space mean to take a
gradient of); the threshold keeps its 3DGS value. After densifying, the optimiser restarts its moments (3DGS
carries them over per Gaussian).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from pydantic import Field

from dataset.core.jobspec import StrictModel
from inference.gaussians import Gaussians, quat_to_rotmat
from inference.metrics import torch_ssim
from inference.recon_views import CropViews


class OptConfig(StrictModel):
    """The optimisation recipe (Matrix-3D's values by default)."""

    iterations: int = Field(3000, ge=1)
    """Optimiser steps (one view each)."""
    lambda_ssim: float = Field(0.2, ge=0, le=1)
    """Weight of (1 - SSIM) in the loss; L1 gets the rest."""
    lr_means: float = Field(1.6e-4, gt=0)
    """Initial learning rate of the means, times the scene extent."""
    lr_means_final: float = Field(1.6e-6, gt=0)
    """Final learning rate of the means (exponential decay), times the scene extent."""
    lr_colour: float = Field(2.5e-3, gt=0)
    """Learning rate of the SH colour coefficients."""
    lr_opacity: float = Field(0.01, gt=0)
    """Learning rate of the opacity logits."""
    lr_scale: float = Field(5e-4, gt=0)
    """Learning rate of the log-scales."""
    lr_rotation: float = Field(2e-4, gt=0)
    """Learning rate of the quaternions."""
    densify_from: int = Field(500, ge=0)
    """First iteration that densifies."""
    densify_until: int = Field(1500, ge=0)
    """Last iteration that densifies."""
    densify_every: int = Field(500, ge=1)
    """Densify and prune every this many iterations in that range."""
    grad_threshold: float = Field(2e-4, gt=0)
    """Mean positional gradient (normalised device coordinates) above which a Gaussian is cloned or split."""
    dense_fraction: float = Field(0.01, gt=0)
    """Gaussians larger than this fraction of the scene extent are split, smaller ones cloned."""
    prune_opacity: float = Field(0.005, ge=0, lt=1)
    """Gaussians below this opacity are pruned when densifying."""
    max_gaussians: int = Field(3_000_000, ge=1)
    """Densification stops adding Gaussians beyond this count."""
    seed: int = 0
    """Seed of the view order and of the split samples."""

    def with_iterations(self, iterations: int) -> OptConfig:
        """This recipe in ``iterations`` steps (``reconstruct --iterations``): the densify schedule keeps its place
        in the run and, in a shorter run, every learning rate grows by sqrt(recipe iterations / iterations), so
        Adam's noisy steps reach as far as in the full run (measured on an OpenArena walk, 32 px crops, 200
        iterations: held-out 28.1 dB with the recipe's rates, 29.8 dB scaled, 26.5 dB before optimisation)."""
        scale = iterations / self.iterations
        lr = max(1.0, math.sqrt(1 / scale))
        return self.model_copy(update={
            "iterations": iterations, "densify_from": int(self.densify_from * scale),
            "densify_until": int(self.densify_until * scale), "densify_every": max(1, int(self.densify_every * scale)),
            **{k: getattr(self, k) * lr for k in ("lr_means", "lr_means_final", "lr_colour", "lr_opacity", "lr_scale",
                                                  "lr_rotation")}})


@dataclass
class OptResult:
    """What ``optimise`` did."""

    gaussians: Gaussians
    """The optimised Gaussians (detached)."""
    losses: list[float] = field(default_factory=list)
    """Loss per iteration."""
    counts: list[tuple[int, int]] = field(default_factory=list)
    """(iteration, Gaussian count) after each densification."""
    seconds: float = 0.0
    """Wall time of the loop."""


def scene_extent(gaussians: Gaussians, views: CropViews) -> float:
    """The length the means' learning rate is scaled by: the cameras' spread (1.1 x their largest distance from
    their centre, as 3DGS), or the points' median distance from the cameras when the cameras barely move."""
    centres = views.c2w[:, :3, 3]
    radius = 1.1 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
    spread = float(torch.linalg.norm(gaussians.means.detach().cpu().double() - torch.tensor(centres.mean(0)),
                                     dim=1).median())
    return max(radius, spread, 1e-3)


def _params(g: Gaussians) -> dict[str, torch.nn.Parameter]:
    return {k: torch.nn.Parameter(v.detach().clone()) for k, v in g.tensors().items()}


def _optimizer(params: dict[str, torch.nn.Parameter], cfg: OptConfig, extent: float) -> torch.optim.Adam:
    lrs = {"means": cfg.lr_means * extent, "log_scales": cfg.lr_scale, "quats": cfg.lr_rotation,
           "opacity_logits": cfg.lr_opacity, "sh0": cfg.lr_colour, "sh_rest": cfg.lr_colour / 20}
    return torch.optim.Adam([{"params": [p], "lr": lrs[k], "name": k} for k, p in params.items()], eps=1e-15)


def _means_lr(cfg: OptConfig, extent: float, it: int) -> float:
    t = min(it / max(cfg.iterations - 1, 1), 1.0)
    return extent * math.exp((1 - t) * math.log(cfg.lr_means) + t * math.log(cfg.lr_means_final))


def view_loss(render_rgb: torch.Tensor, target: torch.Tensor, lambda_ssim: float) -> torch.Tensor:
    """``(1 - lambda) L1 + lambda (1 - SSIM)`` of (H, W, 3) images in [0, 1]."""
    l1 = (render_rgb - target).abs().mean()
    if lambda_ssim == 0:
        return l1
    return (1 - lambda_ssim) * l1 + lambda_ssim * (1 - torch_ssim(render_rgb[None], target[None])[0])


def optimise(gaussians: Gaussians, views: CropViews, cfg: OptConfig, backend: str = "auto",
             progress: bool = False, device: str | torch.device = "cpu") -> OptResult:
    """Fit ``gaussians`` to ``views`` under ``cfg`` (see the module doc); returns the fitted Gaussians."""
    from tqdm import tqdm

    from inference.rasterize import rasterize

    device = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    extent = scene_extent(gaussians, views)
    params = _params(gaussians.to(device))
    opt = _optimizer(params, cfg, extent)
    targets = torch.tensor(views.rgb, dtype=torch.float32) / 255.0
    c2w = torch.tensor(views.c2w, dtype=torch.float32)
    K = torch.tensor(views.K, dtype=torch.float32)
    size = views.rgb.shape[1]
    grad_sum = torch.zeros(len(gaussians), dtype=torch.float64)
    grad_hits = torch.zeros(len(gaussians), dtype=torch.float64)
    result = OptResult(gaussians)
    start = time.perf_counter()
    for it in tqdm(range(cfg.iterations), desc="reconstruct", unit="it", disable=not progress):
        for group in opt.param_groups:
            if group["name"] == "means":
                group["lr"] = _means_lr(cfg, extent, it)
        v = int(torch.randint(len(views), (1,), generator=gen))
        g = Gaussians(**params)
        render = rasterize(g, c2w[v].to(device), K.to(device), size, size, backend=backend)
        loss = view_loss(render.rgb[0], targets[v].to(device), cfg.lambda_ssim)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = params["means"].grad
        if grad is not None and cfg.densify_from <= it <= cfg.densify_until:
            w2c = torch.linalg.inv(c2w[v]).to(device)
            z = (params["means"].detach() @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
            seen = grad.abs().sum(1) > 0
            grad_sum += (grad.norm(dim=1) * z.abs()).where(seen, torch.zeros_like(z)).double().cpu()
            grad_hits += seen.double().cpu()
        opt.step()
        result.losses.append(float(loss.detach()))
        if cfg.densify_from < it <= cfg.densify_until and it % cfg.densify_every == 0:
            params = _densify(params, grad_sum / grad_hits.clamp(min=1), cfg, extent, gen)
            opt = _optimizer(params, cfg, extent)
            grad_sum = torch.zeros(len(params["means"]), dtype=torch.float64)
            grad_hits = torch.zeros_like(grad_sum)
            result.counts.append((it, len(params["means"])))
    result.seconds = time.perf_counter() - start
    result.gaussians = Gaussians(**{k: p.detach() for k, p in params.items()})
    return result


def _densify(params: dict[str, torch.nn.Parameter], grads: torch.Tensor, cfg: OptConfig, extent: float,
             gen: torch.Generator) -> dict[str, torch.nn.Parameter]:
    """Clone small and split large Gaussians with a high mean gradient, then prune transparent or huge ones."""
    g = Gaussians(**{k: p.detach() for k, p in params.items()})
    big = g.scales.max(1).values > cfg.dense_fraction * extent
    hot = grads.to(g.means.device) >= cfg.grad_threshold
    room = max(cfg.max_gaussians - len(g), 0)
    clone = torch.nonzero(hot & ~big).flatten()[:room]
    split = torch.nonzero(hot & big).flatten()[:max(room - len(clone), 0) // 2]
    parts = [g.index(~(torch.zeros(len(g), dtype=torch.bool).index_fill_(0, split, True))), g.index(clone)]
    if len(split):
        s = g.index(split)
        for _ in range(2):
            offset = torch.randn(s.means.shape, generator=gen).to(s.means) * s.scales
            moved = s.means + (quat_to_rotmat(s.quats) @ offset[..., None])[..., 0]
            parts.append(replace(s, means=moved, log_scales=s.log_scales - math.log(1.6)))
    merged = {k: torch.cat([getattr(p, k) for p in parts]) for k in g.tensors()}
    out = Gaussians(**merged)
    keep = (out.opacities >= cfg.prune_opacity) & (out.scales.max(1).values <= 0.1 * extent)
    return _params(out.index(keep))


def render_views(gaussians: Gaussians, views: CropViews, backend: str = "auto") -> np.ndarray:
    """(V, S, S, 3) uint8: the Gaussians rendered at ``views`` (what is evaluated against ``views.rgb``)."""
    from inference.rasterize import rasterize

    size = views.rgb.shape[1]
    K = torch.tensor(views.K, dtype=torch.float32)
    with torch.no_grad():
        renders = [rasterize(gaussians, torch.tensor(c, dtype=torch.float32), K, size, size, backend=backend).rgb[0]
                   for c in views.c2w]
    return (torch.stack(renders).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


__all__ = ["OptConfig", "OptResult", "optimise", "render_views", "scene_extent", "view_loss"]
