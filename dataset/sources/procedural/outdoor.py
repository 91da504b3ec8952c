"""``procedural:outdoor:SEED``: city blocks under the open sky.

A grid of blocks separated by asphalt streets with lane markings; raised sidewalks (0.12 m curbs)
around each block; blocks hold buildings (textured facades, flat roofs) or a park (lawn, trees,
benches); lamp posts and street trees line the sidewalks; cars are parked along the curbs.
"""

from __future__ import annotations

import math

import numpy as np

from dataset.core.scene import Scene
from dataset.sources.procedural.builder import MeshBuilder

CURB = 0.12
SIDEWALK = 3.0


def build_outdoor(seed: int) -> Scene:
    """The city blocks for ``seed``."""
    rng = np.random.default_rng([seed, 202])
    b = MeshBuilder(seed)
    nx, ny = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    block = float(rng.uniform(28, 40))
    street = float(rng.uniform(8, 11))
    pitch = block + street
    span_x, span_y = nx * pitch + street, ny * pitch + street
    asphalt, line = b.material("asphalt", 4.0), b.material(None, 1.0, (0.92, 0.9, 0.82))
    walk_mat, curb_mat = b.material("sidewalk", 2.0), b.material("concrete", 2.0)
    grass, bark, leaves = b.material("grass", 3.0), b.material("bark", 1.0), b.material("leaves", 1.0)
    metal, lamp = b.material("metal", 1.0), b.material(None, 1.0, (0.95, 0.93, 0.8))
    bench_wood = b.material("light_wood", 1.0)
    facades = [b.material(t, 3.0) for t in ("facade_brick", "facade_concrete", "facade_paint")]
    roof = b.material("roof", 3.0)
    car_colors = [(0.7, 0.1, 0.1), (0.1, 0.2, 0.5), (0.85, 0.85, 0.85), (0.15, 0.15, 0.15), (0.5, 0.5, 0.55)]

    road = b.object("streets", "structure")
    b.quad((0, 0, 0), (span_x, 0, 0), (span_x, span_y, 0), (0, span_y, 0), asphalt, road)
    marks = b.object("lane_markings", "structure")
    for i in range(nx + 1):  # dashed centre lines of the north-south streets
        x = i * pitch + street / 2
        for y in np.arange(1.0, span_y - 3.0, 6.0):
            b.quad((x - 0.08, y, 0.005), (x + 0.08, y, 0.005), (x + 0.08, y + 3, 0.005), (x - 0.08, y + 3, 0.005),
                   line, marks)
    for j in range(ny + 1):
        y = j * pitch + street / 2
        for x in np.arange(1.0, span_x - 3.0, 6.0):
            b.quad((x, y - 0.08, 0.005), (x + 3, y - 0.08, 0.005), (x + 3, y + 0.08, 0.005), (x, y + 0.08, 0.005),
                   line, marks)

    spawns = []
    for i in range(nx):
        for j in range(ny):
            x0, y0 = street + i * pitch, street + j * pitch
            x1, y1 = x0 + block, y0 + block
            sidewalk = b.object(f"sidewalk_{i}_{j}", "structure")
            b.box((x0, y0, 0), (x1, y1, CURB), curb_mat, sidewalk, skip=("-z",), top_mat=walk_mat)
            ix0, iy0, ix1, iy1 = x0 + SIDEWALK, y0 + SIDEWALK, x1 - SIDEWALK, y1 - SIDEWALK
            if rng.random() < 0.3:
                _park(b, rng, (ix0, iy0, ix1, iy1), grass, bark, leaves, bench_wood, metal)
            else:
                _buildings(b, rng, (ix0, iy0, ix1, iy1), facades, roof)
            # Lamp posts and trees along the sidewalk, a car or two at the curb.
            for k, t in enumerate(np.arange(4.0, block - 3.0, 9.0)):
                for px, py in ((x0 + t, y0 + 0.6), (x1 - t, y1 - 0.6), (x0 + 0.6, y1 - t), (x1 - 0.6, y0 + t)):
                    if k % 2 == 0:
                        post = b.object("lamp_post", "prop")
                        b.cylinder(px, py, CURB, CURB + 4.5, 0.07, metal, post, segments=8)
                        b.sphere((px, py, CURB + 4.6), (0.22, 0.22, 0.18), lamp, post, subdivisions=1)
                    else:
                        _tree(b, rng, px, py, CURB, bark, leaves, scale=0.8)
            for _ in range(int(rng.integers(1, 3))):
                side = int(rng.integers(4))
                t = float(rng.uniform(4, block - 8))
                color = car_colors[int(rng.integers(len(car_colors)))]
                if side == 0:
                    _car(b, (x0 + t, y0 - 2.1, x0 + t + 4.4, y0 - 0.3), color)
                elif side == 1:
                    _car(b, (x0 + t, y1 + 0.3, x0 + t + 4.4, y1 + 2.1), color)
                elif side == 2:
                    _car(b, (x0 - 2.1, y0 + t, x0 - 0.3, y0 + t + 4.4), color)
                else:
                    _car(b, (x1 + 0.3, y0 + t, x1 + 2.1, y0 + t + 4.4), color)
            for px, py in ((x0 + 1.8, (y0 + y1) / 2), ((x0 + x1) / 2, y1 - 1.8)):
                spawns.append((px, py, CURB, float(rng.uniform(-math.pi, math.pi))))
    centre = np.array([span_x / 2, span_y / 2, 0.0, 0.0])
    scene = b.build(f"procedural:outdoor:{seed}", np.array(spawns) - centre,
                    {"loader": "procedural", "generator": "outdoor", "seed": seed, "blocks": [nx, ny],
                     "extent": [span_x, span_y]})
    scene.vertices -= centre[:3].astype(np.float32)
    return scene


