"""Unreal Engine subcommands: ``unreal standin`` and ``unreal ingest``."""

from __future__ import annotations

import argparse
import sys

from dataset.cli.common import MAX_PORT, CliError, field_default, number_flag, spec_flag
from dataset.core.jobspec import JobSpec


def cmd_unreal_standin(args: argparse.Namespace) -> None:
    from dataset.sources import load_scene
    from ue_plugin.standin import StandinServer

    server = StandinServer(load_scene(args.scene), host=args.host, port=args.port)
    print(f"UnrealCV stand-in for {args.scene} listening on {server.host}:{server.port} (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()


def cmd_unreal_ingest(args: argparse.Namespace) -> None:
    from dataset.core.trajectories import read_trajectory_file
    from dataset.jobs.ingest import ingest_mrq

    traj = read_trajectory_file(args.trajectories, args.index)
    if traj.trajectory_id is None:  # a bare {"c2w": ...} or camera list: no id to name the clip by
        raise CliError(f"{args.trajectories} has no trajectory {args.index} (a matrix-pano sample output)")
    clip = ingest_mrq(args.frames, traj.c2w, args.fps, args.out, traj.trajectory_id,
                      "unreal" if traj.scene is None else traj.scene, args.color_pass, args.depth_pass,
                      scene_id=traj.scene_id)
    print(f"ingested {args.frames} as clip {clip} into {args.out}", file=sys.stderr)


def add_unreal(sub) -> None:
    p = sub.add_parser("unreal", help="Unreal Engine tools (see ue_plugin/README.md)")
    unreal = p.add_subparsers(dest="unreal_command", required=True)
    q = unreal.add_parser("standin", help="serve a scene over the UnrealCV protocol (dry runs and tests, no Unreal)")
    q.add_argument("scene", help="scene string, as for render")
    q.add_argument("--port", type=number_flag(int, ge=0, le=MAX_PORT), default=9000,
                   help="UnrealCV port (default 9000; 0 = any free port)")
    q.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    q.set_defaults(func=cmd_unreal_standin)
    q = unreal.add_parser("ingest", help="add Movie Render Queue panorama frames (editor/mrq_panorama.py) as a clip")
    q.add_argument("frames", help="MRQ output folder (<pass>.<frame>.exr)")
    q.add_argument("--trajectories", required=True, help="trajectories.json the sequence was made from")
    q.add_argument("--index", type=int, default=0, help="which trajectory of the file (default 0)")
    q.add_argument("--out", required=True, help="dataset folder to add the clip to")
    q.add_argument("--fps", type=spec_flag(JobSpec, "fps"), default=field_default(JobSpec, "fps"),
                   help="frame rate of the sequence")
    q.add_argument("--color-pass", default="FinalImage", help="colour pass name in the file names")
    q.add_argument("--depth-pass", default="M_RangeDepth", help="range-depth material pass name")
    q.set_defaults(func=cmd_unreal_ingest)
