"""``procedural:indoor:SEED``: a furnished building of 2-3 storeys.

Layout of every storey: a hall strip along the west and the east wall (``HALL`` wide) and rooms in
between, made by recursive splits; every split wall has a door, and every room touching a hall has a
door into it, so every room is reachable. Straight stairs (rise <= 0.18 m, run 0.28 m) climb along
the exterior wall of the west hall on even storeys and of the east hall on odd ones, under an opening
cut in the slab above (with a railing along its open side). Exterior walls have window openings
that look out on the open sky. Rooms get furniture-like props against the walls
and in the middle, kept clear of doors.
"""

from __future__ import annotations

import math

import numpy as np

from dataset.core.scene import Scene
from dataset.sources.procedural.builder import MeshBuilder

HALL = 2.6
"""Width of the hall strips that hold the stairs."""
STAIR_WIDTH = 1.2
RUN = 0.28
SLAB = 0.2
EXT_WALL = 0.2
INT_WALL = 0.1
DOOR_W, DOOR_H = 1.0, 2.1
ROOF_PITCH_DEG = 40.0


def _wall(b: MeshBuilder, along_x: bool, fixed: float, a0: float, a1: float, z0: float, z1: float, t: float,
          openings: list[tuple[float, float, float, float]], mat: int, obj: int) -> None:
    """Straight wall from a0 to a1 (along x at y = fixed, or along y at x = fixed), with openings
    (centre, width, bottom, top) cut out as gaps between solid boxes."""
    def piece(s0: float, s1: float, zb: float, zt: float) -> None:
        if s1 - s0 < 1e-3 or zt - zb < 1e-3:
            return
        if along_x:
            b.box((s0, fixed - t / 2, zb), (s1, fixed + t / 2, zt), mat, obj)
        else:
            b.box((fixed - t / 2, s0, zb), (fixed + t / 2, s1, zt), mat, obj)

    pos = a0
    for c, w, zb, zt in sorted(openings):
        o0, o1 = max(a0, c - w / 2), min(a1, c + w / 2)
        piece(pos, o0, z0, z1)
        piece(o0, o1, z0, zb)
        piece(o0, o1, zt, z1)
        pos = o1
    piece(pos, a1, z0, z1)


def _split_rooms(rng: np.random.Generator, rect: tuple[float, float, float, float], min_side: float,
                 walls: list, depth: int = 0) -> list[tuple[float, float, float, float]]:
    """Recursive split of rect (x0, y0, x1, y1) into rooms; appends (along_x, fixed, a0, a1) split walls."""
    x0, y0, x1, y1 = rect
    w, d = x1 - x0, y1 - y0
    can_x, can_y = w >= 2 * min_side, d >= 2 * min_side
    if (not can_x and not can_y) or (depth >= 2 and rng.random() < 0.35):
        return [rect]
    split_x = can_x and (not can_y or w >= d)
    if split_x:
        s = rng.uniform(x0 + min_side, x1 - min_side)
        walls.append((False, s, y0, y1))
        return (_split_rooms(rng, (x0, y0, s, y1), min_side, walls, depth + 1)
                + _split_rooms(rng, (s, y0, x1, y1), min_side, walls, depth + 1))
    s = rng.uniform(y0 + min_side, y1 - min_side)
    walls.append((True, s, x0, x1))
    return (_split_rooms(rng, (x0, y0, x1, s), min_side, walls, depth + 1)
            + _split_rooms(rng, (x0, s, x1, y1), min_side, walls, depth + 1))


