"""Trajectory sampling for one scene: walkable floor -> route graph -> camera paths -> collision check.

``sample_trajectories`` is the one entry point (used by ``matrix-pano sample`` and by the build):
deterministic for a scene, a seed and a config; every candidate path has a stable id, and every
discarded one a human-readable reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dataset.core.conventions import poses_to_rows
from dataset.core.ids import rng_seed, scene_id, trajectory_id
from dataset.core.scene import Scene
from sampling.collision import BoxIndex, ProxyRule, proxy_boxes
from sampling.graph import GraphConfig, RouteGraph, build_route_graph
from sampling.paths import PathConfig, camera_poses, route, smooth_floor_walk, spread_starts
from sampling.walkable import WalkableConfig, WalkableSurface, extract_walkable


@dataclass
class SamplingConfig:
    """Everything that shapes the sampled trajectories."""

    walkable: WalkableConfig = field(default_factory=WalkableConfig)
    """Walkable-surface extraction."""
    graph: GraphConfig = field(default_factory=GraphConfig)
    """Route graph."""
    path: PathConfig = field(default_factory=PathConfig)
    """Path length, speed, eye height and heading policy."""
    proxies: ProxyRule = field(default_factory=ProxyRule)
    """Which objects become bounding-box obstacles."""
    camera_half_size: float = 0.2
    """Half-size of the camera's collision cube, metres."""
    attempts_per_path: int = 3
    """Candidate paths tried per requested path before giving up."""


@dataclass
class Trajectory:
    """An accepted camera path."""

    id: str
    c2w: np.ndarray
    """(frames, 4, 4) camera-to-world poses."""
    floor: np.ndarray
    """(frames, 3) floor points under the camera."""
    length: float
    """Metres walked."""

    def to_json(self) -> dict:
        return {"id": self.id, "c2w": poses_to_rows(self.c2w), "length_m": round(self.length, 4),
                "num_frames": len(self.c2w)}


@dataclass
class Discarded:
    """A candidate path that was rejected, and why."""

    id: str
    reason: str
    floor: np.ndarray | None = None
    """(frames, 3) floor points under the camera when the path got that far (for plots)."""


@dataclass
class SamplingResult:
    """What sampling a scene produced."""

    scene_id: str
    walkable: WalkableSurface
    graph: RouteGraph
    trajectories: list[Trajectory]
    discarded: list[Discarded]
    notes: list[str]

    def to_json(self, scene: str, seed: int, config: SamplingConfig) -> dict:
        return {"scene_id": self.scene_id, "scene": scene, "seed": seed,
                "trajectories": [t.to_json() for t in self.trajectories],
                "discarded": [{"id": d.id, "reason": d.reason} for d in self.discarded],
                "notes": self.notes, "config": asdict(config)}


def sample_trajectories(scene: Scene, count: int, seed: int = 0, config: SamplingConfig | None = None,
                        walkable: WalkableSurface | None = None) -> SamplingResult:
    """Up to ``count`` collision-free camera paths through ``scene``; fewer (with notes) if it is too small."""
    cfg = config or SamplingConfig()
    sid = scene_id(scene.name, scene.content_hash())
    rng = np.random.default_rng(rng_seed(sid, seed))
    walk = walkable or extract_walkable(scene, cfg.walkable)
    graph = build_route_graph(walk, cfg.graph, rng)
    notes = list(walk.notes)
    trajectories: list[Trajectory] = []
    discarded: list[Discarded] = []
    need = cfg.path.length
    if len(graph.edges) == 0:
        if walk.num_cells:
            notes.append(f"walkable floor ({walk.area():.1f} m²) is too small or fragmented for a route graph "
                         f"with {cfg.graph.spacing} m spacing")
        return SamplingResult(sid, walk, graph, trajectories, discarded, notes)

    eligible = np.unique(graph.edges)  # every node on an edge: the graph spans only the kept (ground) regions
    attempts = count * cfg.attempts_per_path
    starts = spread_starts(graph, eligible, attempts, rng)
    boxes, names = proxy_boxes(scene, cfg.proxies)
    index = BoxIndex(boxes, cfg.camera_half_size)
    candidates = []
    for k, start in enumerate(starts):
        if len(candidates) >= attempts:
            break
        tid = trajectory_id(sid, seed, k)
        nodes, total = route(graph, int(start), need, cfg.path.max_legs, rng)
        if total < need:
            discarded.append(Discarded(tid, f"the walkable region around node {int(start)} allows only "
                                            f"{total:.1f} m of walking, the path needs {need:.1f} m"))
            continue
        floor = smooth_floor_walk(walk, graph.points[nodes], cfg.path)
        if floor is None:
            discarded.append(Discarded(tid, "the resampled path leaves the walkable floor"))
            continue
        candidates.append((tid, floor, camera_poses(walk, floor, cfg.path)))
    if candidates:
        positions = np.stack([c2w[:, :3, 3] for _, _, c2w in candidates])
        first, box = index.check_paths(positions, return_box=True)
        for (tid, floor, c2w), step, b in zip(candidates, first, box, strict=True):
            if step >= 0:
                discarded.append(Discarded(tid, f"camera collides with object {names[b]!r} between steps {step} "
                                                f"and {step + 1}", floor))
            elif len(trajectories) < count:
                trajectories.append(Trajectory(tid, c2w, floor, need))
    if len(trajectories) < count:
        notes.append(f"{len(trajectories)} of {count} paths found after {len(starts)} candidates")
    return SamplingResult(sid, walk, graph, trajectories, discarded, notes)

