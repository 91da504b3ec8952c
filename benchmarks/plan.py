"""How close ``matrix-pano plan`` comes to the real build: estimated vs real seconds and bytes.

    python benchmarks/plan.py [--config configs/demo.yaml] [--workers N]

Plans the config (calibration render included, timed too), then builds it for real into a temporary folder
(Ray started here, as ``matrix-pano build`` does) and prints the estimate, the real figures and their ratios.
The issue asks for an estimate within a factor of 2 of the real build time. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from dataset.core.jobspec import load_job_spec
from dataset.jobs.build import run_build
from dataset.jobs.plan import format_plan, plan_job
from dataset.store.shards import committed_shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).parent.parent / "configs" / "demo.yaml"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    spec = load_job_spec(args.config)
    t = time.perf_counter()
    plan = plan_job(spec, workers=args.workers)
    plan_s = time.perf_counter() - t
    print(format_plan(plan))
    print(f"plan took {plan_s:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        counts = run_build(spec, Path(tmp) / "out", workers=args.workers, progress=False)
        build_s = time.perf_counter() - t
        real_bytes = sum(m["bytes"] for _, m in committed_shards(Path(tmp) / "out"))
    print(f"build: {counts['clips_committed']} of {counts['clips_planned']} clips committed (plan said "
          f"{plan.clips}), {build_s:.1f} s wall ({counts['seconds']} s by its manifest), {real_bytes / 1e6:.1f} MB")
    print(f"seconds: estimated {plan.estimated_seconds:.1f}, real {build_s:.1f}, ratio estimate/real "
          f"{plan.estimated_seconds / build_s:.2f}")
    print(f"bytes: estimated {plan.estimated_bytes / 1e6:.1f} MB, real {real_bytes / 1e6:.1f} MB, ratio "
          f"{plan.estimated_bytes / max(1, real_bytes):.2f}")


if __name__ == "__main__":
    main()