class _Furnisher:
    """Places furniture-like props in a room without overlapping each other or door clearances."""

    def __init__(self, b: MeshBuilder, rng: np.random.Generator, z: float) -> None:
        self.b, self.rng, self.z = b, rng, z
        self.wood = b.material("dark_wood", 1.0)
        self.light = b.material("light_wood", 1.0)
        self.fabric = b.material("fabric", 0.6)
        self.metal = b.material("metal", 1.0)
        self.leaves = b.material("leaves", 0.5)
        self.pot = b.material(None, 1.0, (0.55, 0.3, 0.2))
        self.white = b.material(None, 1.0, (0.9, 0.9, 0.88))

    def furnish(self, room: tuple, blocked: list[tuple]) -> list[tuple]:
        """Add props to room (x0, y0, x1, y1); ``blocked`` rectangles (doors' clearances) stay free."""
        x0, y0, x1, y1 = room
        taken = list(blocked)
        area = (x1 - x0) * (y1 - y0)
        wants = ["shelf", "cabinet", "sofa", "bed", "plant", "plant", "cabinet"]
        self.rng.shuffle(wants)
        n = int(np.clip(area / 6, 2, 6))
        for kind in ["table"] + wants[: n - 1]:
            for _ in range(12):
                rect = self._place(kind, room)
                if rect is not None and not any(_overlap(rect, t, 0.45) for t in taken):
                    self._build(kind, rect)
                    taken.append(rect)
                    break
        return taken[len(blocked):]

    def _place(self, kind: str, room: tuple) -> tuple | None:
        """A footprint (x0, y0, x1, y1, rotated) for ``kind``: against a wall, or central for tables."""
        x0, y0, x1, y1 = room
        size = {"table": (self.rng.uniform(1.2, 1.6), self.rng.uniform(0.8, 0.9)), "shelf": (1.0, 0.35),
                "cabinet": (0.8, 0.5), "sofa": (2.0, 0.9), "bed": (1.6, 2.0), "plant": (0.5, 0.5)}[kind]
        w, d = size
        m = 0.05
        if kind == "table":
            cx = self.rng.uniform(x0 + w / 2 + 1.0, max(x0 + w / 2 + 1.0, x1 - w / 2 - 1.0))
            cy = self.rng.uniform(y0 + d / 2 + 1.0, max(y0 + d / 2 + 1.0, y1 - d / 2 - 1.0))
            rect = (cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2)
        else:
            side = int(self.rng.integers(4))
            if side in (1, 3):
                w, d = d, w  # against an east/west wall: the long side runs along y
            if side == 0:
                cx, cy = self.rng.uniform(x0 + w / 2 + m, x1 - w / 2 - m), y0 + d / 2 + m
            elif side == 2:
                cx, cy = self.rng.uniform(x0 + w / 2 + m, x1 - w / 2 - m), y1 - d / 2 - m
            elif side == 1:
                cx, cy = x1 - w / 2 - m, self.rng.uniform(y0 + d / 2 + m, y1 - d / 2 - m)
            else:
                cx, cy = x0 + w / 2 + m, self.rng.uniform(y0 + d / 2 + m, y1 - d / 2 - m)
            rect = (cx - w / 2, cy - d / 2, cx + w / 2, cy + d / 2)
        if rect[0] < x0 or rect[2] > x1 or rect[1] < y0 or rect[3] > y1 or not all(np.isfinite(rect)):
            return None
        return rect

    def _build(self, kind: str, rect: tuple) -> None:
        b, z = self.b, self.z
        x0, y0, x1, y1 = rect
        obj = b.object(kind, "prop")
        if kind == "table":
            b.box((x0, y0, z + 0.71), (x1, y1, z + 0.75), self.light, obj)
            for lx, ly in ((x0, y0), (x1 - 0.06, y0), (x0, y1 - 0.06), (x1 - 0.06, y1 - 0.06)):
                b.box((lx, ly, z), (lx + 0.06, ly + 0.06, z + 0.71), self.light, obj)
            for cx in np.linspace(x0 + 0.35, x1 - 0.35, 2):
                for cy, back in ((y0 - 0.35, y0 - 0.55), (y1 + 0.35, y1 + 0.55)):
                    chair = b.object("chair", "prop")
                    b.box((cx - 0.22, cy - 0.22, z + 0.42), (cx + 0.22, cy + 0.22, z + 0.46), self.wood, chair)
                    by = min(cy, back) if back < cy else cy + 0.18
                    b.box((cx - 0.22, by, z + 0.46), (cx + 0.22, by + 0.04, z + 0.9), self.wood, chair)
                    for lx in (cx - 0.22, cx + 0.18):
                        for ly in (cy - 0.22, cy + 0.18):
                            b.box((lx, ly, z), (lx + 0.04, ly + 0.04, z + 0.42), self.wood, chair)
        elif kind == "shelf":
            h = float(self.rng.uniform(1.8, 2.1))
            b.box((x0, y0, z), (x1, y1, z + h), self.wood, obj)
        elif kind == "cabinet":
            b.box((x0, y0, z), (x1, y1, z + 0.9), self.white, obj, top_mat=self.light)
        elif kind == "sofa":
            b.box((x0, y0, z), (x1, y1, z + 0.45), self.fabric, obj)
            b.box((x0 + 0.1, y0 + 0.1, z + 0.45), (x1 - 0.1, y1 - 0.1, z + 0.75), self.fabric, obj)
        elif kind == "bed":
            b.box((x0, y0, z), (x1, y1, z + 0.3), self.wood, obj)
            b.box((x0 + 0.05, y0 + 0.05, z + 0.3), (x1 - 0.05, y1 - 0.05, z + 0.5), self.white, obj)
        elif kind == "plant":
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            b.cylinder(cx, cy, z, z + 0.35, 0.2, self.pot, obj, segments=8)
            b.sphere((cx, cy, z + 0.75), (0.3, 0.3, 0.4), self.leaves, obj)


