"""Embedded renderer throughput: panoramas/s at 960x480 (RGB + depth + ids) vs the raw ray-cast rate.

    python benchmarks/render.py [--width 960] [--frames 20] [--scenes procedural:indoor:0 openarena:oa_dm1]

For each scene: scene load and renderer set-up time, rendered panoramas per second, the raw Embree
ray-cast rate on exactly the same rays (the physical floor of this renderer on this machine) and the
ratio of the two. When Open3D is importable its RaycastingScene is measured on the same rays too
(the library choice of DESIGN.md section 4).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataset.core.conventions import EYE_HEIGHT, equirect_directions, pose_from_heading
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from dataset.render.shading import rotate_directions
from dataset.sources import default_scenes, load_scene


def poses_for(scene, n: int, seed: int = 0) -> np.ndarray:
    """Camera poses at eye height over the scene's spawn points (or its centre), turning around."""
    rng = np.random.default_rng(seed)
    spawns = scene.spawn_points
    if len(spawns) == 0:
        lo, hi = scene.bounds()
        c = (lo + hi) / 2
        spawns = np.array([[c[0], c[1], lo[2], 0.0]])
    out = []
    for i in range(n):
        x, y, z, h = spawns[i % len(spawns)]
        out.append(pose_from_heading((x, y, z + EYE_HEIGHT), h + rng.uniform(-np.pi, np.pi)))
    return np.stack(out)


def bench_scene(source: str, width: int, frames: int, supersample: int) -> dict:
    t0 = time.perf_counter()
    scene = load_scene(source)
    t1 = time.perf_counter()
    renderer = EmbeddedRenderer(scene, RenderSettings(supersample=supersample))
    t2 = time.perf_counter()
    poses = poses_for(scene, frames)
    renderer.render(poses[0], width)  # compile / warm caches
    start = time.perf_counter()
    for pose in poses:
        renderer.render(pose, width)
    render_s = time.perf_counter() - start

    dirs_cam = equirect_directions(width).reshape(-1, 3)
    rays = []
    for p in poses:  # rotated without BLAS, whose spinning threads would slow the timed casts
        d = np.empty_like(dirs_cam)
        rotate_directions(dirs_cam, p[:3, :3].astype(np.float32), d)
        rays.append((np.broadcast_to(p[:3, 3], dirs_cam.shape).astype(np.float32), d))
    caster = renderer.caster
    caster.cast(*rays[0])
    start = time.perf_counter()
    for o, d in rays:
        caster.cast(o, d)
    cast_s = time.perf_counter() - start
    row = dict(scene=source, triangles=scene.num_faces, load_s=t1 - t0, setup_s=t2 - t1,
               pano_per_s=frames / render_s, raw_pano_per_s=frames / cast_s,
               mrays_per_s=frames * len(dirs_cam) / cast_s / 1e6)
    row["ratio"] = row["pano_per_s"] / row["raw_pano_per_s"]
    row["open3d_mrays_per_s"] = _open3d_rate(scene, rays)
    renderer.close()
    return row


def _open3d_rate(scene, rays) -> float | None:
    try:
        import open3d as o3d
    except ImportError:
        return None
    rs = o3d.t.geometry.RaycastingScene()
    rs.add_triangles(o3d.core.Tensor(scene.vertices), o3d.core.Tensor(scene.faces.astype(np.uint32)))
    tensors = [o3d.core.Tensor(np.concatenate([o, d], 1)) for o, d in rays]
    rs.cast_rays(tensors[0])
    start = time.perf_counter()
    for t in tensors:
        rs.cast_rays(t)
    return len(tensors) * len(rays[0][0]) / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--supersample", type=int, default=1)
    parser.add_argument("--scenes", nargs="*")
    args = parser.parse_args()
    scenes = args.scenes
    if not scenes:
        scenes = default_scenes(("oa_dm1", "aggressor", "oa_ctf2"))
    print(f"{'scene':<24} {'tris':>7} {'load s':>7} {'setup s':>8} {'pano/s':>7} {'raw pano/s':>10} "
          f"{'Mrays/s':>8} {'ratio':>6} {'open3d Mrays/s':>15}")
    for source in scenes:
        r = bench_scene(source, args.width, args.frames, args.supersample)
        o3d_rate = "-" if r["open3d_mrays_per_s"] is None else f"{r['open3d_mrays_per_s']:.1f}"
        print(f"{r['scene']:<24} {r['triangles']:>7} {r['load_s']:>7.2f} {r['setup_s']:>8.2f} "
              f"{r['pano_per_s']:>7.1f} {r['raw_pano_per_s']:>10.1f} {r['mrays_per_s']:>8.1f} "
              f"{r['ratio']:>6.2f} {o3d_rate:>15}", flush=True)


if __name__ == "__main__":
    main()
