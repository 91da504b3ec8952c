"""Texture atlas with mip levels and the compiled per-pixel shading kernel of the embedded renderer.

Shading is where a CPU panorama renderer spends its time after the ray cast, so it runs as one
compiled kernel over chunks of hits, on the ray-casting threads: barycentric interpolation of UVs
and colours, trilinear mip-mapped texture lookup (level from the ray footprint, so distant textures
do not shimmer in video), bilinear light-map lookup, and a view-independent sun + sky model for scenes without baked
lighting (stable across frames, which video models rely on). A second small kernel (``alpha_cut``) finds the
hits on cut-out texels of masked materials, which the renderer then casts past.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np


@dataclass
class TextureAtlas:
    """All textures of a scene and their mip levels in one flat buffer the kernel can index."""

    data: np.ndarray
    """Flat uint8 texels (RGB, or one channel for alpha planes) of every level of every texture."""
    offset: np.ndarray
    """(T, L) int64 start of level l of texture t in ``data`` (texels, not bytes)."""
    width: np.ndarray
    """(T, L) int32 level widths."""
    height: np.ndarray
    """(T, L) int32 level heights."""
    levels: np.ndarray
    """(T,) int32 number of levels of each texture."""


def _downsample(img: np.ndarray) -> np.ndarray:
    """Half-size box filter of a float image (odd sizes lose their last row/column)."""
    h, w = img.shape[:2]
    h2, w2 = max(1, h // 2), max(1, w // 2)
    if h == 1 or w == 1:
        ys = np.minimum(np.arange(h2) * 2, h - 1)
        xs = np.minimum(np.arange(w2) * 2, w - 1)
        return img[ys][:, xs]
    img = img[: h2 * 2, : w2 * 2]
    return 0.25 * (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2])


def build_atlas(textures: list[np.ndarray], mipmaps: bool = True) -> TextureAtlas:
    """Pack textures (h, w, 3) or alpha planes (h, w) (and, if asked, their mip chains down to 1x1) into a
    ``TextureAtlas``."""
    chains = []
    for tex in textures:
        chain = [tex]
        if mipmaps:
            cur = tex.astype(np.float32)
            while min(cur.shape[:2]) > 1:
                cur = _downsample(cur)
                chain.append(np.clip(np.rint(cur), 0, 255).astype(np.uint8))
        chains.append(chain)
    n_levels = max((len(c) for c in chains), default=1)
    t = max(len(chains), 1)
    offset = np.zeros((t, n_levels), np.int64)
    width = np.ones((t, n_levels), np.int32)
    height = np.ones((t, n_levels), np.int32)
    levels = np.ones(t, np.int32)
    parts, pos = [], 0
    for i, chain in enumerate(chains):
        levels[i] = len(chain)
        for j, img in enumerate(chain):
            offset[i, j] = pos
            height[i, j], width[i, j] = img.shape[:2]
            parts.append(np.ascontiguousarray(img).reshape(-1))
            pos += img.shape[0] * img.shape[1]
    data = np.concatenate(parts) if parts else np.zeros(3, np.uint8)
    return TextureAtlas(data, offset, width, height, levels)


def texels_per_metre(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_tex: np.ndarray,
                     atlas: TextureAtlas) -> np.ndarray:
    """(F,) level-0 texel density of each textured face (0 for untextured faces): picks the mip level."""
    tri = vertices[faces].astype(np.float64)
    world = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    tex = np.maximum(face_tex, 0)
    w = atlas.width[tex, 0].astype(np.float64)
    h = atlas.height[tex, 0].astype(np.float64)
    d1 = (uvs[:, 1] - uvs[:, 0]).astype(np.float64) * np.stack([w, h], 1)
    d2 = (uvs[:, 2] - uvs[:, 0]).astype(np.float64) * np.stack([w, h], 1)
    texel = np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        tpm = np.sqrt(np.where(world > 0, texel / world, 0.0))
    return np.where(face_tex >= 0, np.nan_to_num(tpm), 0.0).astype(np.float32)


@nb.njit(inline="always", fastmath=True)
def _bilinear_taps(w, h, s, t, wrap):
    """Texel columns x0, x1, rows y0, y1 and weights fx, fy of a bilinear lookup at (s, t), wrapping or clamping."""
    if wrap:  # repeat: bring (s, t) into [0, 1) with float ops (integer modulo is slow)
        s -= math.floor(s)
        t -= math.floor(t)
    x = s * w - 0.5
    y = t * h - 0.5
    x0f = math.floor(x)
    y0f = math.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = int(x0f)
    y0 = int(y0f)
    x1 = x0 + 1
    y1 = y0 + 1
    if wrap:
        if x0 < 0:
            x0 += w
        if y0 < 0:
            y0 += h
        if x1 >= w:
            x1 -= w
        if y1 >= h:
            y1 -= h
    else:
        x0 = min(max(x0, 0), w - 1)
        x1 = min(max(x1, 0), w - 1)
        y0 = min(max(y0, 0), h - 1)
        y1 = min(max(y1, 0), h - 1)
    return x0, x1, y0, y1, fx, fy


@nb.njit(inline="always", fastmath=True)
def _bilinear(data, off, w, h, s, t, wrap):
    """Bilinear RGB lookup (0..1) at texture coordinates (s, t), wrapping or clamping."""
    x0, x1, y0, y1, fx, fy = _bilinear_taps(w, h, s, t, wrap)
    i00 = (off + y0 * w + x0) * 3
    i01 = (off + y0 * w + x1) * 3
    i10 = (off + y1 * w + x0) * 3
    i11 = (off + y1 * w + x1) * 3
    w00 = (1.0 - fx) * (1.0 - fy)
    w01 = fx * (1.0 - fy)
    w10 = (1.0 - fx) * fy
    w11 = fx * fy
    k = 1.0 / 255.0
    r = (data[i00] * w00 + data[i01] * w01 + data[i10] * w10 + data[i11] * w11) * k
    g = (data[i00 + 1] * w00 + data[i01 + 1] * w01 + data[i10 + 1] * w10 + data[i11 + 1] * w11) * k
    b = (data[i00 + 2] * w00 + data[i01 + 2] * w01 + data[i10 + 2] * w10 + data[i11 + 2] * w11) * k
    return r, g, b


@nb.njit(fastmath=True, cache=True, nogil=True)
def alpha_cut(prim, bu, bv, face_uv, face_alpha, face_cutoff, face_invert, alpha_data, alpha_off, alpha_w,
              alpha_h, out):
    """out[i] = True where ray i hit a masked face at a point whose alpha fails the face's test (a cut-out texel
    the ray passes through). Alpha is sampled bilinearly at level 0 with repeat wrapping, as the colour is: the
    exact coverage at the hit point, whatever the distance (mip-mapped alpha would thin foliage with distance)."""
    for i in range(prim.shape[0]):
        p = prim[i]
        cut = False
        if p >= 0:
            a = face_alpha[p]
            if a >= 0:
                u = bu[i]
                v = bv[i]
                w0 = 1.0 - u - v
                s = w0 * face_uv[p, 0, 0] + u * face_uv[p, 1, 0] + v * face_uv[p, 2, 0]
                t = w0 * face_uv[p, 0, 1] + u * face_uv[p, 1, 1] + v * face_uv[p, 2, 1]
                w = alpha_w[a, 0]
                off = alpha_off[a, 0]
                x0, x1, y0, y1, fx, fy = _bilinear_taps(w, alpha_h[a, 0], s, t, True)
                top = alpha_data[off + y0 * w + x0] * (1.0 - fx) + alpha_data[off + y0 * w + x1] * fx
                bottom = alpha_data[off + y1 * w + x0] * (1.0 - fx) + alpha_data[off + y1 * w + x1] * fx
                alpha = (top * (1.0 - fy) + bottom * fy) * (1.0 / 255.0)
                cut = (alpha >= face_cutoff[p]) == face_invert[p]
        out[i] = cut


@nb.njit(inline="always", fastmath=True)
def _tone(x, gain):
    """Brighten by ``gain`` with a rational curve: slope ``gain`` at black, 1 stays 1 (white stays white,
    highlights roll off instead of clipping); ``gain`` = 1 is the identity. Clamped to [0, 1]."""
    x = max(x, 0.0)
    return min(x * gain / (1.0 + x * (gain - 1.0)), 1.0)


@nb.njit(fastmath=True, cache=True, nogil=True)
def shade_kernel(prim, bu, bv, dirs, has_shadow, shadow, pixel_angle,
                 face_uv, face_tex, face_base, face_col, face_lm, face_lmuv, face_normal, face_tpm,
                 atlas_data, atlas_off, atlas_w, atlas_h, atlas_levels, t_hit,
                 baked, has_col, sun, sun_strength, sky_strength, exposure, gain,
                 sky_zenith, sky_horizon, ground, face_object, out_rgb, out_depth, out_inst):
    """Shade every ray on the calling thread (callers split work in chunks).

    Writes sRGB uint8 colour (sky colour for misses), range (0 for misses) and object id (-1 for misses).
    """
    n = prim.shape[0]
    for i in range(n):
        p = prim[i]
        dx = dirs[i, 0]
        dy = dirs[i, 1]
        dz = dirs[i, 2]
        if p < 0:
            out_depth[i] = 0.0
            out_inst[i] = -1
            if dz >= 0.0:
                a = math.sqrt(dz)
                r = sky_horizon[0] + (sky_zenith[0] - sky_horizon[0]) * a
                g = sky_horizon[1] + (sky_zenith[1] - sky_horizon[1]) * a
                b = sky_horizon[2] + (sky_zenith[2] - sky_horizon[2]) * a
            else:
                a = min(1.0, -dz * 4.0)
                r = sky_horizon[0] + (ground[0] - sky_horizon[0]) * a
                g = sky_horizon[1] + (ground[1] - sky_horizon[1]) * a
                b = sky_horizon[2] + (ground[2] - sky_horizon[2]) * a
            out_rgb[i, 0] = np.uint8(min(255.0, r * 255.0 + 0.5))
            out_rgb[i, 1] = np.uint8(min(255.0, g * 255.0 + 0.5))
            out_rgb[i, 2] = np.uint8(min(255.0, b * 255.0 + 0.5))
            continue
        out_depth[i] = t_hit[i]
        out_inst[i] = face_object[p]
        u = bu[i]
        v = bv[i]
        w0 = 1.0 - u - v
        nx = face_normal[p, 0]
        ny = face_normal[p, 1]
        nz = face_normal[p, 2]
        cosv = nx * dx + ny * dy + nz * dz
        if cosv > 0.0:
            nx = -nx
            ny = -ny
            nz = -nz
        else:
            cosv = -cosv
        r = face_base[p, 0]
        g = face_base[p, 1]
        b = face_base[p, 2]
        tex = face_tex[p]
        if tex >= 0:
            s = w0 * face_uv[p, 0, 0] + u * face_uv[p, 1, 0] + v * face_uv[p, 2, 0]
            t = w0 * face_uv[p, 0, 1] + u * face_uv[p, 1, 1] + v * face_uv[p, 2, 1]
            foot = t_hit[i] * pixel_angle / math.sqrt(max(cosv, 0.05))
            lod = math.log2(max(face_tpm[p] * foot, 1e-6))
            top = atlas_levels[tex] - 1
            lod = min(max(lod, 0.0), float(top))
            l0 = int(lod)
            l1 = min(l0 + 1, top)
            f = lod - l0
            r0, g0, b0 = _bilinear(atlas_data, atlas_off[tex, l0], atlas_w[tex, l0], atlas_h[tex, l0], s, t, True)
            if f > 0.0 and l1 != l0:
                r1, g1, b1 = _bilinear(atlas_data, atlas_off[tex, l1], atlas_w[tex, l1], atlas_h[tex, l1], s, t, True)
                r0 += (r1 - r0) * f
                g0 += (g1 - g0) * f
                b0 += (b1 - b0) * f
            r *= r0
            g *= g0
            b *= b0
        if has_col:
            r *= w0 * face_col[p, 0, 0] + u * face_col[p, 1, 0] + v * face_col[p, 2, 0]
            g *= w0 * face_col[p, 0, 1] + u * face_col[p, 1, 1] + v * face_col[p, 2, 1]
            b *= w0 * face_col[p, 0, 2] + u * face_col[p, 1, 2] + v * face_col[p, 2, 2]
        if baked:
            lm = face_lm[p]
            if lm >= 0:
                s = w0 * face_lmuv[p, 0, 0] + u * face_lmuv[p, 1, 0] + v * face_lmuv[p, 2, 0]
                t = w0 * face_lmuv[p, 0, 1] + u * face_lmuv[p, 1, 1] + v * face_lmuv[p, 2, 1]
                r0, g0, b0 = _bilinear(atlas_data, atlas_off[lm, 0], atlas_w[lm, 0], atlas_h[lm, 0], s, t, False)
                r *= r0
                g *= g0
                b *= b0
            r *= exposure
            g *= exposure
            b *= exposure
        else:
            # Lambert in (approximately) linear light: gamma 2 is close to sRGB and cheap.
            lam = nx * sun[0] + ny * sun[1] + nz * sun[2]
            sunlit = shadow[i] if has_shadow else 1.0
            light = sky_strength * (0.75 + 0.25 * nz) + sun_strength * max(lam, 0.0) * sunlit
            light *= exposure
            r = math.sqrt(r * r * light)
            g = math.sqrt(g * g * light)
            b = math.sqrt(b * b * light)
        out_rgb[i, 0] = np.uint8(_tone(r, gain) * 255.0 + 0.5)
        out_rgb[i, 1] = np.uint8(_tone(g, gain) * 255.0 + 0.5)
        out_rgb[i, 2] = np.uint8(_tone(b, gain) * 255.0 + 0.5)


@nb.njit(cache=True, nogil=True)
def box_downsample(samples, h, w, ss, out):
    """Average s x s colour samples per pixel: samples (h*ss*w*ss, 3) row-major -> out (h, w, 3) uint8."""
    inv = 1.0 / (ss * ss)
    row = w * ss
    for y in range(h):
        for x in range(w):
            for c in range(3):
                acc = 0.0
                for dy in range(ss):
                    base = (y * ss + dy) * row + x * ss
                    for dx in range(ss):
                        acc += samples[base + dx, c]
                out[y, x, c] = np.uint8(acc * inv + 0.5)


@nb.njit(cache=True, nogil=True)
def rotate_directions(src, rot, out):
    """out[i] = rot @ src[i] for (N, 3) float32 directions (no BLAS: its spinning threads slow the caster)."""
    for i in range(src.shape[0]):
        x = src[i, 0]
        y = src[i, 1]
        z = src[i, 2]
        for k in range(3):
            out[i, k] = rot[k, 0] * x + rot[k, 1] * y + rot[k, 2] * z
