"""``procedural:outdoor:SEED``: city blocks under the open sky, in countryside that reaches the horizon.

The town (objects of kind ``structure`` and ``prop``, where cameras walk): a grid of blocks separated by
asphalt streets with lane markings; raised sidewalks (0.12 m curbs) around each block; blocks hold two to
eight buildings on lots (textured facades, flat roofs with rooftop plant, some upper-storey setbacks) or a
park (lawn, trees, benches); lamp posts, street trees, benches, bins, bollards and hydrants line the
sidewalks, traffic lights stand at the crossings, cars are parked along the curbs.

The scenery (objects of kind ``scenery``: rendered, never walked on, collided with or searched for floor)
starts at the town's last street, at ground level: a patchwork of fields out to ``FIELDS`` metres, some
streets continued as country roads with houses along them, tree lines, rows of apartment blocks, and a
closed ring of hills. Ground and hill slope are one closed surface around the town, so every ray that
points below the horizon from a camera in the town lower than the lowest crest (``HILL_HEIGHT[0]`` m) hits
something, whatever the panorama width; nothing is farther than about 450 m from any point of the town
(well within the float16 range of Unreal's depth target, about 655 m, see FACTS.md).
"""

from __future__ import annotations

import math

import numpy as np

from dataset.core.scene import Scene
from dataset.sources.procedural.builder import MeshBuilder

CURB = 0.12
SIDEWALK = 3.0
FIELDS = 150.0
"""Metres of flat countryside between the town's farther sides and the edge of the fields' square (the hills
rise from just inside it)."""
HILL_HEIGHT = (15.0, 40.0)
"""Range of the crest heights of the ring of hills around the town (m)."""
RING_SEGMENTS = 48
"""Segments of the ring of hills. Few and big: geometry all around the town makes bounding boxes that
enclose the town, which every ray cast in it pays for (measured: finer rings, and a second ring of
mountains behind, cast slower)."""
SCENERY = "scenery"


def build_outdoor(seed: int) -> Scene:
    """The town and its countryside for ``seed``."""
    rng = np.random.default_rng([seed, 202])
    b = MeshBuilder(seed)
    nx, ny = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    block = float(rng.uniform(28, 40))
    street = float(rng.uniform(8, 11))
    pitch = block + street
    span_x, span_y = nx * pitch + street, ny * pitch + street
    m = _materials(b)

    road = b.object("streets", "structure")
    b.quad((0, 0, 0), (span_x, 0, 0), (span_x, span_y, 0), (0, span_y, 0), m["asphalt"], road)
    marks = b.object("lane_markings", "structure")
    for i in range(nx + 1):  # dashed centre lines of the north-south streets
        x = i * pitch + street / 2
        for y in np.arange(1.0, span_y - 3.0, 6.0):
            b.quad((x - 0.08, y, 0.005), (x + 0.08, y, 0.005), (x + 0.08, y + 3, 0.005), (x - 0.08, y + 3, 0.005),
                   m["line"], marks)
    for j in range(ny + 1):
        y = j * pitch + street / 2
        for x in np.arange(1.0, span_x - 3.0, 6.0):
            b.quad((x, y - 0.08, 0.005), (x + 3, y - 0.08, 0.005), (x + 3, y + 0.08, 0.005), (x, y + 0.08, 0.005),
                   m["line"], marks)

    spawns = []
    for i in range(nx):
        for j in range(ny):
            x0, y0 = street + i * pitch, street + j * pitch
            x1, y1 = x0 + block, y0 + block
            sidewalk = b.object(f"sidewalk_{i}_{j}", "structure")
            b.box((x0, y0, 0), (x1, y1, CURB), m["curb"], sidewalk, skip=("-z",), top_mat=m["walk"])
            ix0, iy0, ix1, iy1 = x0 + SIDEWALK, y0 + SIDEWALK, x1 - SIDEWALK, y1 - SIDEWALK
            if rng.random() < 0.3:
                _park(b, rng, (ix0, iy0, ix1, iy1), m)
            else:
                _buildings(b, rng, (ix0, iy0, ix1, iy1), m)
            block_spawns = [(x0 + 1.8, (y0 + y1) / 2), ((x0 + x1) / 2, y1 - 1.8)]
            _street_furniture(b, rng, (x0, y0, x1, y1), block_spawns, m)
            for _ in range(int(rng.integers(2, 5))):
                side = int(rng.integers(4))
                t = float(rng.uniform(4, block - 8))
                color = m["cars"][int(rng.integers(len(m["cars"])))]
                if side == 0:
                    _car(b, (x0 + t, y0 - 2.1, x0 + t + 4.4, y0 - 0.3), color)
                elif side == 1:
                    _car(b, (x0 + t, y1 + 0.3, x0 + t + 4.4, y1 + 2.1), color)
                elif side == 2:
                    _car(b, (x0 - 2.1, y0 + t, x0 - 0.3, y0 + t + 4.4), color)
                else:
                    _car(b, (x1 + 0.3, y0 + t, x1 + 2.1, y0 + t + 4.4), color)
            spawns += [(px, py, CURB, float(rng.uniform(-math.pi, math.pi))) for px, py in block_spawns]
    _countryside(b, rng, (span_x, span_y), street, pitch, (nx, ny), m)
    centre = np.array([span_x / 2, span_y / 2, 0.0, 0.0])
    scene = b.build(f"procedural:outdoor:{seed}", np.array(spawns) - centre,
                    {"loader": "procedural", "generator": "outdoor", "seed": seed, "blocks": [nx, ny],
                     "extent": [span_x, span_y]})
    scene.vertices -= centre[:3].astype(np.float32)
    return scene


