"""Walkable surfaces of a scene, as a 2.5D grid of floor cells with headroom, eroded by the camera radius.

Why a layered height grid rather than projected triangles: scenes are triangle soups (overlapping,
unwelded, several storeys above each other, wound either way), and what matters for a walking camera is
not a triangle's slope alone but whether there is floor with enough free space above it, whether
neighbouring floor is within a step (stairs, ramps) and how far the nearest wall or drop is. So:

1. Columns of vertical rays on a regular XY grid (``cell_size``) are cast downward and *peeled*: every
   surface each column crosses is found, top to bottom (up to ``max_layers``). Faces of ``"scenery"``
   objects (distant terrain and building rows that only fill the horizon) are left out, and the grid
   spans the XY extent of the other faces only.
2. A hit is a floor candidate when its surface is within ``max_slope_deg`` of horizontal, *whichever side
   it faces* (glTF/OBJ files come with either winding, or double-sided), and the free space above it, up
   to the next surface (or the open sky), is at least ``clearance`` (headroom for a camera at eye
   height). Surfaces under tables or under low ceilings are rejected.
3. Floor cells are connected to their 8 neighbours when their heights differ by at most
   ``step_height``: stairs and ramps connect storeys; ledges and walls do not.
4. Erosion: a cell closer than ``camera_radius`` (Chebyshev, in cells) to any cell that lacks a
   connected neighbour (a wall, an obstacle, a drop) is removed, so the camera never grazes walls.
5. Connected components smaller than ``min_region_area`` are dropped (table tops, window sills).
6. Ground-connected regions (``regions="ground"``, the default) are kept, the others *excluded* (kept
   apart in ``excluded_z`` for plots, never walked):

   - a scene with spawn points keeps the regions holding one (within ``SPAWN_SEARCH`` of the point,
     up to ``SPAWN_DROP`` above its floor): spawn points mark where a scene is meant to be walked;
   - otherwise (or when no spawn point lands on a region) the *ground* is kept: the regions at the
     bottom of the scene, where at least some cells (the 5th percentile) have at most
     ``ground_max_depth`` of geometry below them down to the lowest surface of their column (a floor
     slab or a plaza's paving, not a storey, a building or a closed solid), and of those the ones of at
     least ``ground_share`` of the largest one's area (streets, courtyards, ground floors), each with
     everything walking reaches from it: a region is a connected component, so stairs and ramps up to
     a roof or an upper storey put it in the region.

   Why this rule and not the winding: with the winding unknown, the top of a closed solid is a
   surface open to the sky like any plaza, and the inside of a closed solid (a building modelled as a
   box) has floor and headroom like any room. What marks them is what lies below and what reaches
   them: roofs, wall tops, table tops and ledges stand over a building, a wall or the ground, and
   nothing walkable reaches them; the top of a level's hull seen from the void above it (a Quake
   level's sky brushes, a closed room's ceiling) stands over the level and holds no spawn point; the
   insides of closed buildings and thick walls are small next to the streets around them. A scene
   whose ground is a block thicker than ``ground_max_depth`` (a terrain modelled as a solid), or which
   is enclosed in a sky dome that is not marked ``"scenery"``, has no recognisable ground: give it
   spawn points or use ``regions="all"``.

The result answers the questions the route graph and camera paths ask: which cells are walkable, the
floor height under a point, whether a 2.5D straight walk between two floor points stays walkable, and
2D polygons per region and floor level for plots and export. A navigation mesh exported from Unreal
(or any walkable triangle mesh) can replace step 2's floor test: ``extract_walkable(scene,
navmesh=(vertices, faces))`` peels the navmesh instead and still checks headroom against the scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dataset.core.raycast import EmbreeCaster
from dataset.core.scene import Scene

DEFAULT_STEP_HEIGHT = 0.3
"""Step height in metres when neither the config nor the scene gives one (human stairs rise <= 0.2 m)."""
NEIGHBOURS = ((1, 0), (0, 1), (1, 1), (1, -1))
"""Half of the 8-neighbourhood (the other half is the same edges reversed)."""
PASSAGE_HEIGHTS = (0.4, 1.2)
"""Heights above the floor (m) at which passage between neighbouring cells is tested with rays."""
SCENERY_KIND = "scenery"
"""Object kind never walked on, collided with or searched for floor (``SceneObject.kind``)."""
REGION_CHOICES = ("ground", "all")
"""Which walkable regions get paths: the ground-connected ones, or every region the floor test finds."""
SPAWN_SEARCH = 1.0
"""Horizontal distance (m) within which a spawn point picks its region (spawns near walls sit in eroded cells)."""
SPAWN_DROP = 1.5
"""Height (m) a spawn point may float above its floor (level designers place them high; games drop the player)."""


@dataclass
class WalkableConfig:
    """Parameters of the walkable-surface extraction (metres and degrees)."""

    cell_size: float = 0.15
    """XY grid resolution."""
    max_slope_deg: float = 35.0
    """Steepest surface that still counts as floor (ramps; stairs are flat treads)."""
    clearance: float = 2.0
    """Free height needed above the floor: the camera's eye height plus margin."""
    step_height: float | None = None
    """Largest height difference between neighbouring cells that one can step (stair rises); None: the
    scene's own (``provenance["step_height_m"]``, e.g. 18 units in Quake 3 levels) or 0.3 m."""
    camera_radius: float = 0.3
    """Distance kept from walls, obstacles and drops."""
    min_region_area: float = 2.0
    """Smaller connected floor regions are dropped (table tops, sills)."""
    max_layers: int = 24
    """Surfaces peeled per grid column (storeys x surfaces per storey)."""
    max_cells: int = 2_000_000
    """Upper bound on grid columns: larger scenes get a coarser cell size (with a warning in ``notes``)."""
    regions: str = "ground"
    """``ground``: only ground-connected regions (the spawn points' regions, else the large regions at the
    bottom of the scene and what walking reaches from them); ``all``: every region, roofs and ledges included."""
    ground_max_depth: float = 1.0
    """Most geometry (m) below ground floor, down to the lowest surface of its column: a slab, not a storey."""
    ground_share: float = 0.25
    """Share of the largest ground region's area a ground region needs to be kept (no spawn points)."""

    def __post_init__(self) -> None:
        if self.regions not in REGION_CHOICES:
            raise ValueError(f"regions {self.regions!r} is not one of {', '.join(REGION_CHOICES)}")


