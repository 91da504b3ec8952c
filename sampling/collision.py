"""Collision checks of camera paths against objects simplified to axis-aligned bounding boxes.

Which objects are proxies (``ProxyRule``): every object's box (``Scene.object_bounds``, from its
nearest and farthest points) is an obstacle, except

- objects of kind ``scenery`` (distant terrain and building rows filling the horizon: never reached),
- objects whose kind is in ``skip_kinds`` (default ``structure``: floors, walls, stairs, terrain,
  whole buildings), and
- objects whose box is larger than ``max_side`` on any side or ``max_footprint`` in XY area.

Why: a building's or a floor's box contains every camera inside it, so as a proxy it would reject
every path. Those are handled exactly by the walkable-floor extraction instead: it only keeps floor
with headroom, cuts the floor at walls (even walls thinner than its grid cell) and keeps the camera
``camera_radius`` away from them. Boxes are kept for what the floor test cannot see well: props
such as shelves, lamp posts, tree crowns and cars that reach the camera's height.

The camera is an axis-aligned cube of half-size ``r`` (a sphere of radius ``r`` is checked as its
bounding cube: conservative). A cube hits a box exactly when its centre is inside the box grown by
``r`` (Minkowski sum), so every step's segment (centre at step i to centre at step i+1) is tested
against the grown boxes with a slab test: nothing tunnels through thin objects between steps.
``BoxIndex`` bins the grown boxes into a uniform XY grid (CSR arrays) so each segment is tested only
against the boxes of the cells its own XY bounding box touches. ``check_paths_reference`` is the
brute-force version the tests compare it with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset.core.scene import Scene
from sampling.walkable import SCENERY_KIND


@dataclass
class ProxyRule:
    """Which scene objects become bounding-box obstacles."""

    skip_kinds: tuple[str, ...] = ("structure",)
    """Object kinds never used as proxies (handled by the walkable-floor extraction)."""
    max_side: float = 6.0
    """Objects whose box has a longer side (metres) are not proxies."""
    max_footprint: float = 12.0
    """Objects whose box covers more XY area (m²) are not proxies."""


def proxy_boxes(scene: Scene, rule: ProxyRule | None = None) -> tuple[np.ndarray, list[str]]:
    """(B, 2, 3) min/max boxes of the scene's proxy objects and their names."""
    rule = rule or ProxyRule()
    boxes = scene.object_bounds()
    size = boxes[:, 1] - boxes[:, 0]
    keep = np.isfinite(boxes).all(axis=(1, 2))
    keep &= np.array([o.kind not in rule.skip_kinds and o.kind != SCENERY_KIND for o in scene.objects], bool)
    with np.errstate(invalid="ignore"):
        keep &= (size.max(axis=1) <= rule.max_side) & (size[:, 0] * size[:, 1] <= rule.max_footprint)
    idx = np.flatnonzero(keep)
    return boxes[idx], [scene.objects[i].name for i in idx]


