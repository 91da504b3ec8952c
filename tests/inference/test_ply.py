"""inference.ply: 3DGS .ply files that round-trip exactly, open in plyfile with INRIA's field names, order and
stored values, Matrix-3D's filter_3D folded in as Mip-Splatting renders it, clear errors for other .ply files,
atomic writes."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from numpy.lib.recfunctions import repack_fields
from plyfile import PlyData, PlyElement

from inference.gaussians import Gaussians, covariances
from inference.ply import load_matrix3d_ply, load_ply, save_ply


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    """N Gaussians with every parameter distinct: unnormalised quaternions, logits of both signs, anisotropic
    scales, SH of ``degree``."""
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(means=torch.randn(n, 3, generator=g) * 3, log_scales=torch.randn(n, 3, generator=g) - 3,
                     quats=torch.randn(n, 4, generator=g), opacity_logits=torch.randn(n, generator=g) * 4,
                     sh0=torch.randn(n, 3, generator=g), sh_rest=torch.randn(n, k, 3, generator=g) if k else None)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_keeps_every_attribute_exactly(tmp_path, degree):
    gaussians = random_gaussians(200, degree)
    gaussians.means.requires_grad_(True)  # saving in the middle of an optimisation
    save_ply(tmp_path / "scene.ply", gaussians)
    back = load_ply(tmp_path / "scene.ply")
    assert back.sh_degree == degree and len(back) == 200
    for name, tensor in gaussians.tensors().items():
        loaded = getattr(back, name)
        assert loaded.dtype == torch.float32 and torch.equal(loaded, tensor.detach()), name
    if degree == 0:
        assert back.sh_rest is None


def test_file_has_the_standard_fields_in_order_with_the_stored_values(tmp_path):
    gaussians = random_gaussians(50, degree=1)  # K = 3 higher-order coefficients per channel
    save_ply(tmp_path / "scene.ply", gaussians)
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 50\nproperty float x\n"
    assert (tmp_path / "scene.ply").read_bytes().startswith(header)
    ply = PlyData.read(tmp_path / "scene.ply")
    assert [e.name for e in ply.elements] == ["vertex"] and not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "f_rest_0", "f_rest_1", "f_rest_2",
        "f_rest_3", "f_rest_4", "f_rest_5", "f_rest_6", "f_rest_7", "f_rest_8", "opacity", "scale_0", "scale_1",
        "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert all(p.val_dtype == "f4" for p in vertex.properties)

    def column(name: str) -> np.ndarray:
        return np.asarray(vertex[name])

    for i, axis in enumerate("xyz"):  # world coordinates as they are: no axis change
        np.testing.assert_array_equal(column(axis), gaussians.means[:, i].numpy())
        np.testing.assert_array_equal(column(f"n{axis}"), 0.0)
        np.testing.assert_array_equal(column(f"scale_{i}"), gaussians.log_scales[:, i].numpy())  # logs, not scales
        np.testing.assert_array_equal(column(f"f_dc_{i}"), gaussians.sh0[:, i].numpy())
    np.testing.assert_array_equal(column("opacity"), gaussians.opacity_logits.numpy())  # the logit
    for i in range(4):  # w x y z as stored (not normalised)
        np.testing.assert_array_equal(column(f"rot_{i}"), gaussians.quats[:, i].numpy())
    for channel in range(3):  # channel-major: f_rest_{c K + k}, all of R, then G, then B
        for k in range(3):
            np.testing.assert_array_equal(column(f"f_rest_{3 * channel + k}"), gaussians.sh_rest[:, k, channel].numpy())


def write_mip_splatting_ply(path, gaussians: Gaussians, filter_3d: np.ndarray) -> None:
    """A .ply as Mip-Splatting's / Matrix-3D's GaussianModel.save_ply writes it: the INRIA fields, then filter_3D."""
    n, k = len(gaussians), 0 if gaussians.sh_rest is None else gaussians.sh_rest.shape[1]
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * k)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "filter_3D"])
    rest = [] if k == 0 else [gaussians.sh_rest.numpy().transpose(0, 2, 1).reshape(n, -1)]
    table = np.concatenate([gaussians.means.numpy(), np.zeros((n, 3)), gaussians.sh0.numpy(), *rest,
                            gaussians.opacity_logits.numpy()[:, None], gaussians.log_scales.numpy(),
                            gaussians.quats.numpy(), filter_3d[:, None]], axis=1)
    elements = np.empty(n, dtype=[(name, "f4") for name in names])
    elements[:] = list(map(tuple, table))
    PlyData([PlyElement.describe(elements, "vertex")]).write(str(path))


def test_matrix3d_file_imports_with_the_3d_filter_folded_into_scales_and_opacities(tmp_path):
    plain = random_gaussians(300, degree=1, seed=1)
    plain.opacity_logits[:3] = torch.tensor([12.0, 30.0, -12.0])  # near-opaque and near-transparent ones
    filter_3d = np.random.default_rng(1).uniform(0.0, 0.2, 300).astype(np.float32)
    filter_3d[3:6] = 0.0  # far from every camera: no filter
    write_mip_splatting_ply(tmp_path / "point_cloud.ply", plain, filter_3d)

    folded = load_matrix3d_ply(tmp_path / "point_cloud.ply")
    # Independently, as get_scaling_with_3D_filter / get_opacity_with_3D_filter compute it (float64 numpy).
    s, f = np.exp(plain.log_scales.numpy().astype(np.float64)), filter_3d.astype(np.float64)[:, None]
    want_scales = np.sqrt(s ** 2 + f ** 2)
    opacity = 1 / (1 + np.exp(-plain.opacity_logits.numpy().astype(np.float64)))
    want_opacities = opacity * np.sqrt(np.prod(s ** 2, axis=1) / np.prod(s ** 2 + f ** 2, axis=1))
    np.testing.assert_allclose(folded.scales.numpy(), want_scales, rtol=2e-6)
    np.testing.assert_allclose(folded.opacities.numpy(), want_opacities, rtol=2e-6, atol=1e-9)
    assert (want_opacities < opacity - 1e-3).mean() > 0.5  # the fold matters for most of them
    for name in ("means", "quats", "sh0", "sh_rest"):
        assert torch.equal(getattr(folded, name), getattr(plain, name)), name
    assert torch.equal(folded.log_scales[3:6], plain.log_scales[3:6])  # no filter: the stored values as they are
    assert torch.equal(folded.opacity_logits[3:6], plain.opacity_logits[3:6])
    # What renders: each covariance grows by the isotropic filter, Sigma + f^2 I.
    want_cov = covariances(plain.to(torch.float64)) + torch.from_numpy(f[:, :, None] ** 2) * torch.eye(3).double()
    torch.testing.assert_close(covariances(folded.to(torch.float64)), want_cov, rtol=1e-5, atol=1e-8)

    # load_ply folds by default (opening Matrix-3D's file must not give wrong splats); a standard file is refused
    # by load_matrix3d_ply.
    loaded = load_ply(tmp_path / "point_cloud.ply")
    assert all(torch.equal(loaded.tensors()[name], t) for name, t in folded.tensors().items())
    save_ply(tmp_path / "fused.ply", folded)
    with pytest.raises(ValueError, match="no filter_3D field.*load_ply"):
        load_matrix3d_ply(tmp_path / "fused.ply")


def mesh_ply(path) -> None:
    """A coloured triangle as mesh exporters write it: vertex x y z red green blue plus a face element."""
    vertices = np.array([(0, 0, 0, 255, 0, 0), (1, 0, 0, 0, 255, 0), (0, 1, 0, 0, 0, 255)],
                        dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(vertices, "vertex"), PlyElement.describe(faces, "face")]).write(str(path))


def without(path, drop: set[str], out) -> None:
    """A copy of the Gaussian .ply at ``path`` without the vertex fields ``drop``."""
    data = PlyData.read(str(path))["vertex"].data
    keep = [name for name in data.dtype.names if name not in drop]
    PlyData([PlyElement.describe(repack_fields(data[keep]), "vertex")]).write(str(out))


def test_a_file_that_is_not_gaussians_raises_a_clear_value_error(tmp_path):
    mesh_ply(tmp_path / "mesh.ply")
    with pytest.raises(ValueError, match=r"lacks the Gaussian field\(s\) f_dc_0, f_dc_1, f_dc_2, opacity, scale_0"):
        load_ply(tmp_path / "mesh.ply")

    points = np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(points, "point")]).write(str(tmp_path / "points.ply"))
    with pytest.raises(ValueError, match="no 'vertex' element \\(elements: point\\)"):
        load_ply(tmp_path / "points.ply")

    save_ply(tmp_path / "scene.ply", random_gaussians(10, degree=1))
    without(tmp_path / "scene.ply", {"scale_2", "rot_3"}, tmp_path / "no_scale.ply")
    with pytest.raises(ValueError, match=r"lacks the Gaussian field\(s\) scale_2, rot_3;"):
        load_ply(tmp_path / "no_scale.ply")
    without(tmp_path / "scene.ply", {"f_rest_8"}, tmp_path / "short_sh.ply")
    with pytest.raises(ValueError, match="has 8 f_rest fields"):
        load_ply(tmp_path / "short_sh.ply")

    (tmp_path / "cut.ply").write_bytes((tmp_path / "scene.ply").read_bytes()[:-20])
    (tmp_path / "text.ply").write_text("not a ply file\n")
    for name in ("cut.ply", "text.ply"):
        with pytest.raises(ValueError, match="is not a readable PLY file"):
            load_ply(tmp_path / name)
    assert len(load_ply(tmp_path / "scene.ply")) == 10  # the intact file still loads


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path, monkeypatch):
    first, second = random_gaussians(40, degree=0, seed=2), random_gaussians(60, degree=3, seed=3)
    save_ply(tmp_path / "scene.ply", first)
    save_ply(tmp_path / "scene.ply", second)  # replaces the file
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"]
    assert torch.equal(load_ply(tmp_path / "scene.ply").sh_rest, second.sh_rest)

    def disk_full(self, stream):
        stream.write(b"ply\nformat binary_little_endian 1.0\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PlyData, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_ply(tmp_path / "scene.ply", first)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"]  # no half-written temporary file
    assert torch.equal(load_ply(tmp_path / "scene.ply").means, second.means)  # the previous file is intact
