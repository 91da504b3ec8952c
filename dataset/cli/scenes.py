"""Scene subcommands: ``render``, ``sample``, ``scenes`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dataset.cli.common import (
    CliError,
    field_choices,
    field_default,
    field_int_range,
    number_flag,
    output_folder,
    spec_flag,
)
from dataset.core.jobspec import EmbeddedRendererSpec, JobSpec, LimitsSpec, SamplingSpec, parse_spec
from dataset.core.scene import default_pose

WIDTH = field_default(JobSpec, "resolution")[0]
"""Default panorama width of ``render`` and ``demo``: the job spec's."""

WIDTH_FLAG = number_flag(int, ge=2, le=field_default(LimitsSpec, "max_width"))
"""``--width`` of ``render`` and ``demo``: at most the job spec's default ``limits.max_width``."""


def _parse_c2w(text: str) -> np.ndarray:
    try:
        values = [float(x) for x in text.replace(",", " ").split()]
    except ValueError as exc:
        raise CliError(f"--c2w must be 16 numbers (row-major camera-to-world 4x4): {exc}") from exc
    if len(values) != 16:
        raise CliError(f"--c2w must be 16 numbers (row-major camera-to-world 4x4), got {len(values)}")
    return np.array(values).reshape(1, 4, 4)


def save_frame(out_dir: Path, suffix: str, rgb: np.ndarray, depth: np.ndarray) -> None:
    """Write ``rgb{suffix}.png`` and ``depth{suffix}.npy`` (float32 range in metres)."""
    from PIL import Image

    Image.fromarray(rgb).save(out_dir / f"rgb{suffix}.png", compress_level=3)
    np.save(out_dir / f"depth{suffix}.npy", depth.astype(np.float32))