def _segment_hits(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether segments a -> b (N, 3) touch boxes [lo, hi] (N, 3), pairwise (slab test, closed boxes)."""
    d = b - a
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - a) / d
        t2 = (hi - a) / d
    parallel = d == 0
    inside_slab = (a >= lo) & (a <= hi)
    t_near = np.where(parallel, np.where(inside_slab, -np.inf, np.inf), np.minimum(t1, t2))
    t_far = np.where(parallel, np.where(inside_slab, np.inf, -np.inf), np.maximum(t1, t2))
    enter = t_near.max(axis=1)
    leave = t_far.min(axis=1)
    return (enter <= leave) & (leave >= 0.0) & (enter <= 1.0)


class BoxIndex:
    """Grown boxes binned in a uniform XY grid for fast segment queries."""

    def __init__(self, boxes: np.ndarray, half_size: float = 0.2, cell: float | None = None) -> None:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 2, 3)
        self.lo = boxes[:, 0] - half_size
        self.hi = boxes[:, 1] + half_size
        if len(boxes) == 0:
            self.cell, self.origin = 1.0, np.zeros(2)
            self._starts = np.zeros(1, np.int64)
            self._items = np.zeros(0, np.int64)
            self._shape = (1, 1)
            return
        extent = (self.hi - self.lo)[:, :2].max(axis=1)
        self.cell = float(cell or np.clip(np.percentile(extent, 90), 0.5, 16.0))
        self.origin = self.lo[:, :2].min(axis=0)
        c0 = np.floor((self.lo[:, :2] - self.origin) / self.cell).astype(np.int64)
        c1 = np.floor((self.hi[:, :2] - self.origin) / self.cell).astype(np.int64)
        self._shape = (int(c1[:, 0].max()) + 1, int(c1[:, 1].max()) + 1)
        box_ids, cells = _expand_ranges(c0, c1, self._shape)
        order = np.argsort(cells, kind="stable")
        self._items = box_ids[order]
        self._starts = np.searchsorted(cells[order], np.arange(self._shape[0] * self._shape[1] + 1))

    def __len__(self) -> int:
        return len(self.lo)

    def _candidates(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment, box) index pairs whose grid cells overlap, deduplicated."""
        smin = (np.minimum(a, b)[:, :2] - self.origin) / self.cell
        smax = (np.maximum(a, b)[:, :2] - self.origin) / self.cell
        c0 = np.clip(np.floor(smin).astype(np.int64), 0, None)
        c1 = np.minimum(np.floor(smax).astype(np.int64), np.array(self._shape) - 1)
        valid = (c0 <= c1).all(axis=1)
        seg_idx = np.flatnonzero(valid)
        seg, cells = _expand_ranges(c0[valid], c1[valid], self._shape)
        seg = seg_idx[seg]
        counts = self._starts[cells + 1] - self._starts[cells]
        seg = np.repeat(seg, counts)
        firsts = np.repeat(self._starts[cells], counts)
        offsets = np.arange(len(seg)) - np.repeat(np.cumsum(counts) - counts, counts)
        box = self._items[firsts + offsets]
        if len(seg):
            key = np.unique(seg * len(self.lo) + box)
            seg, box = key // len(self.lo), key % len(self.lo)
        return seg, box

    def check_paths(self, positions: np.ndarray, return_box: bool = False, chunk_segments: int = 200_000):
        """First colliding step of each path of camera centres (P, S, 3): (P,) int, -1 when clean.

        Step i means the segment from step i to step i + 1 (for a one-step path, the point itself).
        With ``return_box``, also the index (into the boxes given) of the box hit there, -1 when clean.
        """
        pos = np.asarray(positions, np.float64)
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ValueError(f"positions must be (paths, steps, 3), got {pos.shape}")
        n_paths, steps = pos.shape[:2]
        first = np.full(n_paths, -1, np.int64)
        hit_box = np.full(n_paths, -1, np.int64)
        if len(self.lo) and steps and n_paths:
            seg_per_path = max(steps - 1, 1)
            per_chunk = max(1, chunk_segments // seg_per_path)
            for p0 in range(0, n_paths, per_chunk):
                block = pos[p0 : p0 + per_chunk]
                a = (block[:, :-1] if steps > 1 else block).reshape(-1, 3)
                b = (block[:, 1:] if steps > 1 else block).reshape(-1, 3)
                seg, box = self._candidates(a, b)
                hit = _segment_hits(a[seg], b[seg], self.lo[box], self.hi[box])
                seg, box = seg[hit], box[hit]
                path = p0 + seg // seg_per_path
                step = seg % seg_per_path
                order = np.lexsort((step, path))  # earliest step of each path first
                path, step, box = path[order], step[order], box[order]
                uniq, at = np.unique(path, return_index=True)
                first[uniq], hit_box[uniq] = step[at], box[at]
        return (first, hit_box) if return_box else first


def _expand_ranges(c0: np.ndarray, c1: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each row's inclusive cell range [c0, c1] (N, 2): (row index, flat cell id) of every cell."""
    nx = c1[:, 0] - c0[:, 0] + 1
    ny = c1[:, 1] - c0[:, 1] + 1
    counts = nx * ny
    rows = np.repeat(np.arange(len(c0)), counts)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    gx = c0[rows, 0] + k % nx[rows]
    gy = c0[rows, 1] + k // nx[rows]
    return rows, gx * shape[1] + gy


def check_paths_reference(boxes: np.ndarray, half_size: float, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: every segment of every path against every grown box (slow; for tests)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 2, 3)
    lo, hi = boxes[:, 0] - half_size, boxes[:, 1] + half_size
    pos = np.asarray(positions, np.float64)
    first = np.full(len(pos), -1, np.int64)
    hit_box = np.full(len(pos), -1, np.int64)
    for p, path in enumerate(pos):
        a_all = path[:-1] if len(path) > 1 else path
        b_all = path[1:] if len(path) > 1 else path
        for i, (a, b) in enumerate(zip(a_all, b_all, strict=True)):
            hits = _segment_hits(np.tile(a, (len(lo), 1)), np.tile(b, (len(lo), 1)), lo, hi)
            if hits.any():
                first[p], hit_box[p] = i, int(np.flatnonzero(hits)[0])
                break
    return first, hit_box
