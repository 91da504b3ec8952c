"""The ``matrix-pano`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .conventions import EYE_HEIGHT
from .jobspec import JobError
from .scene import Scene, SceneError


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def default_pose(scene: Scene) -> np.ndarray:
    """A sensible camera: the first spawn point at eye height, else the centre of the scene's bounds."""
    from .conventions import pose_from_heading

    if len(scene.spawn_points):
        x, y, z, heading = scene.spawn_points[0]
        return pose_from_heading((x, y, z + EYE_HEIGHT), heading)
    lo, hi = scene.bounds()
    centre = (lo + hi) / 2
    return pose_from_heading((centre[0], centre[1], min(lo[2] + EYE_HEIGHT, centre[2])), 0.0)


def _parse_c2w(text: str) -> np.ndarray:
    try:
        values = [float(x) for x in text.replace(",", " ").split()]
    except ValueError as exc:
        raise CliError(f"--c2w must be 16 numbers (row-major camera-to-world 4x4): {exc}") from exc
    if len(values) != 16:
        raise CliError(f"--c2w must be 16 numbers (row-major camera-to-world 4x4), got {len(values)}")
    return np.array(values).reshape(1, 4, 4)


def load_trajectory_file(path: str | Path) -> np.ndarray:
    """Poses (N, 4, 4) from a JSON object with key ``c2w``: a list of 16-number lists (or 4x4 lists)."""
    from .conventions import as_c2w_array

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CliError(f"trajectory file {path} does not exist") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"cannot read trajectory file {path}: {exc}") from exc
    if not isinstance(data, dict) or "c2w" not in data:
        raise CliError(f"trajectory file {path} must be a JSON object with key 'c2w' (a list of 16-number lists)")
    try:
        poses = as_c2w_array(data["c2w"])
    except ValueError as exc:
        raise CliError(f"trajectory file {path}: {exc}") from exc
    if len(poses) == 0:
        raise CliError(f"trajectory file {path} has no poses")
    return poses


def _renderer(scene: Scene, args: argparse.Namespace):
    from .render.embedded import EmbeddedRenderer, RenderSettings

    return EmbeddedRenderer(scene, RenderSettings(supersample=args.supersample, shadows=args.shadows))


def save_frame(out_dir: Path, suffix: str, rgb: np.ndarray, depth: np.ndarray) -> None:
    """Write ``rgb{suffix}.png`` and ``depth{suffix}.npy`` (float32 range in metres)."""
    from PIL import Image

    Image.fromarray(rgb).save(out_dir / f"rgb{suffix}.png", compress_level=3)
    np.save(out_dir / f"depth{suffix}.npy", depth.astype(np.float32))


