"""Panoramic reconstruction (``inference.reconstruct``): seconds per stage, Gaussian counts and held-out PSNR/SSIM
against both baselines (``init``: the depth point cloud as it is; ``mesh``: the frame-0 panorama mesh).

    python benchmarks/reconstruct.py [--width 512] [--frames 11] [--iterations 600] [--crop-size 32]
                                     [--max-points 20000] [--eval-every 2] [--gpu-frames 81]

CPU part (the reference rasterizer): a short walk from the default pose of ``procedural:indoor:1`` and of
``openarena:oa_dm1`` (skipped without openarena-data), rendered by the embedded renderer and reconstructed by
``reconstruct_clip`` into a temporary folder at a small crop size. The walk turns slightly each frame; its
heading is the default pose's, or the nearest turn of it in 45 degree steps whose view ahead is clear of the
whole walk plus ``CLEARANCE``, so the camera stays inside the level.

GPU part (only with CUDA and gsplat): a 960x480 81-frame clip sampled like a build's in ``procedural:indoor:1``,
reconstructed with the full recipe (3000 iterations, 512 px crops, 300 k points) through gsplat, next to Matrix-3D's
Table 3 (571 s, 27.62 dB).

Both parts also evaluate ``off_trajectory`` views: panoramas rendered by the scene 30 cm beside held-out frames.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np

from dataset.core.conventions import heading_of, pose_from_heading
from dataset.core.scene import default_pose
from dataset.render.embedded import EmbeddedRenderer
from dataset.sources import load_scene
from dataset.sources.quake3 import find_openarena_maps
from inference.gs_opt import OptConfig
from inference.reconstruct import (
    BASELINES,
    ReconConfig,
    reconstruct_clip,
    render_off_trajectory,
)

CLEARANCE = 0.5
"""Free distance beyond the walk's end that its view ahead must show, metres."""
WEDGE_DEG = 20.0
"""Half-width (heading and elevation) of the view ahead checked for clearance, degrees."""
COLUMNS = ("init", "mesh")
"""The baselines in the table (the text lines show every baseline)."""
TABLE3 = {"seconds": 571.0, "psnr": 27.62}
"""Matrix-3D's optimisation reconstruction at 480p (its Table 3)."""


def clearance(depth: np.ndarray, offset: float) -> float:
    """Nearest surface (metres; inf if none) of a range panorama (H, W) within ``WEDGE_DEG`` of the horizon and of
    the heading ``offset`` radians counter-clockwise from the camera's."""
    h, w = depth.shape
    lon = 2 * np.pi * ((np.arange(w) + 0.5) / w - 0.5)
    lat = np.pi * (0.5 - (np.arange(h) + 0.5) / h)
    wedge = math.radians(WEDGE_DEG)
    # heading = camera heading - longitude (column 3W/4 looks right), wrapped to (-pi, pi]
    cols = np.abs(np.angle(np.exp(1j * (-lon - offset)))) <= wedge
    ahead = depth[np.abs(lat) <= wedge][:, cols]
    hits = ahead[ahead > 0]
    return float(hits.min()) if hits.size else math.inf


def walk(renderer: EmbeddedRenderer, start: np.ndarray, frames: int, step: float, turn_deg: float) -> np.ndarray:
    """Poses (frames, 4, 4) of a walk from ``start``, ``step`` metres and ``turn_deg`` degrees per frame, along the
    first heading (the start's, then +-45, +-90, ...) whose view ahead is clear of the walk plus ``CLEARANCE``."""
    length = step * (frames - 1)
    probe = renderer.render(start, 256).depth[0]
    offsets = [0.0] + [s * k * math.pi / 4 for k in (1, 2, 3) for s in (1, -1)] + [math.pi]
    offset = next((o for o in offsets if clearance(probe, o) >= length + CLEARANCE), None)
    if offset is None:
        raise RuntimeError(f"no heading from {start[:3, 3]} is clear for {length:.2f} m")
    heading, position = float(heading_of(start)) + offset, start[:3, 3].copy()
    poses = []
    for _ in range(frames):
        poses.append(pose_from_heading(position, heading))
        heading += math.radians(turn_deg)
        position = position + step * np.array([math.cos(heading), math.sin(heading), 0.0])
    print(f"  walk: {length:.2f} m, heading {math.degrees(offset):+.0f} deg from the start pose "
          f"(clear ahead {clearance(probe, offset):.2f} m)")
    return np.stack(poses)


def cpu_clip(source: str, args: argparse.Namespace) -> dict:
    """Render a short walk in ``source`` and reconstruct it with the reference rasterizer."""
    t = time.perf_counter()
    scene = load_scene(source)
    with EmbeddedRenderer(scene) as renderer:
        c2w = walk(renderer, default_pose(scene), args.frames, args.step, args.turn)
        clip = renderer.render(c2w, args.width)
    render_s = time.perf_counter() - t
    cfg = ReconConfig(crop_size=args.crop_size, max_points=args.max_points, eval_every=args.eval_every,
                      opt=OptConfig().with_iterations(args.iterations))
    off = render_off_trajectory({"scene": source, "renderer": "embedded"}, clip.rgb, clip.depth, c2w, cfg)
    with tempfile.TemporaryDirectory() as out:
        m = reconstruct_clip(clip.rgb, clip.depth, c2w, out, cfg, backend="torch", progress=False,
                             off_trajectory=off)
    return {**m, "seconds": {"render": render_s, **m["seconds"]}}