@dataclass
class WalkableSurface:
    """Walkable floor of a scene as a layered height grid."""

    origin: np.ndarray
    """(2,) XY of the centre of cell (0, 0)."""
    cell: float
    """Cell size in metres."""
    z: np.ndarray
    """(ny, nx, L) float32 floor height of each layer of each column; NaN where not walkable."""
    region: np.ndarray
    """(ny, nx, L) int32 connected region of each walkable layer, -1 elsewhere."""
    excluded_z: np.ndarray
    """(ny, nx, L) float32 floor height of the regions left out by ``config.regions`` (roofs, ledges): never
    walked, kept for plots; NaN elsewhere."""
    excluded_region: np.ndarray
    """(ny, nx, L) int32 region of each excluded layer (numbered 0.. by decreasing size), -1 elsewhere."""
    config: WalkableConfig
    """The configuration it was extracted with."""
    notes: list[str]
    """Human-readable remarks (coarsened grid, nothing found, ...)."""

    @property
    def num_cells(self) -> int:
        return int(np.isfinite(self.z).sum())

    @property
    def num_regions(self) -> int:
        return int(self.region.max()) + 1 if self.region.size else 0

    @property
    def num_excluded_regions(self) -> int:
        return int(self.excluded_region.max()) + 1 if self.excluded_region.size else 0

    def area(self) -> float:
        """Walkable area in m² (all kept regions, all storeys)."""
        return self.num_cells * self.cell**2

    def excluded_area(self) -> float:
        """Area in m² of the excluded regions (floor nobody walks to: roofs, wall tops, ledges)."""
        return int(np.isfinite(self.excluded_z).sum()) * self.cell**2

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points (N, 3) of every walkable layer cell, flat layer index (N,), region (N,))."""
        iy, ix, il = np.nonzero(np.isfinite(self.z))
        pts = np.stack([self.origin[0] + ix * self.cell, self.origin[1] + iy * self.cell,
                        self.z[iy, ix, il]], axis=1).astype(np.float64)
        flat = np.ravel_multi_index((iy, ix, il), self.z.shape)
        return pts, flat, self.region[iy, ix, il]

    def cell_of(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Column indices (ix, iy) of XY points and whether they fall inside the grid."""
        xy = np.asarray(xy, np.float64)
        ix = np.rint((xy[..., 0] - self.origin[0]) / self.cell).astype(np.int64)
        iy = np.rint((xy[..., 1] - self.origin[1]) / self.cell).astype(np.int64)
        ny, nx = self.z.shape[:2]
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        return np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1), inside

    def floor_at(self, points: np.ndarray, tolerance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Floor height under each point (N, 3) nearest to the point's z, and its region (-1 if none).

        Only layers within ``tolerance`` (default: ``step_height``) of the point's z count, so a point on
        the first floor never snaps to the second floor above it.
        """
        points = np.asarray(points, np.float64).reshape(-1, 3)
        tol = self.config.step_height if tolerance is None else tolerance
        ix, iy, inside = self.cell_of(points[:, :2])
        layers = self.z[iy, ix].astype(np.float64)  # (N, L)
        diff = np.abs(layers - points[:, 2:3])
        diff[~np.isfinite(diff)] = np.inf
        best = np.argmin(diff, axis=1)
        rows = np.arange(len(points))
        ok = inside & (diff[rows, best] <= tol)
        z = np.where(ok, layers[rows, best], np.nan)
        reg = np.where(ok, self.region[iy, ix, best], -1)
        return z, reg

    def walk(self, a: np.ndarray, b: np.ndarray, spacing: float | None = None) -> np.ndarray:
        """Whether straight 2.5D walks from floor points a (E, 3) to b (E, 3) stay on walkable floor.

        The walk follows the floor step by step (``spacing``, default half a cell), each step within
        ``step_height`` of the previous one, and must end on b's floor layer.
        """
        a = np.asarray(a, np.float64).reshape(-1, 3)
        b = np.asarray(b, np.float64).reshape(-1, 3)
        spacing = spacing or self.cell / 2
        length = np.linalg.norm(b[:, :2] - a[:, :2], axis=1)
        steps = np.maximum(1, np.ceil(length / spacing).astype(np.int64))
        ok = np.ones(len(a), bool)
        z = a[:, 2].copy()
        z0, _ = self.floor_at(a)
        ok &= np.isfinite(z0)
        for k in range(1, int(steps.max(initial=1)) + 1):
            active = ok & (k <= steps)
            if not active.any():
                break
            f = np.minimum(k / steps[active], 1.0)[:, None]
            p = a[active, :2] * (1 - f) + b[active, :2] * f
            zk, _ = self.floor_at(np.column_stack([p, z[active]]))
            good = np.isfinite(zk)
            idx = np.flatnonzero(active)
            ok[idx[~good]] = False
            z[idx[good]] = zk[good]
        ok &= np.abs(z - b[:, 2]) <= self.config.step_height
        return ok

    def levels(self, region: int | None = None, bin_height: float = 0.5,
               min_area: float = 2.0) -> list[tuple[float, float]]:
        """Floor levels (z_min, z_max) of a region (or of all regions): runs of height bins holding at
        least ``min_area`` m². Stair and ramp cells, spread thinly over many heights, belong to none.
        """
        z = self.z[(self.region == region) if region is not None else (self.region >= 0)].astype(np.float64)
        if len(z) == 0:
            return []
        lo = math.floor(z.min() / bin_height) * bin_height
        edges = np.arange(lo, z.max() + 2 * bin_height, bin_height)
        counts, edges = np.histogram(z, edges)
        dense = counts * self.cell**2 >= max(min_area, 0.02 * len(z) * self.cell**2)
        if not dense.any():
            return [(float(z.min()), float(z.max()))]
        out = []
        for run in np.split(np.flatnonzero(dense), np.flatnonzero(np.diff(np.flatnonzero(dense)) > 1) + 1):
            inside = z[(z >= edges[run[0]]) & (z < edges[run[-1] + 1])]
            out.append((float(inside.min()), float(inside.max())))
        return out

    def polygons(self) -> list[dict]:
        """Shapely polygons (with holes) per region and floor level: [{region, z_min, z_max, geometry}].

        Every walkable cell belongs to the level nearest its height (stairs to the closer storey).
        """
        import shapely
        from shapely.geometry import box

        out = []
        for r in range(self.num_regions):
            levels = self.levels(r)
            centres = np.array([(a + b) / 2 for a, b in levels])
            iy, ix, il = np.nonzero(self.region == r)
            nearest = np.argmin(np.abs(self.z[iy, ix, il][:, None] - centres[None, :]), axis=1)
            for k, (z_lo, z_hi) in enumerate(levels):
                sel = nearest == k
                boxes = _row_runs(ix[sel], iy[sel], self.origin, self.cell)
                geometry = shapely.union_all([box(*b) for b in boxes]).simplify(self.cell / 2)
                out.append(dict(region=r, z_min=z_lo, z_max=z_hi, geometry=geometry))
        return out


def _row_runs(ix: np.ndarray, iy: np.ndarray, origin: np.ndarray, cell: float) -> list[tuple]:
    """Merge cells into horizontal runs (x0, y0, x1, y1): far fewer boxes to union."""
    order = np.lexsort((ix, iy))
    ix, iy = ix[order], iy[order]
    brk = np.flatnonzero((np.diff(ix) != 1) | (np.diff(iy) != 0))
    starts = np.concatenate([[0], brk + 1])
    ends = np.concatenate([brk, [len(ix) - 1]])
    h = cell / 2
    return [(origin[0] + ix[s] * cell - h, origin[1] + iy[s] * cell - h,
             origin[0] + ix[e] * cell + h, origin[1] + iy[s] * cell + h) for s, e in zip(starts, ends, strict=True)]


def _peel(caster: EmbreeCaster, xs: np.ndarray, ys: np.ndarray, top: float, max_layers: int,
          normals_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heights (ny, nx, L) and up-components of the normals of every surface crossed by downward columns."""
    ny, nx = len(ys), len(xs)
    gx, gy = np.meshgrid(xs, ys)
    origins = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, top)]).astype(np.float32)
    down = np.zeros_like(origins)
    down[:, 2] = -1.0
    heights = np.full((gx.size, max_layers), np.nan, np.float32)
    nz = np.zeros((gx.size, max_layers), np.float32)
    active = np.arange(gx.size)
    used = 1
    for layer in range(max_layers):
        if len(active) == 0:
            break
        used = layer + 1
        hits = caster.cast(np.ascontiguousarray(origins[active]), np.ascontiguousarray(down[active]))
        hit = hits.prim >= 0
        active, t, prim = active[hit], hits.t[hit], hits.prim[hit]
        z = origins[active, 2] - t
        heights[active, layer] = z
        nz[active, layer] = normals_z[prim]
        origins[active, 2] = z - 1e-3  # continue just below this surface
    # Only the layers some column reached (most scenes use a few of max_layers): less work downstream.
    return heights[:, :used].reshape(ny, nx, used), nz[:, :used].reshape(ny, nx, used)


