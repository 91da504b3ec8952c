"""Gaussian splatting: render ``Gaussians`` into pinhole images and equirect panoramas, through one function
with two backends that follow the same conventions.

Backends: ``"gsplat"`` (``gsplat.rasterization``, CUDA only, for training and large scenes) and ``"torch"`` (a
pure-PyTorch reference: CPU and tests, differentiable w.r.t. every Gaussian parameter). ``"auto"`` takes gsplat
when the Gaussians are on a CUDA device and gsplat imports, else the reference.

What both backends do (the reference copies gsplat 1.5's CUDA kernels, INRIA's 3DGS where they agree):

- Cameras: OpenCV frame (DESIGN.md section 1), ``c2w`` poses, pinhole ``K``; pixel (u, v) has its centre at
  (u + 0.5, v + 0.5) in ``K``'s coordinates.
- Guard band: a Gaussian whose mean has camera z < ``near``, or x/z (resp. y/z) more than 0.3 tan(fov/2) beyond
  the image's edge (|x/z| > 1.3 tan(fov_x/2) for a centred principal point), is culled for that camera. Near,
  off-screen Gaussians would otherwise blow up through the projection's Jacobian (which grows as 1/z^2).
  gsplat itself only clamps the Jacobian there, so the gsplat backend zeroes those Gaussians' opacity per camera
  before calling it.
- EWA projection: Sigma2D = J W Sigma W^T J^T + 0.3 I (J the perspective Jacobian at the mean, W the
  world-to-camera rotation). The 0.3 px^2 low-pass dilation is the "classic" one of INRIA and gsplat: opacity is
  left as it is (gsplat's "antialiased" mode would multiply it by sqrt(det Sigma2D / det(Sigma2D + 0.3 I)), which
  dims Gaussians smaller than a pixel; not used).
- Extent: a Gaussian covers the tiles (gsplat: 16 x 16 px; the reference picks 4, 8 or 16 px per call) of the
  box mean +- r, r = ceil(e sqrt(Sigma2D_xx)) (resp. yy),
  e = min(3.33, sqrt(2 ln(255 opacity))) standard deviations: gsplat's opacity-aware bound, the bounding box of
  the ellipse where alpha >= 1/255 (e <= sqrt(2 ln 255) = 3.329, so the 3.33 cap never cuts it and the tiles only
  save work, they never change the image). Gaussians with opacity < 1/255 or whose box misses the image are
  dropped.
- Compositing: front to back by camera z within each tile, alpha = min(0.99, opacity exp(-d^T Sigma2D^-1 d / 2)),
  alpha < 1/255 skipped, and a pixel stops before the Gaussian that would bring its transmittance to 1e-4 or below.
- Colour: degree-0 only (``Gaussians.colours``, clamped to [0, 1]); ``sh_rest`` is ignored by both backends for
  now, so that they agree.
- Outputs: ``rgb`` = sum of w_i c_i + (1 - alpha) background, ``alpha`` = sum of w_i, ``depth`` = sum of w_i z_i /
  alpha where alpha > 0, else 0 (the expected planar camera z of what was composited: gsplat's "RGB+ED"); w_i =
  alpha_i T_i are the compositing weights.

Residual differences: gsplat clamps alpha at 0.999 (INRIA and the reference at 0.99), so the two agree only for
alpha below 0.99; gsplat works in float32 (the reference in the Gaussians' dtype) and its sums run in another
order, so pixels on the 1/255 and 1e-4 thresholds can flip; gsplat needs >= 1.5 (batched ``rasterization``).

Panoramas (``render_panorama``): the six cube faces (``CUBE_LAYOUT``, FOV 90) are rendered as pinhole views and
resampled into the equirect exactly as ``dataset.core.conventions.perspective_to_equirect`` stitches faces:
colour and alpha bilinearly, depth from the nearest face pixel, converted from planar z to range.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from dataset.core.conventions import (
    CUBE_LAYOUT,
    check_equirect_size,
    crop_rotation,
    equirect_directions,
    intrinsics,
    perspective_to_equirect,
)
from inference.gaussians import Gaussians, covariances

BACKENDS = ("auto", "torch", "gsplat")
"""Accepted ``backend`` names."""
TILE = 16
"""Tile side in pixels of the gsplat backend (gsplat's default ``tile_size``)."""
REFERENCE_TILES = (4, 8, 16)
"""Tile sides the reference chooses from per call: the one with the fewest Gaussian-pixel evaluations (plus
``TILE_PAIR_COST`` per Gaussian-tile pair). Small Gaussians waste most of a 16 px tile's evaluations (a 32 px crop
of 20 k Gaussians on an OpenArena walk: 194 ms per forward + backward with 16 px tiles, 75 with 8, 49 with 4);
the tile size never changes the image."""
TILE_PAIR_COST = 8
"""Cost of one Gaussian-tile pair (sorting, gathering) in Gaussian-pixel evaluations."""
EPS2D = 0.3
"""Low-pass dilation added to the 2D covariance's diagonal, px^2."""
GUARD_BAND = 0.3
"""Margin beyond the image edge, in units of tan(fov/2), inside which Gaussian means are kept."""
EXTENT = 3.33
"""Largest Gaussian extent in standard deviations (gsplat's bound, before its opacity-aware tightening)."""
MAX_ALPHA = 0.99
"""Largest alpha of one Gaussian at one pixel (INRIA; gsplat uses 0.999)."""
ALPHA_THRESHOLD = 1.0 / 255.0
"""Alphas below this are skipped."""
MIN_TRANSMITTANCE = 1e-4
"""A pixel stops before the Gaussian that would bring its transmittance to this or below."""
PAIR_BUDGET = 1 << 22
"""Gaussian-pixel evaluations per compositing step of the reference (bounds its memory: ~15 floats each)."""
FACE_FOV = 90.0
"""Field of view of the cube faces of ``render_panorama``, degrees."""


@dataclass
class Render:
    """Rendered images of C cameras, in the Gaussians' dtype and device."""

    rgb: torch.Tensor
    """(C, H, W, 3) colour: composited Gaussians plus (1 - alpha) x background."""
    alpha: torch.Tensor
    """(C, H, W) accumulated opacity, 1 - the final transmittance."""
    depth: torch.Tensor
    """(C, H, W) expected planar camera z of the composited Gaussians / alpha where alpha > 0, else 0, metres
    (``render_panorama``: range along the pixel's ray instead, DESIGN.md section 1). Front-to-back weights make
    it lean towards the camera by about a Gaussian's footprint on oblique surfaces and at concave edges."""


def rasterize(gaussians: Gaussians, c2w: torch.Tensor | np.ndarray, K: torch.Tensor | np.ndarray, width: int,
              height: int, backend: str = "auto", background: torch.Tensor | None = None,
              near: float = 0.01) -> Render:
    """Render pinhole images of the Gaussians for poses ``c2w`` (C, 4, 4) or (4, 4) and OpenCV intrinsics ``K``
    (3, 3) or (C, 3, 3); ``background`` is an RGB (3,) or (C, 3) behind the Gaussians (None: black)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} must be positive")
    if near <= 0:
        raise ValueError(f"near plane {near} must be positive (metres)")
    w2c, ks = _cameras(c2w, K, gaussians.means)
    backend = _resolve_backend(backend, gaussians.means.device)
    draw = _rasterize_gsplat if backend == "gsplat" else _rasterize_torch
    rgb, alpha, depth = draw(gaussians, w2c, ks, int(width), int(height), near)
    return Render(_over(rgb, alpha, background), alpha, depth)


def render_panorama(gaussians: Gaussians, c2w: torch.Tensor | np.ndarray, width: int, backend: str = "auto",
                    face_size: int | None = None, background: torch.Tensor | None = None,
                    near: float = 0.01) -> Render:
    """Render equirect panoramas (C, width / 2, width, ...) for poses ``c2w`` (C, 4, 4) or (4, 4) from six cube
    faces of ``face_size`` px (default width / 4, as the Unreal backend); ``depth`` is range (DESIGN.md).

    Differentiable like the faces: colour and alpha are bilinear in the face pixels, depth takes the nearest
    face pixel's planar z times the equirect ray's 1 / cos to that face's axis.
    """
    w, h = check_equirect_size(width)
    face = int(face_size) if face_size is not None else max(16, w // 4)
    dtype, device = gaussians.means.dtype, gaussians.means.device
    poses = _as_batch(c2w, (4, 4), "c2w", gaussians.means)
    rots = torch.as_tensor(np.stack([crop_rotation(yaw, pitch) for yaw, pitch in CUBE_LAYOUT]), dtype=dtype,
                           device=device)
    # (C, 6, 4, 4): each face's camera in the world, the pose's axes turned by the face's rotation
    face_c2w = torch.cat([poses[:, None, :, :3] @ rots, poses[:, None, :, 3:].expand(-1, 6, 4, 1)], -1)
    faces = rasterize(gaussians, face_c2w.reshape(-1, 4, 4), intrinsics(face, face, FACE_FOV), face, face, backend,
                      near=near)

    n = len(poses)
    face_id, x, y, inv_cos = (torch.as_tensor(a, device=device) for a in _cube_lookup(w, face))
    base = face_id * face * face
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=face - 1), (y0 + 1).clamp(max=face - 1)
    fx, fy = (x - x0).to(dtype)[:, None], (y - y0).to(dtype)[:, None]
    values = torch.cat([faces.rgb, faces.alpha[..., None]], -1).reshape(n, 6 * face * face, 4)
    top = values[:, base + y0 * face + x0] * (1 - fx) + values[:, base + y0 * face + x1] * fx
    bottom = values[:, base + y1 * face + x0] * (1 - fx) + values[:, base + y1 * face + x1] * fx
    sampled = (top * (1 - fy) + bottom * fy).reshape(n, h, w, 4)
    nearest = base + _round(y, face) * face + _round(x, face)
    depth = (faces.depth.reshape(n, -1)[:, nearest] * inv_cos.to(dtype)).reshape(n, h, w)
    alpha = sampled[..., 3]
    return Render(_over(sampled[..., :3], alpha, background), alpha, depth)


def _round(coordinate: torch.Tensor, size: int) -> torch.Tensor:
    """The nearest pixel index of continuous face coordinates (pixel centres at integers)."""
    return (coordinate + 0.5).floor().long().clamp(max=size - 1)


def _over(rgb: torch.Tensor, alpha: torch.Tensor, background) -> torch.Tensor:
    """Premultiplied colours (C, H, W, 3) over an RGB background (3,) or (C, 3); None keeps them as they are."""
    if background is None:
        return rgb
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device).expand(len(rgb), 3)
    return rgb + (1.0 - alpha[..., None]) * bg[:, None, None, :]


# --------------------------------------------------------------------------- shared by both backends


def _as_batch(value: torch.Tensor | np.ndarray, shape: tuple[int, int], name: str,
              like: torch.Tensor) -> torch.Tensor:
    """``value`` as a (C, *shape) tensor of ``like``'s dtype and device (a single matrix gets C = 1)."""
    t = torch.as_tensor(value, device=like.device).to(like.dtype)
    if t.shape == shape:
        t = t[None]
    if t.ndim != 3 or tuple(t.shape[1:]) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} or (C, {shape[0]}, {shape[1]})")
    return t


