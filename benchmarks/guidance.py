"""Trajectory guidance: frames per second at 960x480, and quality against the real frames of dataset-like
clips (mesh guidance vs the point-cloud splat baseline) as the camera moves away from the panorama.

    python benchmarks/guidance.py [--width 960] [--scenes procedural:indoor:0 procedural:indoor:1] [--clips 2]

Clips are sampled and rendered like a build's (49 frames, 0.1 m per frame); the guidance is built from
frame 0 and its depth and rendered along the clip's own poses. PSNR is measured on each method's mask.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataset.core.jobspec import parse_job_spec
from dataset.jobs.worker import plan_scene
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from inference.guidance import guidance_quality, panorama_mesh, render_guidance


def _mean(rows: list[dict], key: str) -> float:
    """Mean of the finite values (PSNR is infinite on exact frames)."""
    values = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--scenes", nargs="+", default=["procedural:indoor:0", "procedural:indoor:1"])
    parser.add_argument("--clips", type=int, default=2)
    args = parser.parse_args()
    rows, speed = [], []
    for source in args.scenes:
        spec = parse_job_spec({"scenes": [source], "trajectories_per_scene": args.clips})
        scene, plan = plan_scene(spec, source)
        with EmbeddedRenderer(scene, RenderSettings()) as r:
            for clip in plan.clips:
                c2w = clip.c2w
                real = r.render(c2w, args.width)
                t0 = time.perf_counter()
                mesh = panorama_mesh(real.rgb[0], real.depth[0], c2w[0])
                t1 = time.perf_counter()
                render_guidance(mesh, c2w, args.width)
                t2 = time.perf_counter()
                speed.append((t1 - t0, len(c2w) / (t2 - t1)))
                rows += guidance_quality(real.rgb, real.depth, c2w)
    mesh_s = np.mean([s[0] for s in speed])
    fps = np.mean([s[1] for s in speed])
    print(f"{len(speed)} clips at {args.width}x{args.width // 2}: mesh built in {mesh_s:.2f} s "
          f"({args.width * args.width // 2 * 2 / 1e6:.1f} M triangles), guidance {fps:.1f} frames/s")
    print("| distance travelled | mesh PSNR (mask) | mesh mask | splat PSNR (mask) | splat mask |")
    print("|---|---|---|---|---|")
    for lo, hi in ((0.0, 0.01), (0.01, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 5.0)):
        sel = [r for r in rows if lo <= r["distance_m"] < hi]
        if sel:
            m = {k: _mean(sel, k) for k in ("mesh_psnr", "mesh_mask", "splat_psnr", "splat_mask")}
            print(f"| {lo:.2f}-{hi:.2f} m | {m['mesh_psnr']:.1f} dB | {m['mesh_mask']:.2f} | "
                  f"{m['splat_psnr']:.1f} dB | {m['splat_mask']:.2f} |")


if __name__ == "__main__":
    main()