def _materials(b: MeshBuilder) -> dict:
    """The outdoor materials by role (lists where a role has variants)."""
    return {
        "asphalt": b.material("asphalt", 4.0), "line": b.material(None, 1.0, (0.92, 0.9, 0.82)),
        "walk": b.material("sidewalk", 2.0), "curb": b.material("concrete", 2.0), "grass": b.material("grass", 3.0),
        "bark": b.material("bark", 1.0), "leaves": b.material("leaves", 1.0), "metal": b.material("metal", 1.0),
        "lamp": b.material(None, 1.0, (0.95, 0.93, 0.8)), "wood": b.material("light_wood", 1.0),
        "dark": b.material(None, 1.0, (0.16, 0.17, 0.18)), "red": b.material(None, 1.0, (0.7, 0.12, 0.1)),
        "facades": [b.material(t, 3.0) for t in ("facade_brick", "facade_concrete", "facade_paint")],
        "roof": b.material("roof", 3.0), "tiles": b.material("brick", 2.0, (0.75, 0.45, 0.38)),
        "cars": [(0.7, 0.1, 0.1), (0.1, 0.2, 0.5), (0.85, 0.85, 0.85), (0.15, 0.15, 0.15), (0.5, 0.5, 0.55)],
        "fields": [b.material("grass", 3.0), b.material("grass", 5.0, (0.9, 0.85, 0.6)), b.material("crops", 4.0),
                   b.material("wheat", 4.0), b.material("soil", 4.0)],
        "hills": b.material(None, 1.0, (0.5, 0.62, 0.52)),  # hazy blue-green: far away
    }