def _buildings(b: MeshBuilder, rng: np.random.Generator, rect: tuple, facades: list[int], roof: int) -> None:
    """One to three buildings filling the block's interior, split along its longer side."""
    x0, y0, x1, y1 = rect
    count = int(rng.integers(1, 4))
    cuts = np.sort(rng.uniform(0.25, 0.75, count - 1)) if count > 1 else np.array([])
    edges = np.concatenate([[0.0], cuts, [1.0]])
    for a, c in zip(edges[:-1], edges[1:], strict=True):
        bx0, bx1 = x0 + a * (x1 - x0), x0 + c * (x1 - x0)
        storeys = int(rng.integers(2, 8))
        h = storeys * 3.0
        obj = b.object("building", "structure")
        b.box((bx0 + 0.2, y0, 0.0), (bx1 - 0.2, y1, h), facades[int(rng.integers(len(facades)))], obj,
              skip=("-z",), top_mat=roof)


def _park(b: MeshBuilder, rng: np.random.Generator, rect: tuple, grass: int, bark: int, leaves: int,
          wood: int, metal: int) -> None:
    """A lawn with scattered trees and benches."""
    x0, y0, x1, y1 = rect
    lawn = b.object("park_lawn", "structure")
    b.quad((x0, y0, CURB + 0.01), (x1, y0, CURB + 0.01), (x1, y1, CURB + 0.01), (x0, y1, CURB + 0.01), grass, lawn)
    for _ in range(int(rng.integers(4, 9))):
        _tree(b, rng, float(rng.uniform(x0 + 2, x1 - 2)), float(rng.uniform(y0 + 2, y1 - 2)), CURB, bark, leaves)
    for _ in range(int(rng.integers(1, 4))):
        bx, by = float(rng.uniform(x0 + 2, x1 - 4)), float(rng.uniform(y0 + 2, y1 - 2))
        bench = b.object("bench", "prop")
        b.box((bx, by, CURB + 0.42), (bx + 1.6, by + 0.45, CURB + 0.47), wood, bench)
        b.box((bx, by + 0.4, CURB + 0.47), (bx + 1.6, by + 0.45, CURB + 0.9), wood, bench)
        for lx in (bx + 0.1, bx + 1.45):
            b.box((lx, by, CURB), (lx + 0.05, by + 0.45, CURB + 0.42), metal, bench)


def _tree(b: MeshBuilder, rng: np.random.Generator, x: float, y: float, z: float, bark: int, leaves: int,
          scale: float = 1.0) -> None:
    """Trunk cylinder and an ellipsoid crown."""
    obj = b.object("tree", "prop")
    h = float(rng.uniform(2.2, 3.2)) * scale
    b.cylinder(x, y, z, z + h + 0.5, 0.12 * scale + 0.04, bark, obj, segments=8, cap=False)
    r = float(rng.uniform(1.2, 2.0)) * scale
    b.sphere((x, y, z + h + r * 0.8), (r, r, r * 1.1), leaves, obj, subdivisions=2)


def _car(b: MeshBuilder, rect: tuple, color: tuple) -> None:
    """A parked car: body and cabin boxes with dark windows."""
    x0, y0, x1, y1 = rect
    obj = b.object("car", "prop")
    body = b.material(None, 1.0, color)
    glass = b.material(None, 1.0, (0.12, 0.14, 0.17))
    b.box((x0, y0, 0.25), (x1, y1, 0.95), body, obj)
    dx, dy = (x1 - x0) * 0.2, (y1 - y0) * 0.2
    long_x = (x1 - x0) > (y1 - y0)
    cx0, cx1 = (x0 + dx, x1 - dx) if long_x else (x0 + 0.1, x1 - 0.1)
    cy0, cy1 = (y0 + 0.1, y1 - 0.1) if long_x else (y0 + dy, y1 - dy)
    b.box((cx0, cy0, 0.95), (cx1, cy1, 1.45), glass, obj)
    for wx, wy in ((x0 + 0.3, y0), (x1 - 0.9, y0), (x0 + 0.3, y1 - 0.2), (x1 - 0.9, y1 - 0.2)) if long_x else \
            ((x0, y0 + 0.3), (x0, y1 - 0.9), (x1 - 0.2, y0 + 0.3), (x1 - 0.2, y1 - 0.9)):
        b.box((wx, wy, 0.0), (wx + (0.6 if long_x else 0.2), wy + (0.2 if long_x else 0.6), 0.5), glass, obj)