def gpu_clip(args: argparse.Namespace) -> dict:
    """An 81-frame 960x480 build-like clip reconstructed with the full recipe, Gaussians on CUDA through gsplat."""
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.worker import plan_scene

    source = "procedural:indoor:1"
    t = time.perf_counter()
    scene, plan = plan_scene(parse_job_spec({"scenes": [source], "frames_per_clip": args.gpu_frames,
                                             "trajectories_per_scene": 1}), source)
    c2w = plan.clips[0].c2w
    with EmbeddedRenderer(scene) as renderer:
        clip = renderer.render(c2w, 960)
    render_s = time.perf_counter() - t
    cfg = ReconConfig(eval_every=args.eval_every)
    off = render_off_trajectory({"scene": source, "renderer": "embedded"}, clip.rgb, clip.depth, c2w, cfg)
    with tempfile.TemporaryDirectory() as out:
        m = reconstruct_clip(clip.rgb, clip.depth, c2w, out, cfg, backend="gsplat", device="cuda",
                             off_trajectory=off)
    return {**m, "seconds": {"render": render_s, **m["seconds"]}}


def gpu_skip_reason() -> str | None:
    """Why the GPU part cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import gsplat  # noqa: F401
    except Exception as e:  # a broken CUDA build raises more than ImportError
        return f"gsplat does not import ({type(e).__name__}: {e}; pip install gsplat)"
    return None


def report(m: dict) -> None:
    """Print one clip's figures."""
    s = m["seconds"]
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
    print(f"  Gaussians: {m['gaussians_init']} initial -> {m['gaussians']} after optimisation")
    for label, t in (("held-out frames", m), ("off-trajectory", m.get("off_trajectory"))):
        if t is None:
            print(f"  {label}: none ({m.get('missing', {}).get('off_trajectory', 'not computed')})")
            continue
        line = [f"ours {t['psnr']:.2f} dB / {t['ssim']:.3f}"]
        for b in BASELINES:
            base = t["baselines"][b]
            line.append(f"{b} {base['psnr']:.2f} dB / {base['ssim']:.3f} (gain {t['psnr'] - base['psnr']:+.2f} dB)")
        print(f"  {label} PSNR / SSIM: {'; '.join(line)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512, help="panorama width of the CPU clips")
    parser.add_argument("--frames", type=int, default=11, help="frames of the CPU walks")
    parser.add_argument("--step", type=float, default=0.06, help="metres per frame of the CPU walks")
    parser.add_argument("--turn", type=float, default=1.5, help="degrees of turn per frame of the CPU walks")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--crop-size", type=int, default=32)
    parser.add_argument("--max-points", type=int, default=20000)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--gpu-frames", type=int, default=81, help="frames of the GPU clip")
    parser.add_argument("--scenes", nargs="+", default=["procedural:indoor:1", "openarena:oa_dm1"])
    args = parser.parse_args()

    maps = {f"openarena:{name}" for name, _ in find_openarena_maps()}
    rows = []
    for source in args.scenes:
        if source.startswith("openarena:") and source not in maps:
            print(f"{source}: skipped, openarena-data is not installed (apt-get install openarena-data)")
            continue
        print(f"{source}: {args.frames} frames at {args.width}x{args.width // 2}, reference rasterizer, "
              f"{args.iterations} iterations, {args.crop_size} px crops, {args.max_points} points at most")
        m = cpu_clip(source, args)
        report(m)
        rows.append((source, f"{args.width}x{args.width // 2}x{args.frames}", "torch", m))

    reason = gpu_skip_reason()
    if reason is None:
        print(f"GPU: procedural:indoor:1, {args.gpu_frames} frames at 960x480, gsplat, full recipe")
        m = gpu_clip(args)
        report(m)
        print(f"  Matrix-3D Table 3: {TABLE3['seconds']:.0f} s, {TABLE3['psnr']:.2f} dB; here "
              f"{m['seconds']['total']:.0f} s ({m['seconds']['total'] / TABLE3['seconds']:.2f}x), "
              f"{m['psnr']:.2f} dB ({m['psnr'] - TABLE3['psnr']:+.2f} dB)")
        rows.append(("procedural:indoor:1", f"960x480x{args.gpu_frames}", "gsplat", m))
    else:
        print(f"GPU part skipped: {reason}")

    print("| clip | size | backend | its | crop | Gaussians init -> final | render s | views s | init s | optimise s "
          "(ms/it) | evaluate s | total s | PSNR / SSIM | init PSNR / SSIM | mesh PSNR / SSIM | gain vs init "
          "| gain vs mesh | off-trajectory PSNR: ours / init / mesh |")
    print("|---" * 18 + "|")
    for source, size, backend, m in rows:
        s, opt, base = m["seconds"], m["config"]["opt"], m["baselines"]
        print(f"| {source} | {size} | {backend} | {opt['iterations']} | {m['config']['crop_size']} | "
              f"{m['gaussians_init']} -> {m['gaussians']} | {s['render']:.1f} | {s['views']:.1f} | {s['init']:.1f} | "
              f"{s['optimise']:.1f} ({1000 * s['optimise'] / opt['iterations']:.0f}) | {s['evaluate']:.1f} | "
              f"{s['total']:.1f} | {m['psnr']:.2f} / {m['ssim']:.3f} | "
              + " | ".join(f"{base[b]['psnr']:.2f} / {base[b]['ssim']:.3f}" for b in COLUMNS) + " | "
              + " | ".join(f"{m['psnr'] - base[b]['psnr']:+.2f} dB" for b in COLUMNS) + " | "
              + (" / ".join(f"{v:.2f}" for v in [off["psnr"]] + [off["baselines"][b]["psnr"] for b in COLUMNS])
                 if (off := m.get("off_trajectory")) else "-") + " |")
    if reason is None:
        print(f"| Matrix-3D Table 3 | 960x480x81 | | 3000 | | | | | | | | {TABLE3['seconds']:.0f} | "
              f"{TABLE3['psnr']:.2f} / - | | | | | |")


if __name__ == "__main__":
    main()
