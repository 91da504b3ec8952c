"""The plain-Python side of the editor scripts: the exported level format, and trajectories as Level
Sequence keys. Nothing here imports ``unreal``, so it is tested here and used on both sides.

``level.json`` (written by ``editor/export_level.py`` beside ``level.glb``)::

    {"format": "matrix-pano-ue-level/1", "level": "/Game/Maps/Apartment", "mesh": "level.glb",
     "objects": [{"name": "Sofa_3", "class": "StaticMeshActor", "kind": "prop",
                  "bounds_cm": [[x0, y0, z0], [x1, y1, z1]]}, ...],
     "spawn_points": [{"location_cm": [x, y, z], "yaw_deg": 90.0}, ...]}

``unreal:PATH/level.json`` loads it as a scene: the glTF mesh (UE's glTF exporter writes standard
Y-up metres), spawn points converted from UE (cm, left-handed) to the world frame.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dataset.core.conventions import c2w_to_ue_pose, ue_to_world
from dataset.core.scene import SceneError

FORMAT = "matrix-pano-ue-level/1"


def load_unreal_level(source: str):
    """Scene of ``unreal:PATH/level.json``: mesh, spawn points (world frame) and provenance.

    Registered as the ``unreal:`` scene source by the ``matrix_pano.scene_sources`` entry point in
    pyproject.toml, so ``dataset.sources.load_scene`` reaches it without importing ``ue_plugin``.
    """
    # Imported here, not at the top: the editor scripts import this module inside Unreal's Python, which
    # needs only numpy for them; the mesh loader would add trimesh and Pillow there. (No cycle: meshfile
    # imports nothing of ue_plugin.)
    from dataset.sources.meshfile import load_mesh_file

    path = Path(source.removeprefix("unreal:"))
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise SceneError(f"{path} does not exist: export the level with ue_plugin/editor/export_level.py") from None
    except json.JSONDecodeError as exc:
        raise SceneError(f"{path} is not JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise SceneError(f"{path} is not a level export (format {meta.get('format')!r}, expected {FORMAT!r})")
    mesh = (path.parent / meta["mesh"]).resolve()
    if path.parent.resolve() not in mesh.parents:  # the path comes from a data file: keep it beside it
        raise SceneError(f"{path}: mesh {meta['mesh']!r} must be a file beside level.json")
    scene = load_mesh_file(str(mesh))
    spawns = []
    for sp in meta.get("spawn_points", []):
        x, y, z = ue_to_world(np.asarray(sp["location_cm"], np.float64))
        # UE yaw turns clockwise seen from above (left-handed): world heading is its negative.
        spawns.append([x, y, z, -math.radians(sp.get("yaw_deg", 0.0))])
    if spawns:
        scene.spawn_points = np.asarray(spawns)
    kinds = {o["name"]: o.get("kind", "prop") for o in meta.get("objects", [])}
    for obj in scene.objects:  # the editor knows which actors are structure (landscape, walls) and which props
        if obj.name in kinds:
            obj.kind = kinds[obj.name]
    scene.provenance = {**scene.provenance, "unreal_level": meta.get("level"), "units": "exported from UE cm"}
    return scene


def sequence_keys(c2w: np.ndarray, fps: float) -> list[dict]:
    """Level Sequence transform keys of a trajectory: frame, UE location (cm), rotation (pitch, yaw, roll).

    Yaw is unwrapped across frames so the sequence never spins the long way round between two keys.
    """
    keys = []
    prev_yaw = None
    for i, pose in enumerate(np.asarray(c2w, np.float64)):
        loc, (pitch, yaw, roll) = c2w_to_ue_pose(pose)
        if prev_yaw is not None:
            yaw = prev_yaw + ((yaw - prev_yaw + 180.0) % 360.0 - 180.0)
        prev_yaw = yaw
        keys.append({"frame": i, "time_s": i / fps, "location_cm": [float(v) for v in loc],
                     "rotation_deg": [pitch, yaw, roll]})
    return keys
