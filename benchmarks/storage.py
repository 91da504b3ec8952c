"""Clip storage trade-off: H.264 quality (PSNR vs the rendered frames) and size per CRF, and depth size/error.

    python benchmarks/storage.py [--scene procedural:indoor:0] [--frames 49] [--width 960] [--crf 12 18 23 28]

Renders one sampled clip, encodes it at each CRF with the build's preset (one encoder thread, as in
a build worker) and decodes it back; then packs its depth as zstd float16 and reports the largest
relative error on hit pixels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataset.core.codecs import decode_depth, decode_mp4, encode_depth, encode_mp4, psnr
from dataset.core.jobspec import parse_job_spec
from dataset.jobs.worker import plan_scene
from dataset.render.embedded import EmbeddedRenderer, RenderSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="procedural:indoor:0")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--crf", type=int, nargs="+", default=[12, 18, 23, 28])
    parser.add_argument("--preset", default="veryfast")
    args = parser.parse_args()

    spec = parse_job_spec({"scenes": [args.scene], "trajectories_per_scene": 1, "frames_per_clip": args.frames,
                           "resolution": [args.width, args.width // 2]})
    scene, plan = plan_scene(spec, args.scene)
    c2w = plan.clips[0].c2w
    with EmbeddedRenderer(scene, RenderSettings()) as renderer:
        frames = renderer.render(c2w, args.width)
    n = len(c2w)
    raw_mb = frames.rgb.nbytes / 1e6
    print(f"{args.scene}: {n} frames at {args.width}x{args.width // 2}, raw RGB {raw_mb:.1f} MB")
    print("| CRF | MP4 MB per clip | kB per frame | PSNR dB | encode frames/s | decode frames/s |")
    print("|---|---|---|---|---|---|")
    for crf in args.crf:
        t0 = time.perf_counter()
        data = encode_mp4(frames.rgb, spec.fps, crf=crf, preset=args.preset, threads=1)
        t1 = time.perf_counter()
        decoded = decode_mp4(data)
        t2 = time.perf_counter()
        print(f"| {crf} | {len(data) / 1e6:.2f} | {len(data) / n / 1e3:.1f} | {psnr(decoded, frames.rgb):.1f} | "
              f"{n / (t1 - t0):.0f} | {n / (t2 - t1):.0f} |")
    t0 = time.perf_counter()
    packed = encode_depth(frames.depth)
    t1 = time.perf_counter()
    depth = decode_depth(packed, frames.depth.shape)
    hit = frames.depth > 0
    rel = np.abs(depth[hit] - frames.depth[hit]) / frames.depth[hit]
    print(f"depth: {len(packed) / 1e6:.2f} MB per clip (float32 {frames.depth.nbytes / 1e6:.1f} MB), "
          f"max relative error {rel.max() * 100:.3f} %, encode {n / (t1 - t0):.0f} frames/s")


if __name__ == "__main__":
    main()
