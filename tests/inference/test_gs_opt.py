"""3DGS optimisation pieces: the loss and the densify / prune step (the optimisation itself is tested end to end
through ``matrix-pano reconstruct`` in test_reconstruct.py)."""

from __future__ import annotations

import pytest
import torch

from inference.gaussians import Gaussians
from inference.gs_opt import OptConfig, view_loss


def test_the_loss_is_l1_and_ssim_mixed():
    a, b = torch.rand(16, 16, 3), torch.rand(16, 16, 3)
    assert float(view_loss(a, a, 0.2)) == pytest.approx(0.0, abs=1e-6)
    assert float(view_loss(a, b, 0.0)) == pytest.approx(float((a - b).abs().mean()))


def test_a_shorter_run_keeps_the_densify_schedule_in_place_and_raises_the_learning_rates():
    full = OptConfig()
    short = full.with_iterations(300)
    assert (short.iterations, short.densify_from, short.densify_until, short.densify_every) == (300, 50, 150, 50)
    assert short.lr_colour == pytest.approx(full.lr_colour * 10 ** 0.5)
    assert short.lr_means_final / short.lr_means == pytest.approx(full.lr_means_final / full.lr_means)
    longer = full.with_iterations(6000)
    assert longer.densify_until == 3000 and longer.lr_opacity == full.lr_opacity


def test_densify_clones_small_splits_large_and_prunes_transparent_gaussians():
    from inference.gs_opt import _densify, _params

    n = 6
    g = Gaussians(means=torch.arange(n * 3, dtype=torch.float32).reshape(n, 3),
                  log_scales=torch.log(torch.tensor([0.001, 0.001, 0.5, 0.5, 0.001, 0.001]))[:, None].repeat(1, 3),
                  quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                  opacity_logits=torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0, -9.0]), sh0=torch.zeros(n, 3))
    grads = torch.tensor([1e-3, 0.0, 1e-3, 0.0, 0.0, 0.0])  # 0: small and hot, 2: large and hot, 5: transparent
    out = Gaussians(**_densify(_params(g), grads, OptConfig(), extent=10.0, gen=torch.Generator().manual_seed(0)))
    means = {tuple(m) for m in out.means.tolist()}
    assert len(out) == 7 and (0.0, 1.0, 2.0) in means and tuple(g.means[5].tolist()) not in means
    assert sum(tuple(m) == (0.0, 1.0, 2.0) for m in out.means.tolist()) == 2, "the small hot one is cloned"
    assert tuple(g.means[2].tolist()) not in means, "the large hot one is replaced by two samples"
    split = out.scales.max(1).values > 0.2
    assert int(split.sum()) == 3 and torch.allclose(out.scales[split].min(), torch.tensor(0.5 / 1.6))

