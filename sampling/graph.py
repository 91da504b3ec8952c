"""Route graph over walkable floor: well-spread points, Delaunay triangulation, edges one can walk.

Points are spread over the walkable cells like a Poisson-disk sample (one random cell per
``spacing`` square and storey, then pairs closer than ``min_distance_factor * spacing`` pruned), with
extra points in narrow passages (doorways), where straight edges could otherwise not pass.
Delaunay triangulation runs on the XY of the points *per height slab* (``slab_height`` high,
overlapping by half), so storeys stacked above each other are never triangulated together while
stairs and ramps, whose points change height gradually, are covered by the overlap. Candidate edges
are kept when both ends lie in the same walkable region, the edge is at most ``max_edge`` long and a
2.5D walk along it stays on walkable floor with no step higher than the step height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.spatial import Delaunay, QhullError, cKDTree

from sampling.walkable import WalkableSurface


@dataclass
class GraphConfig:
    """Parameters of the route graph (metres)."""

    spacing: float = 1.0
    """Typical distance between graph nodes."""
    min_distance_factor: float = 0.5
    """Nodes closer than this times ``spacing`` are pruned."""
    max_edge: float = 4.0
    """Longest edge kept."""
    slab_height: float = 2.0
    """Height of the slabs triangulated separately (must be below the storey height)."""


@dataclass
class RouteGraph:
    """Nodes on the floor and walkable edges between them."""

    points: np.ndarray
    """(N, 3) floor points (z = floor height)."""
    region: np.ndarray
    """(N,) walkable region of each node."""
    edges: np.ndarray
    """(E, 2) node index pairs, i < j."""
    lengths: np.ndarray
    """(E,) 3D edge lengths in metres."""

    def adjacency(self) -> csr_matrix:
        """Symmetric sparse matrix of edge lengths, for scipy.sparse.csgraph routing."""
        n = len(self.points)
        i, j = self.edges[:, 0], self.edges[:, 1]
        return csr_matrix((np.concatenate([self.lengths, self.lengths]), (np.concatenate([i, j]),
                          np.concatenate([j, i]))), shape=(n, n))


def _grid_pick(pts: np.ndarray, region: np.ndarray, spacing: float, storey_height: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random point per ``spacing`` square, storey and region."""
    order = rng.permutation(len(pts))
    pts, region = pts[order], region[order]
    cols = [np.floor(pts[:, 0] / spacing), np.floor(pts[:, 1] / spacing),
            np.floor(pts[:, 2] / storey_height), region]
    key = np.zeros(len(pts), np.int64)
    for c in cols:  # one integer per (square, storey, region): np.unique on it is fast
        c = (c - c.min()).astype(np.int64)
        key = key * (int(c.max()) + 1) + c
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)  # keep the random order of the permutation
    return pts[first], region[first]


def narrow_cells(walk: WalkableSurface, width: float) -> np.ndarray:
    """Indices (into ``walk.cell_centres()``) of cells in passages narrower than about ``width``: doorways,
    gaps between furniture. Measured per floor level as the walkable fraction of a ``width`` square."""
    pts, _, _ = walk.cell_centres()
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    levels = walk.levels() or [(float(pts[:, 2].min()), float(pts[:, 2].max()))]
    centres = np.array([(a + b) / 2 for a, b in levels])
    level = np.argmin(np.abs(pts[:, 2:3] - centres[None]), axis=1)
    ix, iy, _ = walk.cell_of(pts[:, :2])
    size = max(3, int(round(width / walk.cell)) | 1)
    out = []
    for k in range(len(levels)):
        sel = np.flatnonzero(level == k)
        mask = np.zeros(walk.z.shape[:2])
        mask[iy[sel], ix[sel]] = 1.0
        frac = ndimage.uniform_filter(mask, size=size, mode="constant")
        out.append(sel[frac[iy[sel], ix[sel]] < 0.6])
    return np.concatenate(out)


def sample_nodes(walk: WalkableSurface, cfg: GraphConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Well-spread floor points (N, 3) and their regions, denser in narrow passages (doorways) so that
    straight edges can pass through them."""
    pts, _, region = walk.cell_centres()
    if len(pts) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    storey = max(walk.config.clearance, 1e-3)
    narrow = narrow_cells(walk, cfg.spacing)
    np_pts, np_reg = _grid_pick(pts[narrow], region[narrow], cfg.spacing / 2, storey, rng)
    g_pts, g_reg = _grid_pick(pts, region, cfg.spacing, storey, rng)
    pts, region = np.concatenate([np_pts, g_pts]), np.concatenate([np_reg, g_reg])
    drop = np.zeros(len(pts), bool)
    for a, b in sorted(cKDTree(pts).query_pairs(cfg.min_distance_factor * cfg.spacing)):
        if not drop[a] and not drop[b]:
            drop[max(a, b)] = True  # passage nodes come first and are kept
    return pts[~drop], region[~drop]


def _slab_edges(points: np.ndarray, slab: float) -> np.ndarray:
    """Delaunay edges of the XY of points, per overlapping height slab."""
    edges = []
    z = points[:, 2]
    for z0 in np.arange(z.min() - slab / 2, z.max() + slab / 2, slab / 2):
        idx = np.flatnonzero((z >= z0) & (z < z0 + slab))
        if len(idx) < 2:
            continue
        if len(idx) >= 3:
            try:
                tri = Delaunay(points[idx, :2])
                s = tri.simplices
                e = np.concatenate([s[:, [0, 1]], s[:, [1, 2]], s[:, [0, 2]]])
                edges.append(idx[e])
                continue
            except QhullError:  # collinear points (a corridor one node wide): chain them instead
                pass
        order = idx[np.lexsort((points[idx, 1], points[idx, 0]))]
        edges.append(np.column_stack([order[:-1], order[1:]]))
    if not edges:
        return np.zeros((0, 2), np.int64)
    e = np.sort(np.concatenate(edges), axis=1)
    return np.unique(e[e[:, 0] != e[:, 1]], axis=0)


def build_route_graph(walk: WalkableSurface, cfg: GraphConfig | None = None,
                      rng: np.random.Generator | None = None) -> RouteGraph:
    """Nodes spread over the walkable floor, joined by Delaunay edges that can be walked."""
    cfg = cfg or GraphConfig()
    rng = rng if rng is not None else np.random.default_rng(0)
    points, region = sample_nodes(walk, cfg, rng)
    if len(points) < 2:
        return RouteGraph(points, region, np.zeros((0, 2), np.int64), np.zeros(0))
    edges = _slab_edges(points, cfg.slab_height)
    a, b = points[edges[:, 0]], points[edges[:, 1]]
    lengths = np.linalg.norm(b - a, axis=1)
    keep = (region[edges[:, 0]] == region[edges[:, 1]]) & (lengths <= cfg.max_edge)
    edges, lengths = edges[keep], lengths[keep]
    walkable = walk.walk(points[edges[:, 0]], points[edges[:, 1]])
    return RouteGraph(points, region, edges[walkable], lengths[walkable])
