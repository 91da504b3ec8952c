"""3D Gaussians as ``.ply`` files in the INRIA 3DGS layout, the one every splat viewer reads.

One ``vertex`` element, one row per Gaussian, float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3K-1} opacity scale_0 scale_1 scale_2 rot_0 .. rot_3

written binary little-endian. The values are the stored parameters of ``Gaussians``, not the activated ones:
``opacity`` is the logit, ``scale_i`` the natural log of the standard deviation, ``rot_*`` the quaternion (w, x, y,
z) as it is (not normalised), ``f_dc_*`` the degree-0 SH coefficients. ``nx ny nz`` are written as zeros (INRIA
writes them; nothing reads them). ``f_rest`` is channel-major: the K higher-order coefficients of R, then those
of G, then those of B, i.e. ``f_rest_{c*K + k} = sh_rest[:, k, c]``.

Coordinates are written and read as they are: metric world, Z up (DESIGN.md), with no axis change. A viewer that
assumes Y up shows such a scene lying on its side; rotate it in the viewer.

Matrix-3D's optimisation pipeline (``code/Pano_GS_Opt``, GOF / Mip-Splatting code) writes one more field,
``filter_3D``: Mip-Splatting's 3D smoothing filter, which its renderer folds into every Gaussian's scales and
opacity. Standard viewers do not know it and render those files too sharp and too opaque. ``load_ply`` and
``load_matrix3d_ply`` fold it in, so that the loaded Gaussians render as Matrix-3D renders them.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError

from inference.gaussians import Gaussians, sh_degree_of

ELEMENT = "vertex"
"""The PLY element that holds the Gaussians."""

FILTER_3D = "filter_3D"
"""The extra per-Gaussian field of Mip-Splatting / Matrix-3D files: the standard deviation of the 3D filter."""

_F_REST = re.compile(r"^f_rest_(\d+)$")


def property_names(sh_rest_coefficients: int = 0) -> list[str]:
    """The vertex properties of a Gaussian .ply with K = ``sh_rest_coefficients`` higher-order SH coefficients per
    channel, in the order INRIA writes them."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * sh_rest_coefficients)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def save_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write ``gaussians`` to ``path`` as a standard 3DGS .ply (see the module docstring), atomically.

    Values are written as float32 (exact for float32 Gaussians). Coordinates are written as they are (metric
    world, Z up; no axis change). The file appears complete or not at all: it is written to a temporary file in
    the same folder, fsynced and renamed over ``path``; the temporary file is removed if anything fails.
    """
    path = Path(path)
    g = gaussians.to("cpu", torch.float32)
    n = len(g)
    k = 0 if g.sh_rest is None else g.sh_rest.shape[1]
    # Channel-major f_rest, as INRIA's GaussianModel.save_ply writes it: ``_features_rest`` is (N, K, 3) and is
    # written as ``.transpose(1, 2).flatten(start_dim=1)`` (graphdeco-inria/gaussian-splatting
    # scene/gaussian_model.py at 1152adc); gsplat's exporter does the same (``shN.transpose(0, 2, 1)``,
    # nerfstudio-project/gsplat gsplat/exporter.py at 0d11b7a), and so does Matrix-3D's Pano_GS_Opt.
    f_rest = [] if g.sh_rest is None else [g.sh_rest.transpose(1, 2).reshape(n, 3 * k)]
    columns = [g.means, torch.zeros(n, 3), g.sh0, *f_rest, g.opacity_logits[:, None], g.log_scales, g.quats]
    table = torch.cat(columns, dim=1).detach().numpy()
    vertices = np.empty(n, dtype=[(name, "<f4") for name in property_names(k)])
    for i, name in enumerate(property_names(k)):
        vertices[name] = table[:, i]
    ply = PlyData([PlyElement.describe(vertices, ELEMENT)], text=False, byte_order="<")

    # Streamed to the temporary file (dataset.store.shards.write_atomic takes the whole file as bytes, a second
    # copy of a possibly GB-sized scene in memory, and leaves its temporary file behind on failure).
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # open(), not mkstemp: its mode 0600 would stick
    try:
        with open(tmp, "xb") as f:
            ply.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS .ply (INRIA layout, any property order, float or double, either byte order) into float32
    ``Gaussians`` on the CPU, with no axis change (the file is taken to be metric world, Z up).

    A file with a ``filter_3D`` field (Mip-Splatting, Matrix-3D) has that filter folded into its scales and
    opacities, exactly as ``load_matrix3d_ply`` does: loading such a file without it would give Gaussians that
    render sharper and more opaque than they were trained to. ``nx ny nz`` are not needed (gsplat omits them).
    Raises ValueError, naming what is missing, for a file that is not a Gaussian .ply (no ``vertex`` element,
    missing fields, an f_rest count that is no SH degree, or not a PLY file at all).
    """
    return _gaussians_from(_read_vertex(path), path)


def load_matrix3d_ply(path: str | os.PathLike) -> Gaussians:
    """Read the .ply that Matrix-3D's optimisation pipeline writes (``generated_3dgs_opt.ply``, Pano_GS_Opt's
    ``point_cloud.ply``) with its ``filter_3D`` folded into scales and opacities (``fold_filter_3d``), so that
    the plain Gaussians render as Matrix-3D renders them.

    Matrix-3D median-centres the scene before writing it (FACTS.md "Models"); that offset is not undone here,
    so the Gaussians are in Matrix-3D's centred frame, not in the frame of the camera path that produced them.
    Raises ValueError if the file has no ``filter_3D`` field (a standard or already fused 3DGS file: read it
    with ``load_ply``) or is not a Gaussian .ply.
    """
    vertex = _read_vertex(path)
    if FILTER_3D not in vertex:
        raise ValueError(f"{path}: the vertex element has no {FILTER_3D} field, so it is not a Matrix-3D / "
                         "Mip-Splatting training .ply (a standard or fused 3DGS file? read it with load_ply)")
    return _gaussians_from(vertex, path)


