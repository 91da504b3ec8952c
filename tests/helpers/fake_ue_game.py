#!/usr/bin/env python3
"""A stand-in "packaged Unreal game" for launcher tests: takes UE's command line
(``MAP -RenderOffScreen -ResX=W -ResY=H -UnrealCVPort N ...``), checks its own ``unrealcv.ini`` in the
working folder names the same port, and serves MAP (a scene string) over UnrealCV until killed."""

import configparser
import sys
import time

args = sys.argv[1:]
scene_string = args[0]
port = int(args[args.index("-UnrealCVPort") + 1])
ini = configparser.ConfigParser()
ini.read("unrealcv.ini")
if ini.getint("UnrealCV.Core", "Port") != port:
    sys.exit(f"unrealcv.ini port {ini.get('UnrealCV.Core', 'Port')} != -UnrealCVPort {port}")
time.sleep(0.3)  # a game takes a while before UnrealCV listens

from dataset.sources import load_scene  # noqa: E402
from ue_plugin.standin import StandinServer  # noqa: E402

print(f"fake game: {scene_string} on port {port}", flush=True)
StandinServer(load_scene(scene_string), port=port).serve_forever()
