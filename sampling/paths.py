"""Camera paths over the route graph: start/goal choice, routing, smoothing, constant-speed poses.

A path needs ``(frames - 1) * step`` metres of walking. Starts are spread over the scene by best-
candidate sampling over the graph nodes; each start walks to a far goal chosen at random among the nodes
far enough away (Dijkstra over the graph), chaining further goals when one leg is too short. The
route's polyline is rounded with Chaikin corner cutting (kept only while the rounded walk stays on
walkable floor), resampled at constant speed, lifted to eye height above the floor (heights smoothed
so stairs become a steady climb), and given headings by the chosen policy:

- ``travel``: look where you walk, turning at most ``max_turn_rate_deg`` per second;
- ``fixed``: keep the first heading of the walk;
- ``look_around``: travel heading plus a slow sinusoidal sweep of ``look_around_deg``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.sparse.csgraph import dijkstra

from dataset.core.conventions import EYE_HEIGHT, pose_from_heading
from sampling.graph import RouteGraph
from sampling.walkable import WalkableSurface

HEADING_POLICIES = ("travel", "fixed", "look_around")


@dataclass
class PathConfig:
    """How camera paths move and look."""

    frames: int = 49
    """Poses per path."""
    step: float = 0.1
    """Metres walked between consecutive frames (speed = step x fps)."""
    fps: float = 12.0
    """Frame rate, for turn rates and sweeps in time units."""
    eye_height: float = EYE_HEIGHT
    """Camera height above the floor, metres."""
    heading: str = "travel"
    """Heading policy: travel, fixed or look_around."""
    max_turn_rate_deg: float = 60.0
    """Fastest turn of the travel heading, degrees per second."""
    look_around_deg: float = 45.0
    """Amplitude of the look_around sweep, degrees."""
    look_around_period_s: float = 6.0
    """Period of the look_around sweep, seconds."""
    corner_cuts: int = 3
    """Chaikin iterations rounding the route's corners (fewer are used where rounding leaves the floor)."""
    max_legs: int = 4
    """Goals chained at most to reach the path length."""

    def __post_init__(self) -> None:
        if self.heading not in HEADING_POLICIES:
            raise ValueError(f"heading policy {self.heading!r} is not one of {', '.join(HEADING_POLICIES)}")
        if self.frames < 2 or self.step <= 0 or self.fps <= 0:
            raise ValueError("frames must be >= 2, step and fps positive")

    @property
    def length(self) -> float:
        """Metres a path walks."""
        return (self.frames - 1) * self.step


def spread_starts(graph: RouteGraph, eligible: np.ndarray, count: int, rng: np.random.Generator,
                  candidates: int = 8) -> np.ndarray:
    """``count`` node indices among ``eligible``, spread over the scene by Mitchell's best-candidate
    sampling: each new start is the farthest from those chosen among a few random nodes (blue noise,
    without the boundary bias of farthest-point sampling)."""
    if len(eligible) == 0:
        return np.zeros(0, np.int64)
    pts = graph.points[eligible]
    chosen = [int(rng.integers(len(eligible)))]
    dist = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    for _ in range(count - 1):
        pool = rng.integers(len(eligible), size=candidates)
        nxt = int(pool[np.argmax(dist[pool])])
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    return eligible[np.array(chosen)]


def route(graph: RouteGraph, start: int, length: float, max_legs: int,
          rng: np.random.Generator) -> tuple[list[int], float]:
    """Node sequence from ``start`` walking at least ``length`` metres (or as far as the graph allows)."""
    adj = graph.adjacency()
    nodes = [start]
    total = 0.0
    visited = np.zeros(len(graph.points), bool)
    for _ in range(max_legs):
        here = nodes[-1]
        visited[nodes] = True
        dist, pred = dijkstra(adj, indices=here, return_predecessors=True)
        need = length - total
        reach = np.isfinite(dist) & ~visited
        if not reach.any():
            break
        far = reach & (dist >= need)
        if far.any():
            cand = np.flatnonzero(far)
            goal = int(rng.choice(cand, p=dist[cand] / dist[cand].sum()))
        else:
            goal = int(np.flatnonzero(reach)[np.argmax(dist[reach])])
        leg = [goal]
        while leg[-1] != here:
            leg.append(int(pred[leg[-1]]))
        nodes += leg[::-1][1:]
        total += float(dist[goal])
        if total >= length:
            break
    return nodes, total