def _cameras(c2w: torch.Tensor | np.ndarray, K: torch.Tensor | np.ndarray,
             like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera (C, 4, 4) (rigid inverse of c2w) and intrinsics (C, 3, 3) broadcast to the C poses."""
    c2w = _as_batch(c2w, (4, 4), "c2w", like)
    ks = _as_batch(K, (3, 3), "K", like)
    if len(ks) not in (1, len(c2w)):
        raise ValueError(f"got {len(ks)} intrinsics for {len(c2w)} poses: give one K or one per pose")
    rt = c2w[:, :3, :3].transpose(1, 2)
    top = torch.cat([rt, -rt @ c2w[:, :3, 3:]], -1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=like.dtype, device=like.device).expand(len(c2w), 1, 4)
    return torch.cat([top, bottom], 1), ks.expand(len(c2w), 3, 3)


@torch.no_grad()
def _in_guard_band(p_cam: torch.Tensor, ks: torch.Tensor, width: int, height: int, near: float) -> torch.Tensor:
    """(C, N) bool: camera-frame means (C, N, 3) at z >= near and inside the guard band of each camera."""
    fx, fy, cx, cy = (ks[:, i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    z = p_cam[..., 2]
    tx, ty = p_cam[..., 0] / z.clamp_min(near), p_cam[..., 1] / z.clamp_min(near)
    mx, my = GUARD_BAND * 0.5 * width / fx, GUARD_BAND * 0.5 * height / fy
    return ((z >= near) & (tx <= (width - cx) / fx + mx) & (tx >= -cx / fx - mx)
            & (ty <= (height - cy) / fy + my) & (ty >= -cy / fy - my))


def _resolve_backend(backend: str, device: torch.device) -> str:
    """The backend to use: "auto" picks gsplat for CUDA tensors when it imports; "gsplat" is checked here."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and _gsplat() is not None else "torch"
    if backend == "gsplat":
        if _gsplat() is None:
            raise RuntimeError("backend 'gsplat' needs the gsplat package and a CUDA GPU: pip install gsplat "
                               "(>= 1.5; CUDA only), or use backend='torch' (the CPU reference)")
        if device.type != "cuda":
            raise RuntimeError(f"backend 'gsplat' needs the Gaussians on a CUDA device, not {device}: move them "
                               "with gaussians.to('cuda'), or use backend='torch'")
    return backend


@functools.lru_cache(maxsize=1)
def _gsplat():
    """The gsplat module, or None when it is not installed or cannot load (it needs CUDA)."""
    try:
        import gsplat
    except Exception:  # a broken CUDA build raises more than ImportError
        return None
    return gsplat


# --------------------------------------------------------------------------- gsplat


def _rasterize_gsplat(g: Gaussians, w2c: torch.Tensor, ks: torch.Tensor, width: int, height: int,
                      near: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gsplat.rasterization with one batch entry per camera, so each camera's guard-band cull is its own
    opacity mask; float32 inside, results in the Gaussians' dtype."""
    c, n, f32 = len(w2c), len(g), torch.float32
    p_cam = torch.einsum("cij,nj->cni", w2c[:, :3, :3], g.means.detach()) + w2c[:, None, :3, 3]
    keep = _in_guard_band(p_cam, ks, width, height, near)
    colours, alphas, _ = _gsplat().rasterization(
        means=g.means.to(f32).expand(c, n, 3), quats=g.quats.to(f32).expand(c, n, 4),
        scales=g.scales.to(f32).expand(c, n, 3), opacities=g.opacities.to(f32) * keep,
        colors=g.colours.to(f32).expand(c, n, 3), viewmats=w2c.to(f32)[:, None], Ks=ks.to(f32)[:, None],
        width=width, height=height, near_plane=near, eps2d=EPS2D, sh_degree=None, tile_size=TILE,
        render_mode="RGB+ED", rasterize_mode="classic")
    dtype = g.means.dtype
    return colours[:, 0, ..., :3].to(dtype), alphas[:, 0, ..., 0].to(dtype), colours[:, 0, ..., 3].to(dtype)


# --------------------------------------------------------------------------- the PyTorch reference


@dataclass
class _Splats:
    """The projected Gaussians, one per (camera, Gaussian) pair that survives culling."""

    camera: torch.Tensor
    """(M,) camera index."""
    gaussian: torch.Tensor
    """(M,) Gaussian index."""
    mean2d: torch.Tensor
    """(M, 2) projected mean, pixels."""
    conic: torch.Tensor
    """(M, 3) a, b, c of Sigma2D^-1 = [[a, b], [b, c]]."""
    depth: torch.Tensor
    """(M,) camera z of the mean."""
    opacity: torch.Tensor
    """(M,) peak opacity."""
    radii: torch.Tensor
    """(M, 2) half sizes (rx, ry) of the box that holds every pixel with alpha >= 1/255, pixels (no gradient)."""


def _project(g: Gaussians, w2c: torch.Tensor, ks: torch.Tensor, width: int, height: int, near: float) -> _Splats:
    """EWA projection of the Gaussians each camera keeps (guard band), for those whose box touches the image."""
    r, t = w2c[:, :3, :3], w2c[:, :3, 3]
    p_cam = torch.einsum("cij,nj->cni", r, g.means) + t[:, None]
    cam, gid = _in_guard_band(p_cam, ks, width, height, near).nonzero(as_tuple=True)
    p = p_cam[cam, gid]
    rc, kc = r[cam], ks[cam]
    cov = rc @ covariances(g)[gid] @ rc.transpose(1, 2)
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = kc[:, 0, 0], kc[:, 1, 1], kc[:, 0, 2], kc[:, 1, 2]
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * x / z**2, zero, fy / z, -fy * y / z**2], -1).reshape(-1, 2, 3)
    cov2 = jac @ cov @ jac.transpose(1, 2)
    a, b, c = cov2[:, 0, 0] + EPS2D, 0.5 * (cov2[:, 0, 1] + cov2[:, 1, 0]), cov2[:, 1, 1] + EPS2D
    det = a * c - b * b
    mean2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    opacity = g.opacities[gid]
    with torch.no_grad():
        o = opacity.clamp_min(ALPHA_THRESHOLD)
        extent = torch.sqrt(2.0 * torch.log(o / ALPHA_THRESHOLD)).clamp(max=EXTENT)
        radii = torch.stack([torch.ceil(extent * a.sqrt()), torch.ceil(extent * c.sqrt())], -1)
        m = mean2d.detach()
        visible = ((det > 0) & (opacity >= ALPHA_THRESHOLD) & (radii > 0).all(-1)
                   & (m[:, 0] + radii[:, 0] > 0) & (m[:, 0] - radii[:, 0] < width)
                   & (m[:, 1] + radii[:, 1] > 0) & (m[:, 1] - radii[:, 1] < height))
    v = visible.nonzero(as_tuple=True)[0]
    det = det[v]
    conic = torch.stack([c[v] / det, -b[v] / det, a[v] / det], -1)
    return _Splats(cam[v], gid[v], mean2d[v], conic, z[v], opacity[v], radii[v])