def extract_walkable(scene: Scene, config: WalkableConfig | None = None,
                     navmesh: tuple[np.ndarray, np.ndarray] | None = None) -> WalkableSurface:
    """Walkable floor of ``scene`` (or of the given navigation mesh, with headroom checked in the scene), with
    the regions ``config.regions`` leaves out moved to ``excluded_z``."""
    cfg = config or WalkableConfig()
    if cfg.step_height is None:
        cfg = replace(cfg, step_height=float(scene.provenance.get("step_height_m", DEFAULT_STEP_HEIGHT)))
    notes: list[str] = []
    considered = walkable_faces(scene)
    faces = scene.faces[considered]
    if len(faces):
        used = scene.vertices[faces.reshape(-1)].astype(np.float64)
        lo, hi = used.min(0), used.max(0)
    else:
        notes.append(f"every face of the scene is {SCENERY_KIND!r}: nothing to walk on")
        lo = hi = np.zeros(3)
    cell = cfg.cell_size
    span = np.maximum(hi[:2] - lo[:2], cell)
    if np.prod(span / cell) > cfg.max_cells:
        cell = float(math.sqrt(np.prod(span) / cfg.max_cells))
        notes.append(f"scene is {span[0]:.0f} x {span[1]:.0f} m: grid coarsened to {cell:.2f} m cells")
    xs = np.arange(lo[0] + cell / 2, hi[0], cell)
    ys = np.arange(lo[1] + cell / 2, hi[1], cell)
    if len(xs) == 0 or len(ys) == 0:
        xs, ys = np.array([(lo[0] + hi[0]) / 2]), np.array([(lo[1] + hi[1]) / 2])
    top = float(hi[2]) + 1.0
    origin = np.array([xs[0], ys[0]])

    if len(faces):
        caster = EmbreeCaster(scene.vertices, faces)
        try:
            heights, nz = _peel(caster, xs, ys, top, cfg.max_layers, scene.face_normals()[considered, 2])
            if navmesh is None:
                floor = _floor_candidates(heights, nz, cfg)
            else:
                floor = _navmesh_floor(navmesh, xs, ys, top, cfg, heights)
            z, region = _connect_and_erode(floor, origin, cell, cfg, caster)
            lowest = np.where(np.isnan(heights), np.inf, heights).min(axis=2)
        finally:
            caster.close()
    else:
        z, region = np.full((1, 1, 1), np.nan, np.float32), np.full((1, 1, 1), -1, np.int32)
        lowest = np.full((1, 1), np.inf, np.float32)
    keep, why = (np.ones(int(region.max()) + 1, bool), "") if cfg.regions == "all" else \
        _ground_regions(z, region, lowest, origin, cell, cfg, scene.spawn_points)
    kept_z, kept_region, excluded_z, excluded_region = _split_regions(z, region, keep)
    excluded = f"{int((~keep).sum())} isolated regions ({int(np.isfinite(excluded_z).sum()) * cell**2:.0f} m²"
    use_all = "set `sampling: {regions: all}` (WalkableConfig.regions='all') to use them"
    if len(keep) == 0:
        notes.append("no walkable surface: no horizontal floor with "
                     f"{cfg.clearance:.1f} m headroom and {2 * cfg.camera_radius:.1f} m width was found "
                     "(check the up axis of the scene, or lower clearance / camera_radius)")
    elif not keep.any():
        notes.append(f"no walkable surface on the ground: the scene's {excluded}) all stand over other geometry "
                     "(roofs, ledges, the top of a closed room or level seen from above); give the scene spawn "
                     f"points, or {use_all}")
    elif not keep.all():
        notes.append(f"{int(keep.sum())} of {len(keep)} walkable regions get paths ({why}); {excluded}, e.g. "
                     f"roofs, wall tops, ledges) are excluded: {use_all}")
    return WalkableSurface(origin, cell, kept_z, kept_region, excluded_z, excluded_region, cfg, notes)


