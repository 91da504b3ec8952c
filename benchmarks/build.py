"""End-to-end build throughput: clips per minute with 1 and 2 workers, and overhead over rendering alone.

    python benchmarks/build.py [--config configs/demo.yaml] [--workers 1 2] [--trajectories N]

Ray is started once (its start-up time is printed separately: a long build pays it once). Each build
runs into a fresh folder, so it samples, renders, encodes, scores and commits every clip. "Rendering
alone" renders exactly the same poses of the same scenes (scene load included) with the embedded
renderer on all cores, without sampling, encoding or writing: the floor the build is compared with.
Targets: 2 workers >= 1.7x the clips/min of 1 worker; the build <= 1.3x the time of rendering alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def render_alone(out: Path, width: int, threads: int) -> tuple[float, int]:
    """Seconds to load every planned scene and render every planned pose; number of frames."""
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.sources import load_scene

    start = time.perf_counter()
    frames = 0
    for plan_file in sorted((out / "plans").glob("*.json")):
        plan = json.loads(plan_file.read_text())
        with EmbeddedRenderer(load_scene(plan.scene), RenderSettings(threads=threads)) as renderer:
            for clip in plan.clips:
                for pose in clip.c2w:
                    renderer.render(pose[None], width)
                    frames += 1
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).parent.parent / "configs" / "demo.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trajectories", type=int, help="override trajectories_per_scene of the config")
    args = parser.parse_args()

    import ray

    from dataset.core.jobspec import load_job_spec
    from dataset.jobs.build import run_build

    spec = load_job_spec(args.config)
    if args.trajectories:
        spec = spec.model_copy(update={"trajectories_per_scene": args.trajectories})
    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=max(max(args.workers), 1), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    print(f"ray start-up: {time.perf_counter() - t0:.1f} s ({cpus} cores on this machine)")
    clips = len(spec.scenes) * spec.trajectories_per_scene
    print(f"job: {len(spec.scenes)} scenes x {spec.trajectories_per_scene} clips x {spec.frames_per_clip} frames "
          f"at {spec.resolution[0]}x{spec.resolution[1]}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            out = Path(tmp) / f"w{n}"
            start = time.perf_counter()
            counts = run_build(spec, out, workers=n, progress=False)
            seconds = time.perf_counter() - start
            rates[n] = (counts["clips_committed"] / seconds * 60, seconds)
            print(f"build, {n} worker(s): {seconds:.1f} s, {counts['clips_committed']} clips, "
                  f"{rates[n][0]:.1f} clips/min, {counts['clips_committed'] * spec.frames_per_clip / seconds:.1f} "
                  f"frames/s")
        ray.shutdown()
        alone, frames = render_alone(out, spec.resolution[0], threads=cpus)
        print(f"rendering alone ({cpus} threads, scene loads included): {alone:.1f} s for {frames} frames, "
              f"{frames / alone:.1f} frames/s")
    if 1 in rates and len(rates) > 1:
        best = max(rates)
        print(f"scaling {best} vs 1 worker: {rates[best][0] / rates[1][0]:.2f}x (target >= 1.7)")
    best = max(rates)
    print(f"build / rendering alone: {rates[best][1] / alone:.2f} (target <= 1.3)")
    if clips != counts["clips_committed"]:
        print(f"note: {clips - counts['clips_committed']} planned clips were not committed (see failures.parquet)")


if __name__ == "__main__":
    main()