def cmd_render(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from dataset.core.trajectories import read_trajectory_file
    from dataset.jobs.renderers import make_renderer
    from dataset.sources import load_scene

    spec = parse_spec(EmbeddedRendererSpec, {"supersample": args.supersample, "shadows": args.shadows},
                      "--supersample")
    if args.c2w and args.trajectory:
        raise CliError("give either --c2w or --trajectory, not both")
    poses = read_trajectory_file(args.trajectory).c2w if args.trajectory else None
    single = _parse_c2w(args.c2w) if args.c2w else None
    out = output_folder(args.out)
    scene = load_scene(args.scene)
    print(scene.summary(), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    renderer = make_renderer(spec, scene)
    try:
        if poses is None:
            pose = single if single is not None else default_pose(scene)[None]
            frames = renderer.render(pose, args.width)
            save_frame(out, "", frames.rgb[0], frames.depth[0])
            print(f"wrote {out / 'rgb.png'} and {out / 'depth.npy'}", file=sys.stderr)
            return
        start = time.perf_counter()
        for i in tqdm(range(len(poses)), desc="render", unit="frame", file=sys.stderr):
            frames = renderer.render(poses[i], args.width)
            save_frame(out, f"_{i:05d}", frames.rgb[0], frames.depth[0])
        rate = len(poses) / (time.perf_counter() - start)
        print(f"wrote {len(poses)} frames to {out} ({rate:.1f} frames/s)", file=sys.stderr)
    finally:
        renderer.close()


def cmd_sample(args: argparse.Namespace) -> None:
    from dataset.sources import load_scene
    from sampling.paths import PathConfig
    from sampling.plot import plot_sampling
    from sampling.sampler import SamplingConfig, sample_trajectories
    from sampling.walkable import WalkableConfig

    out = output_folder(args.out)
    config = SamplingConfig(walkable=WalkableConfig(regions=args.regions),
                            path=PathConfig(frames=args.frames, step=args.step, fps=args.fps, heading=args.heading))
    scene = load_scene(args.scene)
    print(scene.summary(), file=sys.stderr)
    start = time.perf_counter()
    result = sample_trajectories(scene, args.count, seed=args.seed, config=config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trajectories.json").write_text(json.dumps(result.to_json(args.scene, args.seed, config)))
    plot_sampling(result, out / "plot.png", title=f"{args.scene}: {len(result.trajectories)} paths, "
                                                   f"{len(result.discarded)} discarded")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(result.trajectories)} trajectories ({len(result.discarded)} discarded) in "
          f"{time.perf_counter() - start:.1f} s: {out / 'trajectories.json'}, {out / 'plot.png'}", file=sys.stderr)


def cmd_scenes(args: argparse.Namespace) -> None:
    from dataset.sources import list_scenes

    rows = list_scenes()
    width = max(len(name) for name, _ in rows)
    for name, doc in rows:
        print(f"{name:<{width}}  {doc}")
    if not any(name.startswith("openarena:") for name, _ in rows):
        print("(no OpenArena maps found: apt-get install openarena-data, or set MATRIX_PANO_OPENARENA_PATH)",
              file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> None:
    """Render a few panoramas of a procedural scene and an OpenArena level with the embedded renderer."""
    from PIL import Image

    from dataset.jobs.renderers import make_renderer
    from dataset.sources import default_scenes, load_scene

    sources = default_scenes(most=1)
    if len(sources) == 2:
        print("no OpenArena maps found (apt-get install openarena-data): rendering procedural scenes only",
              file=sys.stderr)
    out = output_folder(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        scene = load_scene(source)
        print(scene.summary(), file=sys.stderr)
        start = time.perf_counter()
        renderer = make_renderer(EmbeddedRendererSpec(), scene)
        try:
            frames = renderer.render(default_pose(scene), args.width)
        finally:
            renderer.close()
        name = source.replace(":", "_")
        Image.fromarray(frames.rgb[0]).save(out / f"{name}.png")
        np.save(out / f"{name}_depth.npy", frames.depth[0])
        print(f"  {out / (name + '.png')}  ({time.perf_counter() - start:.2f} s incl. scene set-up)",
              file=sys.stderr)


def add_render(sub) -> None:
    p = sub.add_parser("render", help="render equirect panoramas (RGB PNG + range depth NPY) of a scene")
    p.add_argument("scene", help="scene string: procedural:indoor:SEED, openarena:MAP, or a mesh file path")
    p.add_argument("--c2w", help="camera-to-world pose as 16 numbers, row-major (default: first spawn point)")
    p.add_argument("--trajectory", help="JSON file {\"c2w\": [[16 numbers], ...]}: render every pose")
    p.add_argument("--width", type=WIDTH_FLAG, default=WIDTH,
                   help=f"panorama width; height is width / 2 (default {WIDTH})")
    supersample = field_int_range(EmbeddedRendererSpec, "supersample")  # checked by the spec model, listed here
    p.add_argument("--supersample", type=int, default=field_default(EmbeddedRendererSpec, "supersample"),
                   metavar="{" + ",".join(map(str, supersample)) + "}", help="colour samples per pixel side")
    p.add_argument("--shadows", action="store_true", help="cast sun shadows (unbaked scenes only)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_render)


def add_sample(sub) -> None:
    count, frames = field_default(JobSpec, "trajectories_per_scene"), field_default(JobSpec, "frames_per_clip")
    step, fps, seed = field_default(SamplingSpec, "step"), field_default(JobSpec, "fps"), field_default(JobSpec, "seed")
    heading = field_default(SamplingSpec, "heading")
    p = sub.add_parser("sample", help="sample collision-free camera trajectories on a scene's walkable floor")
    p.add_argument("scene", help="scene string: procedural:indoor:SEED, openarena:MAP, or a mesh file path")
    p.add_argument("--count", default=count, help=f"trajectories wanted (default {count})",
                   type=spec_flag(JobSpec, "trajectories_per_scene",
                                  le=field_default(LimitsSpec, "max_trajectories_per_scene")))
    p.add_argument("--frames", default=frames, help=f"poses per trajectory (default {frames})",
                   type=spec_flag(JobSpec, "frames_per_clip", le=field_default(LimitsSpec, "max_frames_per_clip")))
    p.add_argument("--step", type=spec_flag(SamplingSpec, "step"), default=step,
                   help=f"metres between frames (default {step:g})")
    p.add_argument("--fps", type=spec_flag(JobSpec, "fps"), default=fps,
                   help=f"frame rate for turn-rate limits (default {fps:g})")
    p.add_argument("--heading", default=heading, choices=field_choices(SamplingSpec, "heading"),
                   help=f"heading policy (default {heading})")
    p.add_argument("--seed", type=spec_flag(JobSpec, "seed"), default=seed, help=f"random seed (default {seed})")
    p.add_argument("--regions", default=field_default(SamplingSpec, "regions"),
                   choices=field_choices(SamplingSpec, "regions"),
                   help="walk the ground-connected floor only (ground, the default) or every region (all: roofs, "
                        "ledges)")
    p.add_argument("--out", required=True, help="output directory: trajectories.json and plot.png")
    p.set_defaults(func=cmd_sample)


def add_scenes(sub) -> None:
    p = sub.add_parser("scenes", help="list the built-in scene generators and the OpenArena maps found",
                       description="List the scene strings this machine can load: the procedural generators and "
                                   "the OpenArena maps found (apt-get install openarena-data); any glTF/OBJ/PLY "
                                   "file path is a scene too.")
    p.set_defaults(func=cmd_scenes)


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="render panoramas of procedural scenes and an OpenArena level",
                       description="Render one panorama (RGB PNG + range depth NPY) of each procedural generator "
                                   "and of an OpenArena level when one is installed: a quick look at what the "
                                   "embedded renderer makes, no dataset built.")
    p.add_argument("--out", default="demo-renders", help="output directory (default ./demo-renders; ./demo is the "
                                                         "dataset the README's first command builds)")
    p.add_argument("--width", type=WIDTH_FLAG, default=WIDTH, help=f"panorama width (default {WIDTH})")
    p.set_defaults(func=cmd_demo)