def walkable_faces(scene: Scene) -> np.ndarray:
    """(F,) bool: the faces floor extraction and collision consider (all but those of scenery objects)."""
    scenery = np.array([o.kind == SCENERY_KIND for o in scene.objects], bool)
    return ~scenery[scene.face_object]


def _floor_candidates(heights: np.ndarray, nz: np.ndarray, cfg: WalkableConfig) -> np.ndarray:
    """(ny, nx, L) floor heights where a surface is horizontal enough, facing up or down (the winding of
    mesh files is not to be trusted), and has headroom up to the surface above (or the open sky)."""
    min_nz = math.cos(math.radians(cfg.max_slope_deg))
    above = np.concatenate([np.full(heights.shape[:2] + (1,), np.inf, np.float32), heights[..., :-1]], axis=2)
    above = np.where(np.isnan(above), np.inf, above)
    ok = np.isfinite(heights) & (np.abs(nz) >= min_nz) & ((above - heights) >= cfg.clearance)
    return np.where(ok, heights, np.nan)


def _ground_regions(z: np.ndarray, region: np.ndarray, lowest: np.ndarray, origin: np.ndarray, cell: float,
                    cfg: WalkableConfig, spawns: np.ndarray) -> tuple[np.ndarray, str]:
    """(R,) bool: the ground-connected regions (rule in the module docstring), and why, in words.

    ``lowest`` (ny, nx) is the height of the lowest surface each column crossed (inf where it crossed none).
    """
    n = int(region.max()) + 1
    if n == 0:
        return np.zeros(0, bool), ""
    if len(spawns):
        hit = _spawn_regions(z, region, origin, cell, cfg, spawns)
        if len(hit):
            keep = np.zeros(n, bool)
            keep[hit] = True
            return keep, f"those holding one of the scene's {len(spawns)} spawn points"
    iy, ix, il = np.nonzero(region >= 0)
    labels = region[iy, ix, il]
    depth = (z[iy, ix, il] - lowest[iy, ix]).astype(np.float64)
    counts = np.bincount(labels, minlength=n)
    order = np.lexsort((depth, labels))  # by region, then depth
    starts = np.searchsorted(labels[order], np.arange(n))
    shallow = depth[order][starts + (0.05 * (counts - 1)).astype(np.int64)] <= cfg.ground_max_depth
    keep = shallow & (counts >= cfg.ground_share * counts[shallow].max(initial=0))
    why = ("the ground: regions at the bottom of the scene and what walking reaches from them"
           + ("; no spawn point lands on walkable floor" if len(spawns) else ""))
    return keep, why