def _buildings(b: MeshBuilder, rng: np.random.Generator, rect: tuple, m: dict) -> None:
    """Two to eight buildings on lots filling the block's interior: one or two rows of lots split along the
    longer side, each a box of 2-9 storeys (now and then a 10-16 storey tower), some with a set-back upper
    part, most with rooftop plant."""
    x0, y0, x1, y1 = rect
    long_x = (x1 - x0) >= (y1 - y0)
    rows = 2 if rng.random() < 0.5 else 1
    for r in range(rows):
        count = int(rng.integers(2, 5))
        cuts = np.sort(rng.uniform(0.2, 0.8, count - 1))
        edges = np.concatenate([[0.0], cuts, [1.0]])
        for a, c in zip(edges[:-1], edges[1:], strict=True):
            if (c - a) < 0.12:
                continue
            u0, u1, v0, v1 = a + 0.004, c - 0.004, r / rows, (r + 1) / rows
            if long_x:
                lo = (x0 + u0 * (x1 - x0), y0 + v0 * (y1 - y0))
                hi = (x0 + u1 * (x1 - x0), y0 + v1 * (y1 - y0))
            else:
                lo = (x0 + v0 * (x1 - x0), y0 + u0 * (y1 - y0))
                hi = (x0 + v1 * (x1 - x0), y0 + u1 * (y1 - y0))
            storeys = int(rng.integers(10, 17)) if rng.random() < 0.1 else int(rng.integers(2, 10))
            h = storeys * 3.0
            facade = m["facades"][int(rng.integers(len(m["facades"])))]
            obj = b.object("building", "structure")
            b.box((lo[0], lo[1], 0.0), (hi[0], hi[1], h), facade, obj, skip=("-z",), top_mat=m["roof"])
            w, d = hi[0] - lo[0], hi[1] - lo[1]
            if storeys >= 5 and rng.random() < 0.35:  # set-back upper storeys
                inset = min(w, d) * 0.18
                top = h + 3.0 * int(rng.integers(2, 5))
                b.box((lo[0] + inset, lo[1] + inset, h), (hi[0] - inset, hi[1] - inset, top), facade, obj,
                      skip=("-z",), top_mat=m["roof"])
                h = top
            for _ in range(int(rng.integers(0, 3))):  # rooftop plant: vents, lift housings
                sx, sy = float(rng.uniform(1.5, 4.0)), float(rng.uniform(1.5, 4.0))
                if w < sx + 3 or d < sy + 3:
                    continue
                px, py = float(rng.uniform(lo[0] + 1, hi[0] - 1 - sx)), float(rng.uniform(lo[1] + 1, hi[1] - 1 - sy))
                b.box((px, py, h), (px + sx, py + sy, h + float(rng.uniform(1.0, 2.5))), m["curb"], obj,
                      skip=("-z",))


def _street_furniture(b: MeshBuilder, rng: np.random.Generator, rect: tuple, keep_clear: list[tuple], m: dict) -> None:
    """Lamp posts and street trees every 9 m along the curb of a block's sidewalk, benches, bins, bollards and
    hydrants between them, and a traffic light at each corner; nothing within 2.5 m of ``keep_clear`` points
    (the spawn points)."""
    x0, y0, x1, y1 = rect
    for x, y in ((x0 + 0.5, y0 + 0.5), (x1 - 0.5, y0 + 0.5), (x1 - 0.5, y1 - 0.5), (x0 + 0.5, y1 - 0.5)):
        light = b.object("traffic_light", "prop")
        b.cylinder(x, y, CURB, CURB + 3.4, 0.06, m["metal"], light, segments=6)
        b.box((x - 0.16, y - 0.16, CURB + 2.5), (x + 0.16, y + 0.16, CURB + 3.4), m["dark"], light)
    block = x1 - x0
    for k, t in enumerate(np.arange(4.0, block - 3.0, 4.5)):
        # Positions on the four sides, 0.6 m in from the curb, and the direction along each side.
        for px, py, along_x in ((x0 + t, y0 + 0.6, True), (x1 - t, y1 - 0.6, True), (x0 + 0.6, y1 - t, False),
                                (x1 - 0.6, y0 + t, False)):
            if any(math.hypot(px - sx, py - sy) < 2.5 for sx, sy in keep_clear):
                continue
            if k % 4 == 0:
                post = b.object("lamp_post", "prop")
                b.cylinder(px, py, CURB, CURB + 4.5, 0.07, m["metal"], post, segments=8)
                b.sphere((px, py, CURB + 4.6), (0.22, 0.22, 0.18), m["lamp"], post, subdivisions=1)
            elif k % 4 == 2:
                _tree(b, rng, px, py, CURB, m["bark"], m["leaves"], scale=0.8)
            else:
                _small_item(b, rng, px, py, along_x, m)


