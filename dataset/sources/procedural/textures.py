"""Procedural, tileable texture images (uint8 RGB), deterministic per name and seed.

Noise is white noise low-pass filtered in the Fourier domain, which makes it periodic: every texture
tiles seamlessly, since materials repeat them across walls and floors.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SIZE = 256


def _noise(rng: np.random.Generator, size: int, scale: float, aniso: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Periodic noise in [0, 1]: white noise with a Gaussian spectrum of width ``size / scale`` cycles."""
    f = np.fft.fftfreq(size)[:, None] * aniso[0], np.fft.fftfreq(size)[None, :] * aniso[1]
    sigma = 1.0 / scale
    spectrum = np.exp(-(f[0] ** 2 + f[1] ** 2) / (2 * sigma**2))
    n = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * spectrum))
    n -= n.min()
    return n / max(n.max(), 1e-9)


def _fbm(rng: np.random.Generator, size: int, base: float, octaves: int = 4) -> np.ndarray:
    """Sum of noise octaves (coarse to fine), normalised to [0, 1]."""
    out = np.zeros((size, size))
    amp, scale, total = 1.0, base, 0.0
    for _ in range(octaves):
        out += amp * _noise(rng, size, scale)
        total += amp
        amp *= 0.5
        scale /= 2.0
    return out / total


def _colorize(base: tuple[float, float, float], shade: np.ndarray, amount: float) -> np.ndarray:
    """RGB float image: ``base`` colour brightened/darkened by ``shade`` (in [0, 1]) by ``amount``."""
    f = 1.0 + amount * (shade - 0.5) * 2.0
    return np.clip(np.asarray(base)[None, None, :] * f[..., None], 0, 1)


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))