def _spawn_regions(z: np.ndarray, region: np.ndarray, origin: np.ndarray, cell: float, cfg: WalkableConfig,
                   spawns: np.ndarray) -> np.ndarray:
    """Regions holding a spawn point: that of the nearest walkable cell within ``SPAWN_SEARCH`` horizontally,
    at most ``SPAWN_DROP`` below and a step height above each point (unique region ids)."""
    r = int(math.ceil(SPAWN_SEARCH / cell))
    dx, dy = (a.ravel() for a in np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1)))
    dist = np.hypot(dx, dy) * cell
    dx, dy, dist = dx[dist <= SPAWN_SEARCH], dy[dist <= SPAWN_SEARCH], dist[dist <= SPAWN_SEARCH]
    ny, nx = z.shape[:2]
    ix = np.rint((spawns[:, :1] - origin[0]) / cell).astype(np.int64) + dx  # (S, K)
    iy = np.rint((spawns[:, 1:2] - origin[1]) / cell).astype(np.int64) + dy
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ix, iy = np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1)
    dz = z[iy, ix] - spawns[:, 2, None, None]  # (S, K, L)
    with np.errstate(invalid="ignore"):
        near = inside[..., None] & (dz <= cfg.step_height) & (dz >= -SPAWN_DROP)
    cost = np.where(near, dist[None, :, None] + 0.01 * np.abs(dz), np.inf).reshape(len(spawns), -1)
    best = cost.argmin(axis=1)
    found = np.isfinite(cost[np.arange(len(spawns)), best])
    k, layer = np.unravel_index(best, near.shape[1:])
    rows = np.arange(len(spawns))
    return np.unique(region[iy[rows, k], ix[rows, k], layer][found])


