"""``matrix-pano view``: serve a reconstruction folder (``inference.viewer``) as an explorable scene in the
browser until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time

from dataset.cli.common import MAX_PORT, number_flag


def cmd_view(args: argparse.Namespace) -> None:
    from inference.viewer import serve

    viewer = serve(args.dir, args.host, args.port)
    print(f"viewing {args.dir}: open {viewer.url} (Ctrl-C to stop)", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.stop()


def add_view(sub) -> None:
    p = sub.add_parser("view", help="serve a reconstruction (scene.ply, cameras.json, keyframes) in the browser")
    p.add_argument("dir", help="reconstruction folder, as `matrix-pano reconstruct` writes it")
    p.add_argument("--port", type=number_flag(int, ge=0, le=MAX_PORT), default=8080,
                   help="port (0 = any free port; a busy one is replaced by the next free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.set_defaults(func=cmd_view)