def _planks(rng, s, base, plank_count=4, along_u=True) -> np.ndarray:
    """Wood planks with grain, per-plank tint and dark seams."""
    grain = _noise(rng, s, 3.0, aniso=(1.0, 0.08)) if along_u else _noise(rng, s, 3.0, aniso=(0.08, 1.0))
    fine = _fbm(rng, s, 16.0, 3)
    rows = np.arange(s) * plank_count // s
    tint = rng.uniform(-0.12, 0.12, plank_count)[rows][:, None]
    img = _colorize(base, 0.6 * grain + 0.4 * fine, 0.35) * (1 + tint[..., None])
    seam = (np.arange(s) % (s // plank_count)) < 2
    img[seam] *= 0.55
    # Staggered butt joints along each plank.
    for p in range(plank_count):
        x = int(rng.integers(s))
        r0, r1 = p * s // plank_count, (p + 1) * s // plank_count
        img[r0:r1, x : x + 2] *= 0.6
    return img if along_u else img.transpose(1, 0, 2)


def _tiles(rng, s, base, count=4, grout=(0.75, 0.74, 0.7)) -> np.ndarray:
    """Square tiles with per-tile colour variation and grout lines."""
    idx = np.arange(s) * count // s
    var = rng.uniform(-0.06, 0.06, (count, count))[idx][:, idx]
    img = _colorize(base, _fbm(rng, s, 24.0, 3), 0.12) * (1 + var[..., None])
    line = (np.arange(s) % (s // count)) < 3
    img[line, :] = grout
    img[:, line] = grout
    return img


def _bricks(rng, s, base, rows=8, cols=4) -> np.ndarray:
    """Running-bond bricks with mortar."""
    img = np.empty((s, s, 3))
    mortar = np.array([0.72, 0.7, 0.66])
    noise = _fbm(rng, s, 12.0, 3)
    bh, bw = s // rows, s // cols
    for r in range(rows):
        offset = (bw // 2) * (r % 2)
        for c in range(cols + 1):
            x0 = c * bw - offset
            tint = 1 + rng.uniform(-0.15, 0.1)
            xs = np.arange(x0, x0 + bw) % s
            img[r * bh : (r + 1) * bh][:, xs] = np.asarray(base) * tint
    img *= (0.85 + 0.3 * noise)[..., None]
    img[(np.arange(s) % bh) < 3] = mortar
    for r in range(rows):
        offset = (bw // 2) * (r % 2)
        for c in range(cols + 1):
            x = (c * bw - offset) % s
            img[r * bh : (r + 1) * bh, x : x + 3] = mortar
    return img


def _facade(rng, s, wall, glass=(0.32, 0.42, 0.52)) -> np.ndarray:
    """One storey-bay of a facade: wall with a framed window (one texture repeat = one bay)."""
    img = _colorize(wall, _fbm(rng, s, 20.0, 3), 0.12)
    x0, x1, y0, y1 = int(0.2 * s), int(0.8 * s), int(0.15 * s), int(0.7 * s)
    frame = np.array([0.85, 0.85, 0.82])
    img[y0 - 6 : y1 + 6, x0 - 6 : x1 + 6] = frame
    sky = np.linspace(1.15, 0.8, y1 - y0)[:, None, None]
    img[y0:y1, x0:x1] = np.asarray(glass) * sky
    img[y0:y1, (x0 + x1) // 2 - 2 : (x0 + x1) // 2 + 2] = frame
    img[y1 + 6 : y1 + 14, x0 - 10 : x1 + 10] = frame * 0.9  # sill
    return img


def _rows(rng, s, ground, ridge, count=8) -> np.ndarray:
    """Field rows along u: ``ridge``-coloured rows (plants, furrow crests) over ``ground``, with noise."""
    across = 0.5 + 0.5 * np.cos(2 * np.pi * count * np.arange(s) / s)  # 1 on a row, 0 between rows
    mix = np.clip(across[:, None] * 1.4 - 0.2 + 0.4 * (_noise(rng, s, 2.0) - 0.5), 0, 1)
    img = np.asarray(ground)[None, None] * (1 - mix[..., None]) + np.asarray(ridge)[None, None] * mix[..., None]
    return img * (0.85 + 0.3 * _fbm(rng, s, 20.0, 3))[..., None]


def _make(name: str, seed: int, s: int) -> np.ndarray:
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    paints = [(0.86, 0.84, 0.78), (0.80, 0.84, 0.86), (0.88, 0.82, 0.72), (0.78, 0.82, 0.74), (0.9, 0.88, 0.86)]
    recipes = {
        "wood_floor": lambda: _planks(rng, s, (0.62, 0.43, 0.26)),
        "light_wood": lambda: _planks(rng, s, (0.78, 0.62, 0.42), plank_count=3),
        "dark_wood": lambda: _planks(rng, s, (0.40, 0.26, 0.16), plank_count=2),
        "tiles": lambda: _tiles(rng, s, (0.82, 0.8, 0.76)),
        "dark_tiles": lambda: _tiles(rng, s, (0.35, 0.36, 0.38), count=2, grout=(0.55, 0.55, 0.55)),
        "carpet": lambda: _colorize([(0.45, 0.2, 0.18), (0.28, 0.34, 0.46), (0.52, 0.48, 0.4)][rng.integers(3)],
                                    0.5 * _noise(rng, s, 1.0) + 0.5 * _fbm(rng, s, 30.0, 2), 0.3),
        "plaster": lambda: _colorize(paints[rng.integers(len(paints))], _fbm(rng, s, 40.0, 4), 0.08),
        "ceiling": lambda: _colorize((0.93, 0.93, 0.91), _fbm(rng, s, 40.0, 3), 0.04),
        "fabric": lambda: _colorize([(0.3, 0.36, 0.5), (0.55, 0.3, 0.25), (0.4, 0.45, 0.32)][rng.integers(3)],
                                    0.5 * _noise(rng, s, 1.0) + 0.5 * np.add.outer(np.arange(s) % 4 < 2,
                                                                                   np.arange(s) % 4 < 2) / 2, 0.25),
        "metal": lambda: _colorize((0.62, 0.63, 0.65), _noise(rng, s, 2.0, aniso=(1.0, 0.05)), 0.15),
        "brick": lambda: _bricks(rng, s, (0.58, 0.29, 0.2)),
        "concrete": lambda: _colorize((0.62, 0.61, 0.58), 0.6 * _fbm(rng, s, 30.0, 4) + 0.4 * _noise(rng, s, 1.0), 0.2),
        "sidewalk": lambda: _tiles(rng, s, (0.66, 0.64, 0.6), count=2, grout=(0.45, 0.44, 0.42)),
        "asphalt": lambda: _colorize((0.24, 0.24, 0.25), 0.5 * _noise(rng, s, 0.8) + 0.5 * _fbm(rng, s, 40.0, 3), 0.35),
        "grass": lambda: _colorize((0.3, 0.45, 0.18), 0.5 * _noise(rng, s, 1.0) + 0.5 * _fbm(rng, s, 30.0, 3), 0.45),
        "bark": lambda: _colorize((0.35, 0.26, 0.18), _noise(rng, s, 2.0, aniso=(0.05, 1.0)), 0.5),
        "leaves": lambda: _colorize((0.22, 0.4, 0.16), 0.5 * _noise(rng, s, 2.0) + 0.5 * _fbm(rng, s, 20.0), 0.6),
        "facade_brick": lambda: _facade(rng, s, (0.6, 0.34, 0.26)),
        "facade_concrete": lambda: _facade(rng, s, (0.72, 0.7, 0.66)),
        "facade_paint": lambda: _facade(rng, s, paints[rng.integers(len(paints))]),
        "roof": lambda: _colorize((0.3, 0.3, 0.32), _fbm(rng, s, 30.0, 3), 0.2),
        "crops": lambda: _rows(rng, s, (0.42, 0.33, 0.22), (0.3, 0.47, 0.17)),
        "wheat": lambda: _colorize((0.78, 0.66, 0.36), 0.6 * _noise(rng, s, 1.5, aniso=(1.0, 0.15))
                                   + 0.4 * _fbm(rng, s, 30.0, 3), 0.3),
        "soil": lambda: _rows(rng, s, (0.36, 0.27, 0.19), (0.48, 0.37, 0.26), count=16),
    }
    if name not in recipes:
        raise KeyError(f"unknown texture {name!r}")
    return _to_u8(recipes[name]())


@lru_cache(maxsize=256)
def texture(name: str, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """The named texture (read-only uint8 (size, size, 3)) for a seed; cached."""
    img = _make(name, seed, size)
    img.setflags(write=False)
    return img