def _split_regions(z: np.ndarray, region: np.ndarray,
                   keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z, region) of the kept regions, then of the others, each renumbered 0.. in their (decreasing) size order."""
    out = []
    for sel in (keep, ~keep):
        remap = np.full(len(keep) + 1, -1, np.int32)  # region -1 indexes the last entry: stays -1
        remap[np.flatnonzero(sel)] = np.arange(int(sel.sum()))
        r = remap[region]
        out += [np.where(r >= 0, z, np.nan).astype(np.float32), r]
    return out[0], out[1], out[2], out[3]


def _navmesh_floor(navmesh: tuple[np.ndarray, np.ndarray], xs: np.ndarray, ys: np.ndarray, top: float,
                   cfg: WalkableConfig, scene_heights: np.ndarray) -> np.ndarray:
    """Floor heights from a navigation mesh, kept where the scene leaves ``clearance`` above them."""
    vertices, faces = navmesh
    nav = EmbreeCaster(np.asarray(vertices, np.float32), np.asarray(faces, np.int32))
    try:
        tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
        up = np.ones(len(faces), np.float32)  # every navmesh face is floor, whatever its winding
        nav_h, _ = _peel(nav, xs, ys, max(top, float(tri[..., 2].max()) + 1.0), cfg.max_layers, up)
    finally:
        nav.close()
    # Headroom: the lowest scene surface strictly above the navmesh height (small tolerance for the floor itself).
    sh = np.where(np.isnan(scene_heights), -np.inf, scene_heights)[:, :, None, :]  # (ny, nx, 1, Ls)
    above = np.where(sh > nav_h[..., None] + 0.05, sh, np.inf).min(axis=3)
    ok = np.isfinite(nav_h) & ((above - nav_h) >= cfg.clearance)
    return np.where(ok, nav_h, np.nan)


def _connect_and_erode(floor: np.ndarray, origin: np.ndarray, cell: float, cfg: WalkableConfig,
                       caster: EmbreeCaster) -> tuple[np.ndarray, np.ndarray]:
    """Connect floor layers across neighbouring columns, erode by the camera radius, label regions.

    Two neighbouring floor cells connect when their heights differ by at most a step and horizontal
    rays between them (at ``PASSAGE_HEIGHTS`` above the higher floor) hit nothing: walls thinner than
    a cell, which columns of rays can slip past, still separate rooms.
    """
    ny, nx, n_layers = floor.shape
    # Compact the layers: keep only the layers that hold floor somewhere.
    order = np.argsort(~np.isfinite(floor), axis=2, kind="stable")
    floor = np.take_along_axis(floor, order, axis=2)
    keep = int(np.isfinite(floor).sum(axis=2).max(initial=0))
    floor = floor[..., : max(keep, 1)]
    n_layers = floor.shape[2]
    valid = np.isfinite(floor)
    rows, cols = [], []
    for dx, dy in NEIGHBOURS:
        src, dst = _shifted(floor, dx, dy)  # dst[y, x] = floor[y + dy, x + dx]
        close = np.abs(src[..., :, None] - dst[..., None, :]) <= cfg.step_height  # (ny, nx, L, L)
        iy, ix, la, lb = np.nonzero(close)
        za, zb = floor[iy, ix, la], floor[iy + dy, ix + dx, lb]
        free = _passage_free(caster, origin, cell, ix, iy, dx, dy, np.maximum(za, zb))
        rows.append(np.ravel_multi_index((iy[free], ix[free], la[free]), floor.shape))
        cols.append(np.ravel_multi_index((iy[free] + dy, ix[free] + dx, lb[free]), floor.shape))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    degree = np.bincount(r, minlength=floor.size) + np.bincount(c, minlength=floor.size)
    degree = degree.reshape(floor.shape)
    # Boundary cells lack a connected neighbour in some direction; erode by the camera radius from them.
    boundary = valid & (degree < 8)
    radius = int(math.ceil(cfg.camera_radius / cell))
    unsafe = boundary.copy()
    if radius > 0 and boundary.any():
        unsafe = _dilate_through_graph(boundary, r, c, radius)
    safe = valid & ~unsafe
    # Regions: connected components over safe cells only.
    flat_safe = safe.ravel()
    both = flat_safe[r] & flat_safe[c]
    n = floor.size
    graph = coo_matrix((np.ones(both.sum(), np.int8), (r[both], c[both])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    labels = np.where(flat_safe, labels, -1)
    region = _relabel_by_size(labels, cfg.min_region_area / cell**2).reshape(ny, nx, n_layers)
    z = np.where(region >= 0, floor, np.nan).astype(np.float32)
    return z, region.astype(np.int32)


def _passage_free(caster: EmbreeCaster, origin: np.ndarray, cell: float, ix: np.ndarray, iy: np.ndarray,
                  dx: int, dy: int, z: np.ndarray) -> np.ndarray:
    """Whether horizontal rays from cells (ix, iy) to (ix + dx, iy + dy) at PASSAGE_HEIGHTS above ``z``
    are all unobstructed."""
    free = np.ones(len(ix), bool)
    if len(ix) == 0:
        return free
    length = cell * math.hypot(dx, dy)
    direction = np.array([dx, dy, 0.0], np.float32) * np.float32(cell / length)
    for h in PASSAGE_HEIGHTS:
        o = np.column_stack([origin[0] + ix * cell, origin[1] + iy * cell, z + h]).astype(np.float32)
        free &= ~caster.occluded(o, np.broadcast_to(direction, o.shape).copy(), length)
    return free


def _shifted(a: np.ndarray, sx: int, sy: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, a shifted so that out[y, x] = a[y + sy, x + sx], NaN outside)."""
    out = np.full_like(a, np.nan)
    ny, nx = a.shape[:2]
    ys_dst = slice(max(0, -sy), ny - max(0, sy))
    xs_dst = slice(max(0, -sx), nx - max(0, sx))
    ys_src = slice(max(0, sy), ny - max(0, -sy))
    xs_src = slice(max(0, sx), nx - max(0, -sx))
    out[ys_dst, xs_dst] = a[ys_src, xs_src]
    return a, out