def _overlap(a: tuple, b: tuple, gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def build_indoor(seed: int) -> Scene:
    """The furnished building for ``seed``."""
    rng = np.random.default_rng([seed, 101])
    b = MeshBuilder(seed)
    width, depth = float(rng.uniform(14, 21)), float(rng.uniform(10, 14))
    storeys = int(rng.integers(2, 4))
    height = float(rng.uniform(2.8, 3.2))
    steps = math.ceil(height / 0.18)
    run_len = steps * RUN
    stair_y0 = 1.0
    ceiling, plaster, ext = b.material("ceiling", 2.0), b.material("plaster", 2.0), b.material("brick", 2.0)
    floors = [b.material(t, r) for t, r in (("wood_floor", 1.5), ("tiles", 1.2), ("carpet", 1.0),
                                             ("light_wood", 1.5), ("dark_tiles", 1.2))]
    stair_mat, rail_mat = b.material("light_wood", 1.0), b.material("metal", 1.0)
    spawns = []
    for k in range(storeys):
        z = k * height
        top = z + height - SLAB
        walls = b.object(f"walls_{k}", "structure")
        slab = b.object(f"slab_{k}", "structure")
        # Stairs up from this storey, and the hole above the stairs from the storey below.
        up_west = k % 2 == 0
        hole = None
        if k > 0:
            hx = (EXT_WALL / 2, EXT_WALL / 2 + STAIR_WIDTH) if not up_west else \
                (width - EXT_WALL / 2 - STAIR_WIDTH, width - EXT_WALL / 2)
            hole = (hx[0], stair_y0, hx[1], stair_y0 + (steps - 1) * RUN)  # ends where the last step does
        # Floor surfaces: halls and rooms, each with its own material, the hall split around the hole.
        interior = (HALL, EXT_WALL / 2, width - HALL, depth - EXT_WALL / 2)
        split_walls: list = []
        rooms = _split_rooms(rng, interior, 3.2, split_walls)
        halls = [(EXT_WALL / 2, EXT_WALL / 2, HALL, depth - EXT_WALL / 2),
                 (width - HALL, EXT_WALL / 2, width - EXT_WALL / 2, depth - EXT_WALL / 2)]
        for rect in halls + rooms:
            mat = floors[0] if rect in halls else floors[int(rng.integers(len(floors)))]
            for part in _minus(rect, hole):
                x0, y0, x1, y1 = part
                b.quad((x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z), mat, slab)
        # The slab below this floor (its underside is the ceiling of the storey below), around the hole.
        for part in _minus((0, 0, width, depth), hole):
            x0, y0, x1, y1 = part
            b.box((x0, y0, z - SLAB), (x1, y1, z - 0.001), ceiling, slab, skip=("+z",))
        if hole is not None:
            rail = b.object(f"railing_{k}", "structure")
            rx = hole[2] if not up_west else hole[0]
            b.box((rx - 0.03, hole[1], z), (rx + 0.03, hole[3], z + 1.0), rail_mat, rail)
            b.box((hole[0], hole[1] - 0.03, z), (hole[2], hole[1] + 0.03, z + 1.0), rail_mat, rail)
        # Exterior walls with windows.
        win = [(c, 1.2, z + 0.9, z + 2.2) for c in np.arange(HALL + 1.5, width - HALL - 1.0, 3.0)]
        _wall(b, True, 0.0, 0.0, width, z, top, EXT_WALL, win, ext, walls)
        _wall(b, True, depth, 0.0, width, z, top, EXT_WALL, win, ext, walls)
        side_win = [(c, 1.2, z + 0.9, z + 2.2) for c in np.arange(stair_y0 + run_len + 1.2, depth - 0.8, 2.5)]
        _wall(b, False, 0.0, 0.0, depth, z, top, EXT_WALL, side_win if not up_west else [], ext, walls)
        _wall(b, False, width, 0.0, depth, z, top, EXT_WALL, side_win if up_west else [], ext, walls)
        # Hall walls with a door into every room that touches them; split walls with one door each.
        doors: list[tuple] = []
        for x_wall in (HALL, width - HALL):
            touching = [r for r in rooms if abs(r[0] - x_wall) < 1e-6 or abs(r[2] - x_wall) < 1e-6]
            ops = []
            for r in touching:
                c = float(rng.uniform(r[1] + DOOR_W, r[3] - DOOR_W))
                ops.append((c, DOOR_W, z, z + DOOR_H))
                doors.append((x_wall - 1.0, c - DOOR_W, x_wall + 1.0, c + DOOR_W))
            _wall(b, False, x_wall, EXT_WALL / 2, depth - EXT_WALL / 2, z, top, INT_WALL, ops, plaster, walls)
        for along_x, fixed, a0, a1 in split_walls:
            c = float(rng.uniform(a0 + DOOR_W, a1 - DOOR_W))
            _wall(b, along_x, fixed, a0, a1, z, top, INT_WALL, [(c, DOOR_W, z, z + DOOR_H)], plaster, walls)
            doors.append((c - DOOR_W, fixed - 1.0, c + DOOR_W, fixed + 1.0) if along_x else
                         (fixed - 1.0, c - DOOR_W, fixed + 1.0, c + DOOR_W))
        # Stairs up to the next storey.
        if k < storeys - 1:
            stairs = b.object(f"stairs_{k}", "structure")
            sx = (EXT_WALL / 2, EXT_WALL / 2 + STAIR_WIDTH) if up_west else \
                (width - EXT_WALL / 2 - STAIR_WIDTH, width - EXT_WALL / 2)
            rise = height / steps
            for i in range(steps - 1):
                y0 = stair_y0 + i * RUN
                b.box((sx[0], y0, z), (sx[1], y0 + RUN, z + (i + 1) * rise), plaster, stairs, top_mat=stair_mat)
        # Furniture and spawn points, room by room.
        furnisher = _Furnisher(b, rng, z)
        for room in rooms:
            inner = (room[0] + INT_WALL, room[1] + INT_WALL, room[2] - INT_WALL, room[3] - INT_WALL)
            props = furnisher.furnish(inner, [d for d in doors if _overlap(d, inner, 0.0)])
            spot = _free_spot(inner, props, rng)
            if spot is not None:
                spawns.append((spot[0], spot[1], z, float(rng.uniform(-math.pi, math.pi))))
        spawns.append((HALL / 2 + 0.4 if not up_west else width - HALL / 2 - 0.4, depth - 1.5, z, -math.pi / 2))
    # Top ceiling, then a gable roof too steep to walk on (paths stay inside the building).
    roof = b.object("roof", "structure")
    zt = storeys * height
    b.box((0, 0, zt - SLAB), (width, depth, zt), ceiling, roof, skip=("+z",))
    zr = zt + depth / 2 * math.tan(math.radians(ROOF_PITCH_DEG))
    tiles = b.material("roof", 2.0)
    b.quad((0, 0, zt), (width, 0, zt), (width, depth / 2, zr), (0, depth / 2, zr), tiles, roof)
    b.quad((width, depth, zt), (0, depth, zt), (0, depth / 2, zr), (width, depth / 2, zr), tiles, roof)
    b.triangle((0, depth, zt), (0, 0, zt), (0, depth / 2, zr), ext, roof)
    b.triangle((width, 0, zt), (width, depth, zt), (width, depth / 2, zr), ext, roof)
    centre = np.array([width / 2, depth / 2, 0.0, 0.0])
    spawn_arr = np.array(spawns) - centre
    scene = b.build(f"procedural:indoor:{seed}", spawn_arr,
                    {"loader": "procedural", "generator": "indoor", "seed": seed, "storeys": storeys,
                     "storey_height": height, "footprint": [width, depth]})
    scene.vertices -= centre[:3].astype(np.float32)  # centre the building on the origin
    return scene


def _minus(rect: tuple, hole: tuple | None) -> list[tuple]:
    """rect minus an axis-aligned hole, as up to four rectangles."""
    if hole is None or not _overlap(rect, hole, 0.0):
        return [rect]
    x0, y0, x1, y1 = rect
    hx0, hy0, hx1, hy1 = max(hole[0], x0), max(hole[1], y0), min(hole[2], x1), min(hole[3], y1)
    parts = [(x0, y0, x1, hy0), (x0, hy1, x1, y1), (x0, hy0, hx0, hy1), (hx1, hy0, x1, hy1)]
    return [p for p in parts if p[2] - p[0] > 1e-6 and p[3] - p[1] > 1e-6]


def _free_spot(room: tuple, props: list[tuple], rng: np.random.Generator) -> tuple[float, float] | None:
    """A point in the room at least 0.6 m from every prop footprint and 0.6 m from the walls."""
    x0, y0, x1, y1 = room
    for _ in range(30):
        p = (float(rng.uniform(x0 + 0.6, x1 - 0.6)), float(rng.uniform(y0 + 0.6, y1 - 0.6)))
        if all(not _overlap((p[0], p[1], p[0], p[1]), r, 0.6) for r in props):
            return p
    return None
