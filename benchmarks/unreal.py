"""Unreal backend throughput through the UnrealCV stand-in: panoramas per second, protocol cost vs rendering,
pipelined vs sequential requests; depth agreement with the embedded renderer for two cube-face sizes.

    python benchmarks/unreal.py [--width 960] [--frames 10] [--tick-ms 16.7] [--depth-scene openarena:oa_ctf2]

"precomputed": the stand-in answers every image request with one ready image, so the figure is the
protocol's own cost (framing, PNG/NPY transfer and decoding, stitching). "rendered": the stand-in renders
each cube face with the embedded renderer, as a game would. The stand-in emulates UnrealCV's game
thread (at most 32 requests per tick of ``--tick-ms``): sequential requests pay one tick each, pipelined
batches (24 requests per panorama) one tick per panorama.

Depth: ``--depth-width`` panoramas at the first ``--frames`` spawn points of ``--depth-scene``, through the
backend with faces of width / 4 and 1.1 x width / 4, against the embedded renderer's range on the same
poses: hit/no-hit agreement and the share of pixels hit by both within 1 % and 3 %, with the time per
panorama (the stand-in renders the faces, no game-tick emulation).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dataset.core.conventions import CUBE_LAYOUT, c2w_to_ue_pose, crop_rotation
from dataset.core.scene import default_poses
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from dataset.sources import load_scene
from ue_plugin.backend import UnrealCVRenderer
from ue_plugin.standin import StandinServer


def sequential(renderer: UnrealCVRenderer, poses: np.ndarray, width: int) -> None:
    """The same 24 requests per panorama as the backend, one round trip each (no stitching)."""
    face = max(16, width // 4)
    cam = renderer.camera
    renderer.client.request(f"vset /camera/{cam}/size {face} {face}")
    for pose in poses:
        for yaw, pitch in CUBE_LAYOUT:
            c2w = pose.copy()
            c2w[:3, :3] = pose[:3, :3] @ crop_rotation(yaw, pitch)
            loc, rot = c2w_to_ue_pose(c2w)
            for command in (f"vset /camera/{cam}/location {loc[0]:.4f} {loc[1]:.4f} {loc[2]:.4f}",
                            f"vset /camera/{cam}/rotation {rot[0]:.5f} {rot[1]:.5f} {rot[2]:.5f}",
                            f"vget /camera/{cam}/lit png", f"vget /camera/{cam}/depth npy"):
                renderer.client.request(command)
    renderer._size = face


def depth_agreement(source: str, width: int, frames: int) -> None:
    """Print depth agreement with the embedded renderer and time per panorama for two cube-face sizes."""
    scene = load_scene(source)
    poses = default_poses(scene, frames)
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        ref = r.render(poses, width).depth
    print(f"depth vs the embedded renderer: {source}, {len(poses)} spawn points, {width}x{width // 2}")
    for face_scale in (1.0, 1.1):
        with StandinServer(scene) as srv, UnrealCVRenderer(f"127.0.0.1:{srv.port}", face_scale=face_scale) as ue:
            ue.render(poses[:1], width)  # warm-up (face size, stitcher tables)
            t0 = time.perf_counter()
            got = ue.render(poses, width).depth
            per_pano = (time.perf_counter() - t0) / len(poses)
        hit = (got > 0) & (ref > 0)
        rel = np.abs(got[hit] - ref[hit]) / ref[hit]
        print(f"  faces {ue._size} px (x{face_scale}): {per_pano * 1000:.0f} ms/pano, hit/no-hit "
              f"{((got > 0) == (ref > 0)).mean():.2%}, within 1 % {(rel <= 0.01).mean():.2%}, within 3 % "
              f"{(rel <= 0.03).mean():.2%}, median {np.median(rel):.3%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="procedural:indoor:0")
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--tick-ms", type=float, default=1000 / 60)
    parser.add_argument("--depth-scene", default="openarena:oa_ctf2")
    parser.add_argument("--depth-width", type=int, default=512)
    args = parser.parse_args()
    scene = load_scene(args.scene)
    lo, hi = scene.bounds()
    x, y, z = scene.spawn_points[0][:3] if len(scene.spawn_points) else (lo + hi) / 2
    poses = np.repeat(np.eye(4)[None], args.frames, axis=0)
    poses[:, :3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # level camera looking along +x
    poses[:, :3, 3] = [x, y, z + 1.6]
    poses[:, 0, 3] += np.linspace(0, 0.5, args.frames)
    print(f"{args.scene}, {args.frames} panoramas at {args.width}x{args.width // 2} (6 faces of "
          f"{args.width // 4} px), game tick {args.tick_ms:.1f} ms")
    for precomputed in (True, False):
        with StandinServer(scene, precomputed=precomputed, tick_s=args.tick_ms / 1000) as srv:
            with UnrealCVRenderer(f"127.0.0.1:{srv.port}") as r:
                r.render(poses[:1], args.width)  # warm-up
                t0 = time.perf_counter()
                r.render(poses, args.width)
                pipelined = time.perf_counter() - t0
                t0 = time.perf_counter()
                sequential(r, poses, args.width)
                seq = time.perf_counter() - t0
        label = "precomputed (protocol only)" if precomputed else "rendered by the stand-in"
        print(f"{label}: pipelined {args.frames / pipelined:.2f} pano/s, sequential requests (transfer only, "
              f"no stitching) {args.frames / seq:.2f} pano/s, pipelining {seq / pipelined:.1f}x faster")
    depth_agreement(args.depth_scene, args.depth_width, args.frames)


if __name__ == "__main__":
    main()