@torch.no_grad()
def _tile_pairs(camera: torch.Tensor, mean2d: torch.Tensor, radii: torch.Tensor, depth: torch.Tensor,
                tile_size: int, tiles_x: int, tiles_y: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Gaussian, tile) overlaps sorted by tile then depth: the projected Gaussian of each pair and its tile id
    (camera * tiles_y * tiles_x + row * tiles_x + column)."""
    x0, x1, y0, y1 = _tile_box(mean2d, radii, tile_size, tiles_x, tiles_y)
    nx = x1 - x0
    count = nx * (y1 - y0)
    order = torch.argsort(depth, stable=True)
    owner = order.repeat_interleave(count[order])
    first = torch.cumsum(count[order], 0) - count[order]
    local = torch.arange(len(owner), device=owner.device) - first.repeat_interleave(count[order])
    col = x0[owner] + local % nx[owner]
    row = y0[owner] + local // nx[owner]
    tile = (camera[owner] * tiles_y + row) * tiles_x + col
    by_tile = torch.argsort(tile, stable=True)
    return owner[by_tile], tile[by_tile]


def _tile_box(mean2d: torch.Tensor, radii: torch.Tensor, tile_size: int, tiles_x: int,
              tiles_y: int) -> tuple[torch.Tensor, ...]:
    """First and one-past-last tile column and row each projected Gaussian's box covers."""
    lo = torch.floor((mean2d - radii) / tile_size).long()
    hi = torch.ceil((mean2d + radii) / tile_size).long()
    return (lo[:, 0].clamp(0, tiles_x), hi[:, 0].clamp(0, tiles_x), lo[:, 1].clamp(0, tiles_y),
            hi[:, 1].clamp(0, tiles_y))