def _chaikin(poly: np.ndarray, iterations: int) -> np.ndarray:
    """Corner cutting: each segment keeps its 1/4 and 3/4 points; the ends stay fixed."""
    for _ in range(iterations):
        if len(poly) < 3:
            break
        q = 0.75 * poly[:-1] + 0.25 * poly[1:]
        r = 0.25 * poly[:-1] + 0.75 * poly[1:]
        mid = np.empty((2 * len(q), 3))
        mid[0::2], mid[1::2] = q, r
        poly = np.concatenate([poly[:1], mid[1:-1], poly[-1:]])
    return poly


def resample(poly: np.ndarray, frames: int, step: float) -> np.ndarray:
    """``frames`` points ``step`` metres apart horizontally along a polyline, from its start.

    Horizontal arc length: the camera keeps a constant walking speed over the ground; on stairs it
    climbs as it goes instead of slowing down by the climb.
    """
    seg = np.linalg.norm(np.diff(poly[:, :2], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.arange(frames) * step
    return np.column_stack([np.interp(s, arc, poly[:, k]) for k in range(3)])


def track_floor(walk: WalkableSurface, points: np.ndarray) -> np.ndarray:
    """Floor height under consecutive points (N, 3), each looked up near the previous floor height.

    Following the floor point by point keeps a walk on its storey and on the treads of stairs, where
    heights interpolated between route nodes can be off by more than a step. NaN where the floor ends.
    """
    z = np.full(len(points), np.nan)
    hint = points[0, 2]
    for i, p in enumerate(points):
        zi, _ = walk.floor_at(np.array([[p[0], p[1], hint]]))
        if not np.isfinite(zi[0]):
            zi, _ = walk.floor_at(p[None])  # e.g. the route's own height after a gap in the lookup
        z[i] = zi[0]
        if np.isfinite(zi[0]):
            hint = zi[0]
    return z


def smooth_floor_walk(walk: WalkableSurface, floor_points: np.ndarray, cfg: PathConfig) -> np.ndarray | None:
    """Rounded, resampled floor points (frames, 3) of a route, or None if no rounding stays on the floor.

    Every resampled point must be on walkable floor, and consecutive points (``step`` apart) may differ
    in height by at most a step plus ``step`` (a 45-degree climb): no jumps between storeys.
    """
    max_dz = walk.config.step_height + cfg.step
    for cuts in range(cfg.corner_cuts, -1, -1):
        pts = resample(_chaikin(floor_points, cuts), cfg.frames, cfg.step)
        z = track_floor(walk, pts)
        if np.isfinite(z).all() and (np.abs(np.diff(z)) <= max_dz).all():
            pts[:, 2] = z
            return pts
    return None


def headings(xy: np.ndarray, cfg: PathConfig) -> np.ndarray:
    """Heading (rad) per frame for positions (frames, 2) by the configured policy."""
    d = np.gradient(xy, axis=0)
    travel = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    travel = gaussian_filter1d(travel, sigma=max(1.0, 0.25 * cfg.fps), mode="nearest")
    max_step = math.radians(cfg.max_turn_rate_deg) / cfg.fps
    out = np.empty_like(travel)
    out[0] = travel[0]
    for i in range(1, len(travel)):
        out[i] = out[i - 1] + np.clip(travel[i] - out[i - 1], -max_step, max_step)
    if cfg.heading == "fixed":
        return np.full_like(out, out[0])
    if cfg.heading == "look_around":
        t = np.arange(len(out)) / cfg.fps
        out = out + math.radians(cfg.look_around_deg) * np.sin(2 * math.pi * t / cfg.look_around_period_s)
    return out


def camera_poses(walk: WalkableSurface, floor_points: np.ndarray, cfg: PathConfig) -> np.ndarray:
    """c2w poses (frames, 4, 4) at eye height above smoothed floor points."""
    z = gaussian_filter1d(floor_points[:, 2], sigma=max(1.0, 0.3 / cfg.step), mode="nearest")
    heading = headings(floor_points[:, :2], cfg)
    eye = np.column_stack([floor_points[:, :2], z + cfg.eye_height])
    return np.stack([pose_from_heading(p, h) for p, h in zip(eye, heading, strict=True)])