def _dilate_through_graph(seed: np.ndarray, rows: np.ndarray, cols: np.ndarray, steps: int) -> np.ndarray:
    """Cells within ``steps`` graph hops (8-neighbourhood, within a step height) of a seed cell.

    Chebyshev distance in cells, so the kept region is at least ``camera_radius`` from any boundary.
    Propagating only along floor connections keeps one storey's walls from eroding the storey above.
    """
    flat = seed.ravel().copy()
    for _ in range(steps):
        grow = flat.copy()
        grow[cols[flat[rows]]] = True
        grow[rows[flat[cols]]] = True
        if (grow == flat).all():
            break
        flat = grow
    return flat.reshape(seed.shape)


def _relabel_by_size(labels: np.ndarray, min_cells: float) -> np.ndarray:
    """Drop components with fewer than ``min_cells`` cells; number the rest 0.. by decreasing size."""
    valid = labels >= 0
    counts = np.bincount(labels[valid])
    keep = np.flatnonzero(counts >= min_cells)
    keep = keep[np.argsort(-counts[keep], kind="stable")]
    remap = np.full(len(counts), -1, np.int64)
    remap[keep] = np.arange(len(keep))
    out = np.full(labels.shape, -1, np.int64)
    out[valid] = remap[labels[valid]]
    return out