@torch.no_grad()
def _reference_tile(mean2d: torch.Tensor, radii: torch.Tensor, width: int, height: int) -> int:
    """The side of ``REFERENCE_TILES`` that composites these projected Gaussians with the least work."""
    def cost(t: int) -> float:
        x0, x1, y0, y1 = _tile_box(mean2d, radii, t, -(-width // t), -(-height // t))
        return float(((x1 - x0) * (y1 - y0)).sum()) * (t * t + TILE_PAIR_COST)

    return min(REFERENCE_TILES, key=cost)


def _composite(mean2d: torch.Tensor, conic: torch.Tensor, opacity: torch.Tensor, features: torch.Tensor,
               valid: torch.Tensor, pixels: torch.Tensor,
               log_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite K depth-sorted Gaussians per tile (A, K, ...) over the tiles' pixels (A, P, 2), starting from
    log transmittance ``log_t`` (A, P): returns the weighted sums of ``features`` and the weights (A, P, F + 1)
    and the log transmittance after these Gaussians (A, P; also counting a rejected one)."""
    dx = mean2d[:, :, None, 0] - pixels[:, None, :, 0]
    dy = mean2d[:, :, None, 1] - pixels[:, None, :, 1]
    a, b, c = conic[..., 0, None], conic[..., 1, None], conic[..., 2, None]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = (opacity[..., None] * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
    alpha = torch.where((alpha >= ALPHA_THRESHOLD) & (sigma >= 0) & valid[..., None], alpha, 0.0)
    log1m = torch.log1p(-alpha)
    log_after = log_t[:, None, :] + torch.cumsum(log1m, 1)
    weight = torch.where(log_after > math.log(MIN_TRANSMITTANCE), alpha * torch.exp(log_after - log1m), 0.0)
    sums = torch.einsum("akp,akf->apf", weight, features)
    return torch.cat([sums, weight.sum(1)[..., None]], -1), log_after[:, -1]


def _rasterize_torch(g: Gaussians, w2c: torch.Tensor, ks: torch.Tensor, width: int, height: int,
                     near: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference: project, bin into tiles, composite each tile's depth-sorted Gaussians in steps of at most
    ``PAIR_BUDGET`` Gaussian-pixel evaluations (checkpointed under autograd, so memory stays bounded), carrying
    the transmittance from step to step; tiles whose pixels are all done leave early."""
    dtype, device = g.means.dtype, g.means.device
    n_cam = len(w2c)
    splats = _project(g, w2c, ks, width, height, near)
    side = _reference_tile(splats.mean2d.detach(), splats.radii, width, height)
    tiles_x, tiles_y = -(-width // side), -(-height // side)
    n_tiles, n_pix = n_cam * tiles_y * tiles_x, side * side
    features = torch.cat([g.colours[splats.gaussian], splats.depth[:, None]], -1)
    owner, tile = _tile_pairs(splats.camera, splats.mean2d.detach(), splats.radii, splats.depth.detach(), side,
                              tiles_x, tiles_y)
    count = torch.bincount(tile, minlength=n_tiles)
    start = torch.cumsum(count, 0) - count

    local = torch.arange(n_pix, device=device)
    tile_ids = torch.arange(n_tiles, device=device)
    px = (tile_ids % tiles_x)[:, None] * side + local % side
    py = (tile_ids // tiles_x % tiles_y)[:, None] * side + local // side
    pixels = torch.stack([px, py], -1).to(dtype) + 0.5  # (tiles, P, 2) pixel centres
    inside = (px < width) & (py < height)

    log_t = torch.zeros(n_tiles, n_pix, dtype=dtype, device=device)
    active = count.nonzero(as_tuple=True)[0]
    done_tiles, sums = [], []
    offset = 0
    grad = torch.is_grad_enabled()
    while len(active):
        k = max(1, min(PAIR_BUDGET // (len(active) * n_pix), int(count[active].max()) - offset))
        slot = offset + torch.arange(k, device=device)
        valid = slot[None, :] < count[active, None]
        pair = owner[(start[active, None] + slot).clamp(max=max(len(owner) - 1, 0))]
        args = (splats.mean2d[pair], splats.conic[pair], splats.opacity[pair], features[pair], valid,
                pixels[active], log_t[active])
        out, log_after = checkpoint(_composite, *args, use_reentrant=False) if grad else _composite(*args)
        done_tiles.append(active)
        sums.append(out)
        log_t = log_t.index_copy(0, active, log_after)
        offset += k
        saturated = ((log_after <= math.log(MIN_TRANSMITTANCE)) | ~inside[active]).all(1)
        active = active[(count[active] > offset) & ~saturated]

    acc = torch.zeros(n_tiles, n_pix, features.shape[1] + 1, dtype=dtype, device=device)
    if sums:
        acc = acc.index_add(0, torch.cat(done_tiles), torch.cat(sums))
    image = (acc.reshape(n_cam, tiles_y, tiles_x, side, side, -1).permute(0, 1, 3, 2, 4, 5)
             .reshape(n_cam, tiles_y * side, tiles_x * side, -1)[:, :height, :width])
    alpha = image[..., 4]
    return image[..., :3], alpha, image[..., 3] / alpha.clamp_min(1e-10)


# --------------------------------------------------------------------------- panorama lookup


@functools.lru_cache(maxsize=8)
def _cube_lookup(width: int, face: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per equirect pixel (flattened): the cube face it samples, its continuous pixel coordinates on that face
    (pixel centres at integers, clamped to [0, face - 1]) and 1 / cos of its ray to the face's axis.

    Found by stitching images of the faces' own (index, x, y) through ``perspective_to_equirect``, so the face
    choice and clamping are the project's one stitcher's (bilinear of a linear ramp is the coordinate itself).
    """
    rots = np.stack([crop_rotation(yaw, pitch) for yaw, pitch in CUBE_LAYOUT])
    ramp = np.arange(face, dtype=np.float32)
    images = [np.stack(np.broadcast_arrays(np.float32(i), ramp[None, :], ramp[:, None]), -1) for i in range(6)]
    coords = perspective_to_equirect(images, rots, width, FACE_FOV, mode="linear").reshape(-1, 3)
    face_id = np.rint(coords[:, 0]).astype(np.int64)
    d = equirect_directions(width, dtype=np.float64).reshape(-1, 3)
    cos = np.einsum("pi,pi->p", d, rots[face_id, :, 2])
    return face_id, coords[:, 1].astype(np.float64), coords[:, 2].astype(np.float64), 1.0 / cos
