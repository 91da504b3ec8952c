"""Flow matching schedule: Matrix-3D's shifted sigmas, an oracle velocity integrates exactly back to the data,
and the training grid's draws and weights."""

from __future__ import annotations

import pytest
import torch

from inference.flow import (
    add_noise,
    draw_training_points,
    euler_step,
    sampling_sigmas,
    shift_sigmas,
    training_sigmas,
    training_weights,
    velocity_target,
)


def test_sampling_sigmas_are_the_shifted_linspace_from_1_towards_0():
    s = sampling_sigmas(50)
    plain = torch.linspace(1, 0, 51, dtype=torch.float64)[:-1]
    assert len(s) == 50 and s[0] == 1 and (s > 0).all() and (s[1:] < s[:-1]).all()
    assert torch.allclose(s, 5 * plain / (1 + 4 * plain))
    assert s[25] > plain[25], "shift 5 spends more steps at high noise"
    assert torch.equal(shift_sigmas(plain, 1.0), plain)
    with pytest.raises(ValueError, match="at least 1 step"):
        sampling_sigmas(0)


def test_euler_with_the_true_velocity_lands_on_the_data():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 3, 4, 8, generator=g), torch.randn(2, 16, 3, 4, 8, generator=g)
    sigmas = sampling_sigmas(7).tolist() + [0.0]
    x = noise.clone()
    for sigma, nxt in zip(sigmas[:-1], sigmas[1:], strict=True):
        assert torch.allclose(x, add_noise(x0, noise, torch.tensor([sigma, sigma])), atol=1e-5)
        x = euler_step(x, velocity_target(x0, noise), sigma, nxt)
    assert torch.allclose(x, x0, atol=1e-5)


def test_add_noise_takes_one_level_per_item():
    x0, noise = torch.zeros(2, 3), torch.ones(2, 3)
    assert torch.equal(add_noise(x0, noise, torch.tensor([0.0, 1.0])), torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_training_grid_weights_peak_mid_grid_and_average_1():
    sigmas = training_sigmas()
    w = training_weights(sigmas)
    assert len(sigmas) == 1000 and w.min() == 0 and torch.isclose(w.mean(), torch.tensor(1.0, dtype=w.dtype))
    peak = sigmas[w.argmax()] * 1000
    assert abs(peak - 500) < 2
    a = draw_training_points(4096, torch.Generator().manual_seed(1))
    b = draw_training_points(4096, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "same generator seed, same draws"
    assert len(torch.unique(a[0])) > 900, "every grid point is drawn"
    assert torch.isin(a[0].double(), sigmas.float().double()).all()
