"""inference.rasterize: the PyTorch reference against closed forms (one Gaussian's footprint), a per-pixel
transcription of the compositing rules, finite differences, depth order, the guard band and a closed room's
panorama; the gsplat backend against the reference on a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dataset.core.conventions import equirect_directions, intrinsics, pose_from_heading
from inference.gaussians import Gaussians, covariances, rgb_to_sh0
from inference.rasterize import rasterize, render_panorama


def gaussians(means, sigmas, opacities, rgb, dtype=torch.float32, quats=None) -> Gaussians:
    """Gaussians from plain values: per-axis standard deviations (N, 3), opacities (N,), colours (N, 3)."""
    means = torch.as_tensor(means, dtype=dtype)
    n = len(means)
    return Gaussians(means=means,
                     log_scales=torch.as_tensor(sigmas, dtype=dtype).log().expand(n, 3).clone(),
                     quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype).repeat(n, 1) if quats is None
                     else torch.as_tensor(quats, dtype=dtype),
                     opacity_logits=torch.logit(torch.as_tensor(opacities, dtype=dtype).expand(n).clone()),
                     sh0=rgb_to_sh0(torch.as_tensor(rgb, dtype=dtype).expand(n, 3).clone()))


def random_scene(n: int, seed: int, dtype=torch.float64) -> Gaussians:
    """N random anisotropic Gaussians 2-6 m in front of an identity camera (opacities up to 0.97)."""
    gen = torch.Generator().manual_seed(seed)
    z = 2 + 4 * torch.rand(n, generator=gen, dtype=dtype)
    xy = (torch.rand(n, 2, generator=gen, dtype=dtype) * 2 - 1) * z[:, None] * 0.6
    return Gaussians(means=torch.cat([xy, z[:, None]], 1),
                     log_scales=math.log(0.15) + 0.5 * torch.randn(n, 3, generator=gen, dtype=dtype),
                     quats=torch.randn(n, 4, generator=gen, dtype=dtype),
                     opacity_logits=torch.logit(0.2 + 0.77 * torch.rand(n, generator=gen, dtype=dtype)),
                     sh0=rgb_to_sh0(0.1 + 0.8 * torch.rand(n, 3, generator=gen, dtype=dtype)))


def test_one_gaussian_peaks_at_its_opacity_and_falls_off_as_its_projected_covariance_says():
    # optical axis through the centre of pixel (16, 16); sigma 0.05 m at 2 m with f = 40 px: 1 px on screen
    k = np.array([[40.0, 0.0, 16.5], [0.0, 40.0, 16.5], [0.0, 0.0, 1.0]])
    g = gaussians([[0.0, 0.0, 2.0]], 0.05, 0.7, (0.2, 0.4, 0.6))
    r = rasterize(g, np.eye(4), k, 33, 33, backend="torch")
    alpha = r.alpha[0]
    assert abs(alpha[16, 16].item() - 0.7) < 1e-5
    var = 1.0 + 0.3  # projected variance plus the low-pass dilation, px^2
    for dv, du in ((0, 3), (-2, 0), (2, 2), (1, -3)):
        want = 0.7 * math.exp(-0.5 * (du * du + dv * dv) / var)
        assert abs(alpha[16 + dv, 16 + du].item() - want) < 1e-6, (du, dv)
    assert alpha[16, 21].item() == 0.0  # 5 px: 0.7 exp(-9.6) < 1/255, skipped
    torch.testing.assert_close(r.rgb[0, 16, 16], torch.tensor([0.2, 0.4, 0.6]) * 0.7)
    assert abs(r.depth[0, 16, 16].item() - 2.0) < 1e-6 and r.depth[0, 0, 0].item() == 0.0
    over = rasterize(g, np.eye(4), k, 33, 33, backend="torch", background=(0.0, 0.0, 1.0)).rgb[0]
    torch.testing.assert_close(over[16, 16], torch.tensor([0.14, 0.28, 0.42 + 0.3]))
    torch.testing.assert_close(over[0, 0], torch.tensor([0.0, 0.0, 1.0]))


def composite_by_hand(g: Gaussians, k: np.ndarray, width: int, height: int, near: float = 0.01):
    """A per-pixel, per-Gaussian transcription of the rules in the module docstring (identity camera)."""
    mu = g.means.detach().numpy()
    cov3 = covariances(g).detach().numpy()
    opac = g.opacities.detach().numpy()
    col = g.colours.detach().numpy()
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    splats = []
    for i in np.argsort(mu[:, 2], kind="stable"):
        x, y, z = mu[i]
        if z < near or not (-cx / fx - 0.15 * width / fx <= x / z <= (width - cx) / fx + 0.15 * width / fx) or not (
                -cy / fy - 0.15 * height / fy <= y / z <= (height - cy) / fy + 0.15 * height / fy):
            continue
        jac = np.array([[fx / z, 0, -fx * x / z**2], [0, fy / z, -fy * y / z**2]])
        cov2 = jac @ cov3[i] @ jac.T + 0.3 * np.eye(2)
        extent = min(3.33, math.sqrt(2 * math.log(255 * opac[i]))) if opac[i] >= 1 / 255 else 0.0
        rad = np.ceil(extent * np.sqrt(np.diag(cov2)))
        m = np.array([fx * x / z + cx, fy * y / z + cy])
        tiles_lo = np.clip(np.floor((m - rad) / 16), 0, None)
        tiles_hi = np.ceil((m + rad) / 16)
        if extent > 0 and (m + rad > 0).all() and m[0] - rad[0] < width and m[1] - rad[1] < height:
            splats.append((m, np.linalg.inv(cov2), opac[i], col[i], z, tiles_lo, tiles_hi))
    rgb, alpha, depth = np.zeros((height, width, 3)), np.zeros((height, width)), np.zeros((height, width))
    for v in range(height):
        for u in range(width):
            t, acc, dsum = 1.0, np.zeros(3), 0.0
            tile = np.array([u // 16, v // 16])
            for m, conic, o, c, z, lo, hi in splats:
                if not ((lo <= tile) & (tile < hi)).all():
                    continue
                d = m - (u + 0.5, v + 0.5)
                a = min(0.99, o * math.exp(-0.5 * d @ conic @ d))
                if a < 1 / 255:
                    continue
                if t * (1 - a) <= 1e-4:
                    break
                acc += a * t * c
                dsum += a * t * z
                t *= 1 - a
            rgb[v, u], alpha[v, u], depth[v, u] = acc, 1 - t, dsum / (1 - t) if t < 1 else 0.0
    return rgb, alpha, depth


def test_reference_matches_a_per_pixel_transcription_of_the_compositing_rules():
    # 60 Gaussians, and six stacked at high opacity (one above the 0.99 alpha clamp) down to the 1e-4 cut-off
    k = intrinsics(40, 24, 80.0)
    g = random_scene(60, seed=1)
    first = 2.0 * (np.array([16.5, 12.5]) - k[:2, 2]) / k[0, 0]  # in front of pixel (16, 12)'s centre at z = 2
    stack = gaussians([[first[0] + 0.1 * i, first[1] + 0.05 * i, 2.0 + 0.3 * i] for i in range(6)], 0.3,
                      [0.995, 0.95, 0.95, 0.95, 0.95, 0.95], (0.9, 0.5, 0.1), dtype=torch.float64)
    g = Gaussians(**{name: torch.cat([a, b]) for (name, a), b in zip(g.tensors().items(),
                                                                      stack.tensors().values(), strict=True)})
    r = rasterize(g, np.eye(4), k, 40, 24, backend="torch")
    rgb, alpha, depth = composite_by_hand(g, k, 40, 24)
    assert alpha.max() > 0.999 and (alpha == 0).any()  # the cut-off and empty pixels are both exercised
    np.testing.assert_allclose(r.rgb[0].numpy(), rgb, atol=1e-9)
    np.testing.assert_allclose(r.alpha[0].numpy(), alpha, atol=1e-9)
    np.testing.assert_allclose(r.depth[0].numpy(), depth, atol=1e-8)


def test_the_tile_size_never_changes_the_image(monkeypatch):
    import inference.rasterize as raster

    k = intrinsics(40, 24, 80.0)
    small = random_scene(60, seed=3)
    small = Gaussians(**{**small.tensors(), "log_scales": small.log_scales - 2.0})  # mostly sub-pixel footprints
    g = Gaussians(**{name: torch.cat([a, b]) for (name, a), b in zip(random_scene(30, seed=4).tensors().items(),
                                                                      small.tensors().values(), strict=True)})
    images = []
    for tiles in ((4,), (8,), (16,)):
        monkeypatch.setattr(raster, "REFERENCE_TILES", tiles)
        r = rasterize(g, np.eye(4), k, 40, 24, backend="torch")
        images.append(torch.cat([r.rgb, r.alpha[..., None], r.depth[..., None]], -1))
    assert float(images[0][..., 3].max()) > 0.5
    for other in images[1:]:
        torch.testing.assert_close(other, images[0], rtol=0, atol=1e-12)
    monkeypatch.setattr(raster, "REFERENCE_TILES", (4, 8, 16))
    assert raster._reference_tile(torch.tensor([[22.0, 14.0]]), torch.tensor([[1.0, 1.0]]), 40, 24) == 4
    assert raster._reference_tile(torch.tensor([[32.0, 32.0]]), torch.tensor([[40.0, 40.0]]), 64, 64) == 16


def test_gradients_match_finite_differences_for_every_parameter():
    g = gaussians([[0.05, -0.02, 2.0], [-0.1, 0.08, 2.6], [0.12, 0.1, 3.1]], [[0.5, 0.3, 0.4]] * 3,
                  [0.6, 0.75, 0.5], [[0.7, 0.3, 0.2], [0.2, 0.6, 0.4], [0.4, 0.3, 0.8]], dtype=torch.float64,
                  quats=[[0.9, 0.1, -0.2, 0.3], [0.7, -0.3, 0.4, 0.1], [1.0, 0.2, 0.1, -0.4]])
    k = intrinsics(8, 8, 40.0)
    names = ["means", "log_scales", "quats", "opacity_logits", "sh0"]

    def render(*params):
        r = rasterize(Gaussians(**dict(zip(names, params, strict=True))), np.eye(4), k, 8, 8, backend="torch",
                      background=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
        return r.rgb, r.alpha, r.depth

    params = [getattr(g, name).detach().requires_grad_(True) for name in names]
    assert (render(*params)[1] > 0.01).all()  # every pixel sees the Gaussians
    assert torch.autograd.gradcheck(render, params, eps=1e-6, atol=1e-5, fast_mode=True)


def test_the_nearer_gaussian_shows_whatever_order_they_are_given_in():
    k = intrinsics(16, 16, 60.0)
    for red_z, blue_z, want in ((2.0, 4.0, 0), (4.0, 2.0, 2)):
        g = gaussians([[0.0, 0.0, red_z], [0.0, 0.0, blue_z]], 0.4, 0.98, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        r = rasterize(g, np.eye(4), k, 16, 16, backend="torch")
        centre = r.rgb[0, 8, 8]
        assert centre[want] > 0.9 and centre[2 - want] < 0.05, (red_z, blue_z, centre)
        assert 2.0 < r.depth[0, 8, 8].item() < 2.1  # the expected z is dominated by the near one


def test_gaussians_behind_the_near_plane_or_outside_the_guard_band_contribute_nothing():
    k = intrinsics(24, 24, 60.0)
    visible = [[0.1, 0.0, 3.0]]
    culled = [[0.0, 0.0, 0.009],   # just behind the near plane (0.01), on the axis, huge on screen
              [1.0, 0.0, 0.05],    # x/z = 20, beside the camera
              [0.0, 0.5, -1.0],    # behind the camera
              [4.0, 0.0, 2.0]]     # x/z = 2 > 1.3 tan(30 deg)
    both = gaussians(visible + culled, [[0.3, 0.2, 0.25]], 0.9, (0.5, 0.5, 0.5),
                     quats=[[0.9, 0.1, -0.2, 0.3]] * 5)
    for t in both.tensors().values():
        t.requires_grad_(True)
    r = rasterize(both, np.eye(4), k, 24, 24, backend="torch")
    alone = rasterize(both.index(torch.tensor([0])), np.eye(4), k, 24, 24, backend="torch")
    for got, want in zip((r.rgb, r.alpha, r.depth), (alone.rgb, alone.alpha, alone.depth), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    (r.rgb.sum() + r.alpha.sum() + r.depth.sum()).backward()
    for name, t in both.tensors().items():
        assert torch.isfinite(t.grad).all(), name
        assert (t.grad[1:] == 0).all() and (t.grad[0] != 0).any(), name
    # the same Gaussian just in front of the near plane is kept, and covers the image
    front = gaussians([[0.0, 0.0, 0.011]], 0.3, 0.9, (0.5, 0.5, 0.5))
    assert rasterize(front, np.eye(4), k, 24, 24, backend="torch").alpha.min() > 0.85


def room_gaussians(size=(4.0, 4.0, 3.0), spacing=0.05) -> Gaussians:
    """Flat Gaussians on a grid on the six inner walls of the box [-x/2, x/2] x [-y/2, y/2] x [0, z]."""
    lo, hi = np.array([-size[0] / 2, -size[1] / 2, 0.0]), np.array([size[0] / 2, size[1] / 2, size[2]])
    means, sigmas = [], []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        gu = np.arange(lo[u] + spacing / 2, hi[u], spacing)
        gv = np.arange(lo[v] + spacing / 2, hi[v], spacing)
        uu, vv = (a.ravel() for a in np.meshgrid(gu, gv))
        for wall in (lo[axis], hi[axis]):
            p = np.zeros((len(uu), 3))
            p[:, axis], p[:, u], p[:, v] = wall, uu, vv
            s = np.full((len(uu), 3), 0.8 * spacing)
            s[:, axis] = 0.005
            means.append(p)
            sigmas.append(s)
    means, sigmas = np.concatenate(means), np.concatenate(sigmas)
    return gaussians(means, sigmas, 0.9, (0.6, 0.6, 0.6))


def test_panorama_of_a_closed_room_covers_every_pixel_with_the_walls_range():
    g = room_gaussians()
    for t in g.tensors().values():
        t.requires_grad_(True)
    c2w = pose_from_heading((0.4, -0.3, 1.4), 0.5, 0.1)
    r = render_panorama(g, c2w, 128, backend="torch", face_size=96)
    assert r.rgb.shape == (1, 64, 128, 3) and r.alpha.shape == r.depth.shape == (1, 64, 128)
    assert r.alpha.min() > 0.99
    # analytic range to the box [-2, 2] x [-2, 2] x [0, 3] along each pixel's ray
    d = equirect_directions(128).reshape(-1, 3) @ c2w[:3, :3].T
    wall = np.where(d > 0, [2.0, 2.0, 3.0], [-2.0, -2.0, 0.0])
    with np.errstate(divide="ignore"):
        want = ((wall - c2w[:3, 3]) / d).min(1).reshape(64, 128)
    err = np.abs(r.depth[0].detach().numpy() - want) / want
    # the expected depth leans towards the camera by about a footprint on oblique walls and at the room's edges
    assert np.mean(err < 0.03) > 0.85 and np.mean(err < 0.05) > 0.99 and np.median(err) < 0.01
    r.rgb.mean().backward()
    assert torch.isfinite(g.means.grad).all() and g.means.grad.abs().sum() > 0


def test_backend_choice_and_errors():
    g = random_scene(5, seed=2, dtype=torch.float32)
    k = intrinsics(16, 16)
    auto = rasterize(g, np.eye(4), k, 16, 16)  # CPU tensors: the reference
    torch.testing.assert_close(auto.rgb, rasterize(g, np.eye(4), k, 16, 16, backend="torch").rgb)
    with pytest.raises(RuntimeError, match="gsplat.*CUDA"):
        rasterize(g, np.eye(4), k, 16, 16, backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        rasterize(g, np.eye(4), k, 16, 16, backend="cuda")
    with pytest.raises(ValueError, match="c2w"):
        rasterize(g, np.eye(3), k, 16, 16)
    # several cameras in one call equal one call each
    poses = np.stack([np.eye(4)] * 2)
    poses[1, :3, 3] = (0.4, -0.2, 0.5)
    both = rasterize(g, poses, k, 16, 16)
    assert (both.alpha > 0.1).any(dim=(1, 2)).all() and not torch.equal(both.rgb[0], both.rgb[1])
    for i in range(2):
        torch.testing.assert_close(both.rgb[i], rasterize(g, poses[i], k, 16, 16).rgb[0])


@pytest.mark.gpu
def test_gsplat_matches_the_reference_on_a_random_scene():
    pytest.importorskip("gsplat")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = random_scene(3000, seed=3, dtype=torch.float32)
    # opacities under 0.9: gsplat clamps alpha at 0.999, the reference at 0.99
    g.opacity_logits = torch.logit(g.opacities.clamp(max=0.9))
    g = g.to("cuda")
    for t in g.tensors().values():
        t.requires_grad_(True)
    poses = np.stack([np.eye(4), pose_from_heading((0.0, 0.0, 0.0), 0.3, 0.2)])
    k = intrinsics(96, 64, 70.0)
    params = list(g.tensors().values())
    renders, grads = {}, {}
    for backend in ("torch", "gsplat"):
        r = renders[backend] = rasterize(g, poses, k, 96, 64, backend=backend)
        grads[backend] = torch.autograd.grad(r.rgb.sum() + 0.1 * r.depth.sum(), params)
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(renders["torch"], name) - getattr(renders["gsplat"], name)).abs()
        assert diff.mean() < 1e-4 and diff.max() < 2e-2, (name, diff.mean().item(), diff.max().item())
    for name, a, b in zip(g.tensors(), grads["torch"], grads["gsplat"], strict=True):
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.99, (name, cos.item())