def cmd_render(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .sources import load_scene

    if args.c2w and args.trajectory:
        raise CliError("give either --c2w or --trajectory, not both")
    poses = load_trajectory_file(args.trajectory) if args.trajectory else None
    single = _parse_c2w(args.c2w) if args.c2w else None
    scene = load_scene(args.scene)
    print(scene.summary(), file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    renderer = _renderer(scene, args)
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
    from sampling.paths import PathConfig
    from sampling.plot import plot_sampling
    from sampling.sampler import SamplingConfig, sample_trajectories

    from .sources import load_scene

    if args.count < 1:
        raise CliError("--count must be at least 1")
    config = SamplingConfig(path=PathConfig(frames=args.frames, step=args.step, fps=args.fps, heading=args.heading))
    scene = load_scene(args.scene)
    print(scene.summary(), file=sys.stderr)
    start = time.perf_counter()
    result = sample_trajectories(scene, args.count, seed=args.seed, config=config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trajectories.json").write_text(json.dumps(result.to_json(args.scene, args.seed, config)))
    plot_sampling(result, out / "plot.png", title=f"{args.scene}: {len(result.trajectories)} paths, "
                                                   f"{len(result.discarded)} discarded")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(result.trajectories)} trajectories ({len(result.discarded)} discarded) in "
          f"{time.perf_counter() - start:.1f} s: {out / 'trajectories.json'}, {out / 'plot.png'}", file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> None:
    from .build import run_build
    from .jobspec import load_job_spec

    spec = load_job_spec(args.config)
    counts = run_build(spec, args.out, ray_address=args.ray_address, workers=args.workers, overwrite=args.overwrite)
    print(f"built {args.out}: {counts['clips_committed']} clips committed ({counts['accepted']} accepted, "
          f"{counts['rejected']} rejected) in {counts['shards']} shards, {counts['clips_failed']} failed "
          f"(see failures.parquet), {counts['seconds']} s", file=sys.stderr)


def cmd_verify(args: argparse.Namespace) -> None:
    from .reader import verify_dataset

    problems = verify_dataset(args.dir, decode=not args.no_decode)
    if problems:
        for p in problems[:50]:
            print(p, file=sys.stderr)
        more = " (first 50 shown)" if len(problems) > 50 else ""
        raise CliError(f"{args.dir}: {len(problems)} problems found{more}")
    print(f"{args.dir}: all committed shards are valid", file=sys.stderr)


def cmd_stats(args: argparse.Namespace) -> None:
    from .stats import dataset_stats, write_previews

    stats = dataset_stats(args.dir)
    print(json.dumps(stats, indent=1))
    if not args.no_previews:
        for path in write_previews(args.dir):
            print(f"wrote {path}", file=sys.stderr)


def cmd_annotate(args: argparse.Namespace) -> None:
    from annotation.annotate import AnnotateSpec, run_annotate

    from .jobspec import load_yaml_spec, parse_spec

    spec = load_yaml_spec(args.config, AnnotateSpec, "annotate spec") if args.config else AnnotateSpec()
    if args.model:
        captioner = {**(spec.captioner.model_dump() if spec.captioner else {}), "model": args.model}
        spec = parse_spec(AnnotateSpec, {**spec.model_dump(), "captioner": captioner}, "--model")
    counts = run_annotate(args.dir, args.out, spec, ray_address=args.ray_address, workers=args.workers,
                          overwrite=args.overwrite)
    print(f"annotated {args.out}: {counts['clips']} clips in {counts['shards']} shards ({counts['accepted']} "
          f"accepted, {counts['rejected']} rejected), {counts['seconds']} s", file=sys.stderr)


def cmd_review(args: argparse.Namespace) -> None:
    from annotation.review import serve

    server = serve(args.dir, args.host, args.port, args.reviewer)
    host, port = server.server_address[:2]
    print(f"reviewing {args.dir}: open http://{host}:{port}/ (decisions go to {args.dir}/review.jsonl; "
          f"Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def cmd_export(args: argparse.Namespace) -> None:
    from annotation.export import run_export

    counts = run_export(args.dir, args.out, args.status, args.overwrite)
    print(f"exported {counts['clips_out']} of {counts['clips_in']} clips ({args.status}) into {args.out} "
          f"({counts['shards']} shards)", file=sys.stderr)


def cmd_unreal_standin(args: argparse.Namespace) -> None:
    from ue_plugin.standin import StandinServer

    from .sources import load_scene

    server = StandinServer(load_scene(args.scene), host=args.host, port=args.port)
    print(f"UnrealCV stand-in for {args.scene} listening on {server.host}:{server.port} (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()


def cmd_unreal_ingest(args: argparse.Namespace) -> None:
    from ue_plugin.ingest import ingest_mrq

    data = json.loads(Path(args.trajectories).read_text())
    try:
        traj = data["trajectories"][args.index]
    except (KeyError, IndexError, TypeError):
        raise CliError(f"{args.trajectories} has no trajectory {args.index} (a matrix-pano sample output)") from None
    c2w = np.asarray(traj["c2w"], np.float64).reshape(-1, 4, 4)
    clip = ingest_mrq(args.frames, c2w, args.fps, args.out, traj["id"], data.get("scene", "unreal"),
                      args.color_pass, args.depth_pass)
    print(f"ingested {args.frames} as clip {clip} into {args.out}", file=sys.stderr)


def cmd_guidance(args: argparse.Namespace) -> None:
    from inference.guidance import PRESETS, load_trajectory, preset_trajectory, safe_rescale, write_guidance

    if args.from_clip:
        from .reader import PanoDataset

        folder, clip_id = args.from_clip
        clip = next((c for c in PanoDataset(folder).clips() if c.clip_id == clip_id), None)
        if clip is None:
            raise CliError(f"{folder} has no committed clip {clip_id!r} (see matrix-pano stats {folder})")
        rgb, depth, c2w0 = clip.frames()[0], clip.depth()[0], clip.c2w[0]
        clip_poses, fps = clip.c2w, clip.row["fps"]
    elif args.panorama and args.depth:
        from PIL import Image

        rgb = np.asarray(Image.open(args.panorama).convert("RGB"))
        depth = np.load(args.depth, allow_pickle=False).astype(np.float32)
        c2w0, clip_poses, fps = np.eye(4), None, args.fps
    else:
        raise CliError("give --panorama PNG --depth NPY, or --from-clip DATASET_DIR CLIP_ID")
    if args.trajectory is None and clip_poses is None:
        raise CliError("give --trajectory FILE or one of the presets: " + ", ".join(PRESETS))
    if args.trajectory is None:
        poses = clip_poses  # the clip's own camera path: guidance to compare with its real frames
    else:
        local = (preset_trajectory(args.trajectory, depth, args.frames, args.movement)
                 if args.trajectory in PRESETS else load_trajectory(args.trajectory))
        if args.safety:
            local = safe_rescale(local, depth, args.safety)
        poses = c2w0[None] @ local if args.trajectory in PRESETS else local
    summary = write_guidance(args.out, rgb, depth, c2w0, poses, fps, args.threshold)
    masks = summary["mask_fraction"]
    print(json.dumps({"frames": summary["frames"], "mask_fraction_first": round(masks[0], 4),
                      "mask_fraction_last": round(masks[-1], 4),
                      "invisible_fraction": round(summary["invisible_fraction"], 4)}))
    print(f"wrote {args.out}/rendered_rgb.mp4, rendered_mask.mp4, cameras.json, contact_sheet.png", file=sys.stderr)


def cmd_scenes(args: argparse.Namespace) -> None:
    from .sources import list_scenes

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

    from .render.embedded import EmbeddedRenderer
    from .sources import list_scenes, load_scene

    sources = ["procedural:indoor:0", "procedural:outdoor:0"]
    maps = [name for name, _ in list_scenes() if name.startswith("openarena:")]
    preferred = [m for m in ("openarena:oa_dm1", "openarena:aggressor") if m in maps]
    sources += preferred[:1] or maps[:1]
    if not maps:
        print("no OpenArena maps found (apt-get install openarena-data): rendering procedural scenes only",
              file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        scene = load_scene(source)
        print(scene.summary(), file=sys.stderr)
        start = time.perf_counter()
        with EmbeddedRenderer(scene) as renderer:
            frames = renderer.render(default_pose(scene), args.width)
        name = source.replace(":", "_")
        Image.fromarray(frames.rgb[0]).save(out / f"{name}.png")
        np.save(out / f"{name}_depth.npy", frames.depth[0])
        print(f"  {out / (name + '.png')}  ({time.perf_counter() - start:.2f} s incl. scene set-up)",
              file=sys.stderr)


def _add_job_options(p: argparse.ArgumentParser, workers_help: str) -> None:
    """--ray-address, --workers and --overwrite of the distributed jobs."""
    p.add_argument("--ray-address", help="join a Ray cluster ('auto' or 'ray://host:port'); default: start one here")
    p.add_argument("--workers", type=int, help=workers_help)
    p.add_argument("--overwrite", action="store_true", help="delete an existing output in --out and start over")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matrix-pano", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="render equirect panoramas (RGB PNG + range depth NPY) of a scene")
    p.add_argument("scene", help="scene string: procedural:indoor:SEED, openarena:MAP, or a mesh file path")
    p.add_argument("--c2w", help="camera-to-world pose as 16 numbers, row-major (default: first spawn point)")
    p.add_argument("--trajectory", help="JSON file {\"c2w\": [[16 numbers], ...]}: render every pose")
    p.add_argument("--width", type=int, default=960, help="panorama width; height is width / 2 (default 960)")
    p.add_argument("--supersample", type=int, default=1, choices=[1, 2, 3, 4], help="colour samples per pixel side")
    p.add_argument("--shadows", action="store_true", help="cast sun shadows (unbaked scenes only)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("sample", help="sample collision-free camera trajectories on a scene's walkable floor")
    p.add_argument("scene", help="scene string: procedural:indoor:SEED, openarena:MAP, or a mesh file path")
    p.add_argument("--count", type=int, default=4, help="trajectories wanted (default 4)")
    p.add_argument("--frames", type=int, default=49, help="poses per trajectory (default 49)")
    p.add_argument("--step", type=float, default=0.1, help="metres between frames (default 0.1)")
    p.add_argument("--fps", type=float, default=12.0, help="frame rate for turn-rate limits (default 12)")
    p.add_argument("--heading", default="travel", choices=["travel", "fixed", "look_around"],
                   help="heading policy (default travel)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output directory: trajectories.json and plot.png")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("build", help="build a dataset of panoramic clips from a job spec (resumable)")
    p.add_argument("config", help="job spec YAML (scenes, trajectories_per_scene, frames_per_clip, ...)")
    p.add_argument("--out", required=True, help="dataset folder: shards/, manifest.json, failures.parquet")
    _add_job_options(p, "render workers (default: one per CPU of the cluster)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("verify", help="check every committed shard of a dataset; non-zero exit on problems")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--no-decode", action="store_true", help="skip decoding videos and depth (faster)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("stats", help="print dataset counts and rates; write previews/ contact sheets and plots")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--no-previews", action="store_true", help="only print the numbers")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("annotate", help="re-score, caption and judge every clip of a dataset into a new dataset")
    p.add_argument("dir", help="input dataset folder (never modified)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--model", help="VideoLLaMA3 checkpoint folder or hub id: caption and rate clips with it")
    p.add_argument("--config", help="annotate spec YAML (annotation thresholds, rescore, captioner settings)")
    _add_job_options(p, "annotation actors (default: one per GPU with a model, else per CPU)")
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("review", help="serve a local page to accept/reject clips by their first frame")
    p.add_argument("dir", help="dataset folder; decisions are saved in DIR/review.jsonl")
    p.add_argument("--port", type=int, default=8765, help="port (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--reviewer", help="name stored with each decision (default: $USER)")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("export", help="write a clean dataset with only the clips of one final status")
    p.add_argument("dir", help="dataset folder (automatic verdicts + DIR/review.jsonl)")
    p.add_argument("--out", required=True, help="new dataset folder")
    p.add_argument("--status", default="accepted", help="accepted (default), rejected or all")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("unreal", help="Unreal Engine tools (see ue_plugin/README.md)")
    unreal = p.add_subparsers(dest="unreal_command", required=True)
    q = unreal.add_parser("standin", help="serve a scene over the UnrealCV protocol (dry runs and tests, no Unreal)")
    q.add_argument("scene", help="scene string, as for render")
    q.add_argument("--port", type=int, default=9000, help="UnrealCV port (default 9000; 0 = any free port)")
    q.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    q.set_defaults(func=cmd_unreal_standin)
    q = unreal.add_parser("ingest", help="add Movie Render Queue panorama frames (editor/mrq_panorama.py) as a clip")
    q.add_argument("frames", help="MRQ output folder (<pass>.<frame>.exr)")
    q.add_argument("--trajectories", required=True, help="trajectories.json the sequence was made from")
    q.add_argument("--index", type=int, default=0, help="which trajectory of the file (default 0)")
    q.add_argument("--out", required=True, help="dataset folder to add the clip to")
    q.add_argument("--fps", type=float, default=12.0, help="frame rate of the sequence")
    q.add_argument("--color-pass", default="FinalImage", help="colour pass name in the file names")
    q.add_argument("--depth-pass", default="M_RangeDepth", help="range-depth material pass name")
    q.set_defaults(func=cmd_unreal_ingest)

    p = sub.add_parser("guidance", help="render a panorama's mesh along a trajectory: guidance video + mask")
    p.add_argument("--panorama", help="equirect RGB image (PNG/JPG)")
    p.add_argument("--depth", help="range depth .npy (H, W) in metres, 0 = no depth")
    p.add_argument("--from-clip", nargs=2, metavar=("DATASET_DIR", "CLIP_ID"),
                   help="use a dataset clip's first frame, depth and (without --trajectory) its poses")
    p.add_argument("--trajectory", help="JSON file (ours or Matrix-3D cameras) or a preset: straight, s_curve, "
                                        "l_curve, r_curve")
    p.add_argument("--frames", type=int, default=49, help="frames of a preset trajectory")
    p.add_argument("--movement", type=float, default=0.5, help="preset path length as a fraction of the depth ahead")
    p.add_argument("--safety", type=float, default=0.0,
                   help="shrink the path so the camera stays within this fraction of the depth (0 = off)")
    p.add_argument("--threshold", type=float, default=0.05, help="relative depth variation of invisible edges")
    p.add_argument("--fps", type=float, default=12.0, help="frame rate of the videos")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_guidance)

    p = sub.add_parser("scenes", help="list the built-in scene generators and the OpenArena maps found")
    p.set_defaults(func=cmd_scenes)

    p = sub.add_parser("demo", help="render panoramas of procedural scenes and an OpenArena level")
    p.add_argument("--out", default="demo", help="output directory (default ./demo)")
    p.add_argument("--width", type=int, default=960, help="panorama width (default 960)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and return 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CliError, SceneError, ValueError, JobError, FileNotFoundError) as exc:
        print(f"matrix-pano {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"matrix-pano {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
