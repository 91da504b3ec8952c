"""Flow matching as Matrix-3D trains and samples Wan2.1 (DiffSynth's scheduler, ``shift`` 5, down to sigma 0).

A latent at noise level sigma in [0, 1] is ``x_sigma = (1 - sigma) x0 + sigma noise``; the model predicts the
velocity ``noise - x0`` and gets ``timestep = 1000 sigma``. Sampling walks shifted sigmas from 1 towards 0
with Euler steps; training draws one of 1000 shifted grid points uniformly and weights the loss by a
Gaussian bump around the middle of the grid (``training_weights``), as DiffSynth's Wan trainer does.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000
"""Timestep scale of the model: ``timestep = NUM_TRAIN_TIMESTEPS * sigma``."""
SHIFT = 5.0
"""Matrix-3D's (and Wan I2V's) sigma shift."""


def shift_sigmas(sigmas: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """``shift * s / (1 + (shift - 1) * s)``: more steps at high noise for ``shift`` > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sampling_sigmas(steps: int, shift: float = SHIFT) -> torch.Tensor:
    """The ``steps`` descending noise levels of sampling, float64: ``linspace(1, 0, steps + 1)[:-1]`` shifted
    (the last Euler step goes from the smallest of them to 0)."""
    if steps < 1:
        raise ValueError(f"sampling needs at least 1 step, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1], shift)


def training_sigmas(shift: float = SHIFT) -> torch.Tensor:
    """The grid training draws noise levels from: ``sampling_sigmas(NUM_TRAIN_TIMESTEPS, shift)``."""
    return sampling_sigmas(NUM_TRAIN_TIMESTEPS, shift)


def training_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """Loss weight of each grid point: ``exp(-2 ((t - 500) / 1000)^2)`` over timesteps ``t``, minus its minimum,
    scaled to mean 1 over the grid (DiffSynth's ``bsmntw`` weighting)."""
    t = sigmas * NUM_TRAIN_TIMESTEPS
    bump = torch.exp(-2 * ((t - NUM_TRAIN_TIMESTEPS / 2) / NUM_TRAIN_TIMESTEPS) ** 2)
    bump = bump - bump.min()
    return bump * (len(sigmas) / bump.sum())


def draw_training_points(batch: int, generator: torch.Generator | None = None, shift: float = SHIFT
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas, loss weights) of ``batch`` grid points drawn uniformly, float32."""
    sigmas = training_sigmas(shift)
    index = torch.randint(0, len(sigmas), (batch,), generator=generator)
    return sigmas[index].float(), training_weights(sigmas)[index].float()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``(1 - sigma) x0 + sigma noise``, with one sigma per batch item (broadcast over the other dims)."""
    s = sigma.reshape(-1, *([1] * (x0.dim() - 1))).to(x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict: ``noise - x0``."""
    return noise - x0


def euler_step(sample: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One sampling step from ``sigma`` to ``sigma_next`` along the predicted velocity."""
    return sample + velocity * (sigma_next - sigma)
