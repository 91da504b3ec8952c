"""Trajectory-sampling throughput: walkable extraction, route graph, path sampling, collision checks.

    python benchmarks/trajectories.py [--scenes procedural:indoor:0 openarena:oa_dm1 ...]

Per scene: triangles, walkable extraction time and floor area, graph build time with nodes and edges,
and the time to sample 16 trajectories of 49 frames. Then the collision check on a synthetic worst
case: 10,000 boxes and 1,000 paths of 100 steps, as (steps x boxes) per second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataset.sources import default_scenes, load_scene
from sampling.collision import BoxIndex
from sampling.graph import build_route_graph
from sampling.sampler import SamplingConfig, sample_trajectories
from sampling.walkable import extract_walkable


def bench_scene(source: str) -> dict:
    scene = load_scene(source)
    cfg = SamplingConfig()
    t0 = time.perf_counter()
    walk = extract_walkable(scene, cfg.walkable)
    t1 = time.perf_counter()
    graph = build_route_graph(walk, cfg.graph, np.random.default_rng(0))
    t2 = time.perf_counter()
    result = sample_trajectories(scene, 16, seed=0, config=cfg, walkable=walk)
    t3 = time.perf_counter()
    return dict(scene=source, triangles=scene.num_faces, walkable_s=t1 - t0, area=walk.area(),
                graph_s=t2 - t1, nodes=len(graph.points), edges=len(graph.edges), sample_s=t3 - t2,
                accepted=len(result.trajectories), discarded=len(result.discarded))


def bench_collision(num_boxes: int = 10_000, num_paths: int = 1_000, steps: int = 100, seed: int = 0) -> dict:
    """Seconds to index the boxes and check the paths, and (steps x boxes) per second."""
    rng = np.random.default_rng(seed)
    side = np.sqrt(num_boxes) * 3.0  # ~1 box per 9 m^2: a cluttered scene
    lo = rng.uniform(0, side, (num_boxes, 3)) * [1, 1, 0.0]
    boxes = np.stack([lo, lo + rng.uniform(0.2, 1.5, (num_boxes, 3)) * [1, 1, 1.5]], axis=1)
    start = rng.uniform(0, side, (num_paths, 1, 3)) * [1, 1, 0]
    heading = rng.uniform(0, 2 * np.pi, (num_paths, 1))
    t = np.arange(steps)[None, :] * 0.1
    paths = start + np.stack([np.cos(heading) * t, np.sin(heading) * t, np.full_like(t * heading, 1.6)], axis=2)
    t0 = time.perf_counter()
    index = BoxIndex(boxes, 0.2)
    t1 = time.perf_counter()
    first = index.check_paths(paths)
    t2 = time.perf_counter()
    return dict(boxes=num_boxes, paths=num_paths, steps=steps, index_s=round(t1 - t0, 4), check_s=round(t2 - t1, 4),
                steps_x_boxes_per_s=f"{num_paths * steps * num_boxes / (t2 - t1):.3g}",
                colliding_paths=int((first >= 0).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="*")
    args = parser.parse_args()
    scenes = args.scenes
    if not scenes:
        scenes = default_scenes(("oa_dm1", "oa_dm5", "aggressor"))
    print(f"{'scene':<24} {'tris':>7} {'walkable s':>10} {'area m2':>8} {'graph s':>8} {'nodes':>6} {'edges':>6} "
          f"{'16 paths s':>10} {'ok/disc':>8}")
    for source in scenes:
        r = bench_scene(source)
        print(f"{r['scene']:<24} {r['triangles']:>7} {r['walkable_s']:>10.2f} {r['area']:>8.0f} {r['graph_s']:>8.2f} "
              f"{r['nodes']:>6} {r['edges']:>6} {r['sample_s']:>10.2f} {r['accepted']:>3}/{r['discarded']:<4}",
              flush=True)
    print(f"collision check (synthetic worst case): {bench_collision()}")


if __name__ == "__main__":
    main()