def _small_item(b: MeshBuilder, rng: np.random.Generator, x: float, y: float, along_x: bool, m: dict) -> None:
    """A bench along the curb, a litter bin, a pair of bollards or a hydrant at (x, y), or nothing."""
    pick = rng.random()
    if pick < 0.3:
        hx, hy = (0.8, 0.22) if along_x else (0.22, 0.8)
        bench = b.object("bench", "prop")
        b.box((x - hx, y - hy, CURB + 0.42), (x + hx, y + hy, CURB + 0.47), m["wood"], bench)
        for lx, ly in ((x - hx * 0.85, y - hy * 0.85), (x + hx * 0.85, y + hy * 0.85)):
            b.box((lx - 0.03, ly - 0.03, CURB), (lx + 0.03, ly + 0.03, CURB + 0.42), m["metal"], bench)
    elif pick < 0.55:
        bin_ = b.object("litter_bin", "prop")
        b.cylinder(x, y, CURB, CURB + 0.9, 0.25, m["dark"], bin_, segments=8)
    elif pick < 0.75:
        bollards = b.object("bollards", "prop")
        for d in (-0.6, 0.6):
            bx, by = (x + d, y) if along_x else (x, y + d)
            b.cylinder(bx, by, CURB, CURB + 0.8, 0.08, m["metal"], bollards, segments=6)
    elif pick < 0.85:
        hydrant = b.object("hydrant", "prop")
        b.cylinder(x, y, CURB, CURB + 0.6, 0.12, m["red"], hydrant, segments=8)
        b.box((x - 0.2, y - 0.05, CURB + 0.35), (x + 0.2, y + 0.05, CURB + 0.45), m["red"], hydrant)


def _park(b: MeshBuilder, rng: np.random.Generator, rect: tuple, m: dict) -> None:
    """A lawn with scattered trees and benches."""
    x0, y0, x1, y1 = rect
    lawn = b.object("park_lawn", "structure")
    b.quad((x0, y0, CURB + 0.01), (x1, y0, CURB + 0.01), (x1, y1, CURB + 0.01), (x0, y1, CURB + 0.01), m["grass"],
           lawn)
    for _ in range(int(rng.integers(4, 9))):
        _tree(b, rng, float(rng.uniform(x0 + 2, x1 - 2)), float(rng.uniform(y0 + 2, y1 - 2)), CURB, m["bark"],
              m["leaves"])
    for _ in range(int(rng.integers(1, 4))):
        bx, by = float(rng.uniform(x0 + 2, x1 - 4)), float(rng.uniform(y0 + 2, y1 - 2))
        bench = b.object("bench", "prop")
        b.box((bx, by, CURB + 0.42), (bx + 1.6, by + 0.45, CURB + 0.47), m["wood"], bench)
        b.box((bx, by + 0.4, CURB + 0.47), (bx + 1.6, by + 0.45, CURB + 0.9), m["wood"], bench)
        for lx in (bx + 0.1, bx + 1.45):
            b.box((lx, by, CURB), (lx + 0.05, by + 0.45, CURB + 0.42), m["metal"], bench)


