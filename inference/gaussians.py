"""3D Gaussians of a reconstructed scene, in metric world coordinates (DESIGN.md: Z up, metres).

A ``Gaussians`` holds the optimisable parameters the way 3DGS stores them: means, log-scales, quaternions
(w, x, y, z; normalised when used), opacity logits, and colour as spherical-harmonics coefficients (degree 0 in
``sh0``, higher degrees in ``sh_rest``). The activated values (``scales``, ``rotations``, ``opacities``,
``colours``) are what rasterizers consume. ``SH_C0`` is the degree-0 basis constant: colour = 0.5 + SH_C0 sh0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

SH_C0 = 0.28209479177387814
"""The degree-0 real spherical harmonic, 1 / (2 sqrt(pi)): RGB = 0.5 + SH_C0 * sh0 (the 3DGS convention)."""


@dataclass
class Gaussians:
    """N anisotropic 3D Gaussians (tensors on one device; float32 unless made otherwise)."""

    means: torch.Tensor
    """(N, 3) centres in world coordinates, metres."""
    log_scales: torch.Tensor
    """(N, 3) natural logs of the standard deviations along the Gaussian's own axes, metres."""
    quats: torch.Tensor
    """(N, 4) rotations as quaternions (w, x, y, z), not necessarily normalised (``rotations`` normalises)."""
    opacity_logits: torch.Tensor
    """(N,) logits of the peak opacities (``opacities`` = sigmoid)."""
    sh0: torch.Tensor
    """(N, 3) degree-0 SH coefficients of RGB (``colours`` = 0.5 + SH_C0 * sh0)."""
    sh_rest: torch.Tensor | None = None
    """(N, K, 3) higher-degree SH coefficients, K = (degree + 1)^2 - 1, or None (degree 0)."""

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        want = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "opacity_logits": (n,), "sh0": (n, 3)}
        for name, shape in want.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Gaussians.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        if self.sh_rest is not None and (self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n
                                         or self.sh_rest.shape[2] != 3 or sh_degree_of(self.sh_rest.shape[1]) < 1):
            raise ValueError(f"Gaussians.sh_rest has shape {tuple(self.sh_rest.shape)}, expected ({n}, K, 3) with "
                             "K = (degree + 1)^2 - 1")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """The SH degree of the colours (0 without ``sh_rest``)."""
        return 0 if self.sh_rest is None else sh_degree_of(self.sh_rest.shape[1])

    @property
    def scales(self) -> torch.Tensor:
        """(N, 3) standard deviations, metres."""
        return self.log_scales.exp()

    @property
    def rotations(self) -> torch.Tensor:
        """(N, 4) unit quaternions (w, x, y, z)."""
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def opacities(self) -> torch.Tensor:
        """(N,) peak opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def colours(self) -> torch.Tensor:
        """(N, 3) view-independent RGB in [0, 1] (degree 0 only), clamped."""
        return (0.5 + SH_C0 * self.sh0).clamp(0.0, 1.0)

    def to(self, *args, **kwargs) -> Gaussians:
        """A copy with every tensor moved / cast as ``torch.Tensor.to`` does."""
        return replace(self, **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(
            *args, **kwargs) for f in fields(self)})

    def index(self, keep: torch.Tensor) -> Gaussians:
        """The Gaussians selected by a boolean mask or an index tensor (pruning, subsets)."""
        return replace(self, **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[keep]
                                for f in fields(self)})

    def tensors(self) -> dict[str, torch.Tensor]:
        """The parameter tensors by field name (``sh_rest`` only when present), e.g. for an optimiser."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def sh_degree_of(coefficients: int) -> int:
    """The SH degree whose higher-order coefficient count (degree + 1)^2 - 1 is ``coefficients``; -1 if none."""
    for degree in range(0, 5):
        if (degree + 1) ** 2 - 1 == coefficients:
            return degree
    return -1


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Degree-0 SH coefficients of RGB colours in [0, 1] (the inverse of ``Gaussians.colours`` inside [0, 1])."""
    return (rgb - 0.5) / SH_C0


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation matrices of quaternions (N, 4) (w, x, y, z), normalised first."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton products a b of quaternions (..., 4) (w, x, y, z): the rotation b, then a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def rotmat_to_quat(r: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (..., 4) (w, x, y, z, w >= 0) of rotation matrices (..., 3, 3), from the largest of the
    four candidate denominators (stable for every rotation)."""
    m = r.reshape(-1, 3, 3)
    t = torch.stack([1 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = t.argmax(-1)
    s = 2 * t.gather(1, best[:, None]).clamp_min(1e-12).sqrt()[:, 0]
    d = {"yz": m[:, 2, 1] - m[:, 1, 2], "zx": m[:, 0, 2] - m[:, 2, 0], "xy": m[:, 1, 0] - m[:, 0, 1],
         "xy+": m[:, 0, 1] + m[:, 1, 0], "zx+": m[:, 0, 2] + m[:, 2, 0], "yz+": m[:, 1, 2] + m[:, 2, 1]}
    candidates = torch.stack([
        torch.stack([s / 4, d["yz"] / s, d["zx"] / s, d["xy"] / s], -1),
        torch.stack([d["yz"] / s, s / 4, d["xy+"] / s, d["zx+"] / s], -1),
        torch.stack([d["zx"] / s, d["xy+"] / s, s / 4, d["yz+"] / s], -1),
        torch.stack([d["xy"] / s, d["zx+"] / s, d["yz+"] / s, s / 4], -1)], 1)
    q = candidates[torch.arange(len(m)), best]
    q = torch.where(q[:, :1] < 0, -q, q)
    return torch.nn.functional.normalize(q, dim=-1).reshape(*r.shape[:-2], 4)


def covariances(gaussians: Gaussians) -> torch.Tensor:
    """(N, 3, 3) world-space covariances R S S^T R^T."""
    rs = quat_to_rotmat(gaussians.quats) * gaussians.scales[:, None, :]
    return rs @ rs.transpose(1, 2)