def fold_filter_3d(gaussians: Gaussians, filter_3d: torch.Tensor) -> Gaussians:
    """The Gaussians that render as ``gaussians`` under Mip-Splatting's 3D filter of standard deviation
    ``filter_3d`` (N,), with the filter folded in: scale' = sqrt(scale^2 + filter^2) on every axis and
    opacity' = opacity * sqrt(det(S^2) / det(S^2 + filter^2 I)).

    That is what GaussianModel.get_scaling_with_3D_filter and get_opacity_with_3D_filter compute, the values the
    renderer uses (SkyworkAI/Matrix-3D code/Pano_GS_Opt/scene/gaussian_model.py and gaussian_renderer/__init__.py
    at 980959f; identical in autonomousvision/mip-splatting scene/gaussian_model.py at 24af724); their
    ``save_fused_ply`` writes the same fold as log(scale') and inverse_sigmoid(opacity'). The covariance becomes
    R (S^2 + filter^2 I) R^T = Sigma + filter^2 I: the Gaussian convolved with an isotropic one.
    """
    log_scales = gaussians.log_scales.double()
    logits = gaussians.opacity_logits.double()
    ratio = filter_3d.double()[:, None] * torch.exp(-log_scales)
    folded_log_scales = log_scales + 0.5 * torch.log1p(ratio * ratio)  # log sqrt(s^2 + f^2), exact when f = 0
    log_coef = (log_scales - folded_log_scales).sum(dim=1)  # log sqrt(det S^2 / det(S^2 + f^2 I)) <= 0
    # logit(sigmoid(l) * c) = log c - log(1 - c + exp(-l)): no 1 - o cancellation for opaque Gaussians, and the
    # logit is kept as it is where the filter is zero (c = 1).
    folded_logits = log_coef - torch.log(-torch.expm1(log_coef) + torch.exp(-logits))
    dtype = gaussians.log_scales.dtype
    return Gaussians(means=gaussians.means, log_scales=folded_log_scales.to(dtype), quats=gaussians.quats,
                     opacity_logits=folded_logits.to(dtype), sh0=gaussians.sh0, sh_rest=gaussians.sh_rest)


def _read_vertex(path: str | os.PathLike) -> PlyElement:
    """The ``vertex`` element of the PLY file at ``path`` (ValueError if it is no PLY file or has none)."""
    try:
        ply = PlyData.read(os.fspath(path))
    except PlyParseError as e:
        raise ValueError(f"{path} is not a readable PLY file: {e}") from e
    if ELEMENT not in ply:
        names = ", ".join(element.name for element in ply.elements) or "none"
        raise ValueError(f"{path} has no '{ELEMENT}' element (elements: {names}): it is not a Gaussian .ply")
    return ply[ELEMENT]


def _gaussians_from(vertex: PlyElement, path: str | os.PathLike) -> Gaussians:
    """The Gaussians stored in a PLY ``vertex`` element, with its ``filter_3D`` folded in if it has one
    (ValueError naming the fields that are missing)."""
    present = {prop.name for prop in vertex.properties}
    rest = sorted(int(m.group(1)) for name in present if (m := _F_REST.match(name)))
    k = len(rest) // 3
    if len(rest) % 3 or sh_degree_of(k) < 0 or rest != list(range(len(rest))):
        raise ValueError(f"{path}: the vertex element has {len(rest)} f_rest fields "
                         f"({', '.join(f'f_rest_{i}' for i in rest[:6])}{' ...' if len(rest) > 6 else ''}); a 3DGS "
                         "file has f_rest_0 .. f_rest_{3K-1} with K = (degree + 1)^2 - 1 (0, 9, 24, 45 or 72 fields)")
    required = [name for name in property_names(k) if name not in ("nx", "ny", "nz")]
    missing = [name for name in required if name not in present]
    if missing:
        raise ValueError(f"{path}: the vertex element lacks the Gaussian field(s) {', '.join(missing)}; it has "
                         f"{', '.join(prop.name for prop in vertex.properties)} (a mesh or point cloud, not 3D "
                         "Gaussians?)")

    def columns(*names: str) -> torch.Tensor:  # copied out of plyfile's memory map of the file
        return torch.from_numpy(np.stack([np.array(vertex[name], dtype=np.float32) for name in names], axis=1))

    n = vertex.count
    sh_rest = None
    if k:
        # Channel-major on disk (see save_ply): (N, 3, K) -> (N, K, 3).
        sh_rest = columns(*(f"f_rest_{i}" for i in range(3 * k))).reshape(n, 3, k).transpose(1, 2).contiguous()
    gaussians = Gaussians(means=columns("x", "y", "z"), log_scales=columns("scale_0", "scale_1", "scale_2"),
                          quats=columns("rot_0", "rot_1", "rot_2", "rot_3"), opacity_logits=columns("opacity")[:, 0],
                          sh0=columns("f_dc_0", "f_dc_1", "f_dc_2"), sh_rest=sh_rest)
    return fold_filter_3d(gaussians, columns(FILTER_3D)[:, 0]) if FILTER_3D in vertex else gaussians