def _tree(b: MeshBuilder, rng: np.random.Generator, x: float, y: float, z: float, bark: int, leaves: int,
          scale: float = 1.0, kind: str = "prop", subdivisions: int = 2) -> None:
    """Trunk cylinder and an ellipsoid crown."""
    obj = b.object("tree", kind)
    h = float(rng.uniform(2.2, 3.2)) * scale
    b.cylinder(x, y, z, z + h + 0.5, 0.12 * scale + 0.04, bark, obj, segments=8 if subdivisions > 1 else 5,
               cap=False)
    r = float(rng.uniform(1.2, 2.0)) * scale
    b.sphere((x, y, z + h + r * 0.8), (r, r, r * 1.1), leaves, obj, subdivisions=subdivisions)


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


# ---------------------------------------------------------------------------------------------- scenery


def _cuts(rng: np.random.Generator, lo: float, hi: float, fixed: list[float]) -> np.ndarray:
    """Sorted grid lines from ``lo`` to ``hi``: the ``fixed`` ones and field edges every 25-45 m between."""
    lines = [lo, hi, *fixed]
    anchors = sorted(lines)
    for a, c in zip(anchors[:-1], anchors[1:], strict=True):
        x = a + float(rng.uniform(25, 45))
        while x < c - 20:
            lines.append(x)
            x += float(rng.uniform(25, 45))
    return np.unique(lines)


def _countryside(b: MeshBuilder, rng: np.random.Generator, span: tuple[float, float], street: float, pitch: float,
                 blocks: tuple[int, int], m: dict) -> None:
    """Scenery around the town rectangle [0, span_x] x [0, span_y]: fields to a square ``FIELDS`` m beyond the
    town's farther sides, some streets continued as roads lined with houses, apartment rows, tree lines, then
    the closed ring of hills rising from that square's edge."""
    sx, sy = span
    cx, cy = sx / 2, sy / 2
    half = max(sx, sy) / 2 + FIELDS
    streets_x = [i * pitch for i in range(blocks[0] + 1)]  # west edges of the north-south streets
    streets_y = [j * pitch for j in range(blocks[1] + 1)]
    roads_x = [x for x in streets_x if rng.random() < 0.5] or [streets_x[int(rng.integers(len(streets_x)))]]
    roads_y = [y for y in streets_y if rng.random() < 0.5] or [streets_y[int(rng.integers(len(streets_y)))]]
    xs = _cuts(rng, cx - half, cx + half, [0.0, sx] + [x for r in streets_x for x in (r, r + street)])
    ys = _cuts(rng, cy - half, cy + half, [0.0, sy] + [y for r in streets_y for y in (r, r + street)])
    ground = b.object("countryside_ground", SCENERY)
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            a, c, d, e = xs[i], xs[i + 1], ys[j], ys[j + 1]
            in_x, in_y = a >= 0 and c <= sx, d >= 0 and e <= sy
            if in_x and in_y:
                continue  # the town
            is_road = (in_x and a in roads_x and c - a == street) or (in_y and d in roads_y and e - d == street)
            mat = m["asphalt"] if is_road else m["fields"][int(rng.integers(len(m["fields"])))]
            if rng.random() < 0.5:  # furrows and crop rows run along x or y
                b.quad((a, d, 0), (c, d, 0), (c, e, 0), (a, e, 0), mat, ground)
            else:
                b.quad((c, d, 0), (c, e, 0), (a, e, 0), (a, d, 0), mat, ground)
    # Footprints (x0, y0, x1, y1) already taken: the town and the roads with 3 m verges.
    taken = [(-10.0, -10.0, sx + 10.0, sy + 10.0)]
    taken += [(r - 3, cy - half, r + street + 3, cy + half) for r in roads_x]
    taken += [(cx - half, r - 3, cx + half, r + street + 3) for r in roads_y]
    _houses_along_roads(b, rng, span, street, roads_x, roads_y, half, taken, m)
    _apartment_rows(b, rng, span, taken, m)
    _tree_lines(b, rng, span, half, xs, ys, taken, m)
    _hills(b, rng, (cx, cy), half, m)


def _claim(taken: list[tuple], x0: float, y0: float, x1: float, y1: float) -> bool:
    """Take the footprint [x0, x1] x [y0, y1] when it overlaps none in ``taken``; whether it was free."""
    if any(x0 < c and a < x1 and y0 < e and d < y1 for a, d, c, e in taken):
        return False
    taken.append((x0, y0, x1, y1))
    return True


def _house(b: MeshBuilder, rng: np.random.Generator, lo: tuple, hi: tuple, m: dict) -> None:
    """A house: walls and a pitched roof along its longer side."""
    (x0, y0), (x1, y1) = lo, hi
    wall, ridge = float(rng.uniform(3.0, 6.5)), float(rng.uniform(2.0, 3.5))
    obj = b.object("house", SCENERY)
    facade = m["facades"][int(rng.integers(len(m["facades"])))]
    b.box((x0, y0, 0.0), (x1, y1, wall), facade, obj, skip=("-z", "+z"))
    top = wall + ridge
    if (x1 - x0) >= (y1 - y0):
        ym = (y0 + y1) / 2
        b.quad((x0, y0, wall), (x1, y0, wall), (x1, ym, top), (x0, ym, top), m["tiles"], obj)
        b.quad((x1, y1, wall), (x0, y1, wall), (x0, ym, top), (x1, ym, top), m["tiles"], obj)
        b.triangle((x0, y1, wall), (x0, y0, wall), (x0, ym, top), facade, obj)
        b.triangle((x1, y0, wall), (x1, y1, wall), (x1, ym, top), facade, obj)
    else:
        xm = (x0 + x1) / 2
        b.quad((x1, y0, wall), (x1, y1, wall), (xm, y1, top), (xm, y0, top), m["tiles"], obj)
        b.quad((x0, y1, wall), (x0, y0, wall), (xm, y0, top), (xm, y1, top), m["tiles"], obj)
        b.triangle((x0, y0, wall), (x1, y0, wall), (xm, y0, top), facade, obj)
        b.triangle((x1, y1, wall), (x0, y1, wall), (xm, y1, top), facade, obj)


def _houses_along_roads(b: MeshBuilder, rng: np.random.Generator, span: tuple[float, float], street: float,
                        roads_x: list[float], roads_y: list[float], half: float, taken: list[tuple],
                        m: dict) -> None:
    """Houses set back 4-8 m from both sides of each country road, from 25 m beyond the town's edge to 30 m
    before the hills."""
    sx, sy = span
    for along_x, roads in ((False, roads_x), (True, roads_y)):
        for r in roads:
            for sign in (-1.0, 1.0):  # both directions out of town
                edge = ((sx if sign > 0 else 0.0) if along_x else (sy if sign > 0 else 0.0))
                end = (sx / 2 if along_x else sy / 2) + sign * (half - 30.0)
                t = edge + sign * float(rng.uniform(25, 40))
                while (t - end) * sign < 0:
                    for west in (True, False):  # the two sides of the road
                        w, d, gap = float(rng.uniform(8, 13)), float(rng.uniform(7, 10)), float(rng.uniform(4, 8))
                        a0 = r - gap - d if west else r + street + gap
                        t0 = min(t, t + sign * w)
                        x0, y0, x1, y1 = (t0, a0, t0 + w, a0 + d) if along_x else (a0, t0, a0 + d, t0 + w)
                        if rng.random() < 0.8 and _claim(taken, x0, y0, x1, y1):
                            _house(b, rng, (x0, y0), (x1, y1), m)
                    t += sign * float(rng.uniform(16, 26))


def _apartment_rows(b: MeshBuilder, rng: np.random.Generator, span: tuple[float, float], taken: list[tuple],
                    m: dict) -> None:
    """Rows of 12-30 m apartment blocks on two or three sides, 60-110 m beyond the town's edge."""
    sx, sy = span
    for side in rng.permutation(4)[: int(rng.integers(2, 4))]:
        dist = float(rng.uniform(60, 110))
        t = float(rng.uniform(-40, 0))
        while t < (sx if side < 2 else sy) + 40:
            w, d, h = float(rng.uniform(14, 30)), float(rng.uniform(10, 16)), 3.0 * int(rng.integers(4, 11))
            x0, y0, x1, y1 = ((t, -dist - d, t + w, -dist), (t, sy + dist, t + w, sy + dist + d),
                              (-dist - d, t, -dist, t + w), (sx + dist, t, sx + dist + d, t + w))[side]
            if _claim(taken, x0, y0, x1, y1):
                obj = b.object("apartment_block", SCENERY)
                b.box((x0, y0, 0.0), (x1, y1, h), m["facades"][int(rng.integers(len(m["facades"])))], obj,
                      skip=("-z",), top_mat=m["roof"])
            t += w + float(rng.uniform(6, 20))


def _tree_lines(b: MeshBuilder, rng: np.random.Generator, span: tuple[float, float], half: float, xs: np.ndarray,
                ys: np.ndarray, taken: list[tuple], m: dict) -> None:
    """Hedgerows: trees every 12-24 m along a fifth of the field edges, where nothing else stands; beyond 60 m
    from the town their crowns are icosahedra (20 triangles)."""
    sx, sy = span
    cx, cy = sx / 2, sy / 2
    lines = [(x, True) for x in xs[1:-1]] + [(y, False) for y in ys[1:-1]]
    for k in rng.permutation(len(lines))[: max(2, len(lines) // 5)]:
        value, vertical = lines[k]
        mid = cy if vertical else cx
        t = mid - half + float(rng.uniform(5, 15))
        while t < mid + half - 5:
            x, y = (value, t) if vertical else (t, value)
            if _claim(taken, x - 2.5, y - 2.5, x + 2.5, y + 2.5):
                near = max(-x, x - sx, -y, y - sy) < 60
                _tree(b, rng, x, y, 0.0, m["bark"], m["leaves"], scale=float(rng.uniform(1.5, 2.5)), kind=SCENERY,
                      subdivisions=1 if near else 0)
            t += float(rng.uniform(12, 24))


def _periodic_noise(rng: np.random.Generator, angles: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Smooth values in [lo, hi] around a circle: a few random sine harmonics of the angle, rescaled."""
    v = sum(rng.uniform(0.5, 1.0) / k * np.sin(k * angles + rng.uniform(0, 2 * math.pi)) for k in (1, 2, 3, 5, 8))
    v = (v - v.min()) / max(v.max() - v.min(), 1e-9)
    return lo + (hi - lo) * v


def _hills(b: MeshBuilder, rng: np.random.Generator, centre: tuple[float, float], half: float, m: dict) -> None:
    """The ring of hills around the fields' square: ``RING_SEGMENTS`` slope quads.

    The slope starts 2 m under the fields, inside the square, so it cuts through the ground with no crack
    and hides the square's corners behind its crest. With the fields it closes every below-horizon view
    from the town.
    """
    cx, cy = centre
    angles = np.linspace(-math.pi, math.pi, RING_SEGMENTS, endpoint=False)
    ring = np.column_stack([np.cos(angles), np.sin(angles)])
    foot_r, crest_r = half - 15.0, half + 40.0 + _periodic_noise(rng, angles, 0, 40)
    foot = np.column_stack([cx + foot_r * ring[:, 0], cy + foot_r * ring[:, 1], np.full(len(angles), -2.0)])
    crest = np.column_stack([cx + crest_r * ring[:, 0], cy + crest_r * ring[:, 1],
                             _periodic_noise(rng, angles, *HILL_HEIGHT)])
    hills = b.object("hills", SCENERY)
    for k in range(RING_SEGMENTS):
        nk = (k + 1) % RING_SEGMENTS
        b.quad(foot[nk], foot[k], crest[k], crest[nk], m["hills"], hills)  # counter-clockwise seen from the town
