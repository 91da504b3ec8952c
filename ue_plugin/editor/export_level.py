"""Run inside the Unreal Editor (Tools > Execute Python Script, or ``-ExecutePythonScript``): export the open
level for Matrix-Pano's trajectory sampler.

Writes ``OUT/level.glb`` (static meshes, UE's glTF exporter: Y-up metres) and ``OUT/level.json`` (actor
names, classes, kinds and bounds in UE cm, PlayerStart spawn points) in the format of ``ue_plugin.level``.
Then ``matrix-pano sample unreal:OUT/level.json`` or a job spec with that scene string plans trajectories.

    UnrealEditor Project.uproject /Game/Maps/Apartment -ExecutePythonScript="export_level.py OUT"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import unreal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the matrix-pano checkout
from ue_plugin.level import FORMAT  # noqa: E402

STRUCTURE_CLASSES = ("Landscape", "LandscapeStreamingProxy", "Brush", "Volume")
"""Actor classes that are floors, walls or terrain (the sampler handles them exactly, not as boxes)."""


def actor_record(actor: unreal.Actor) -> dict:
    """Name, class, kind and axis-aligned bounds (UE cm) of one actor."""
    origin, extent = actor.get_actor_bounds(False)
    cls = actor.get_class().get_name()
    return {"name": actor.get_actor_label(), "class": cls,
            "kind": "structure" if cls.startswith(STRUCTURE_CLASSES) else "prop",
            "bounds_cm": [[origin.x - extent.x, origin.y - extent.y, origin.z - extent.z],
                          [origin.x + extent.x, origin.y + extent.y, origin.z + extent.z]]}


def export_level(out_dir: str) -> Path:
    """Export the editor's current level into ``out_dir``; returns the path of level.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem).get_editor_world()
    actors = unreal.get_editor_subsystem(unreal.EditorActorSubsystem).get_all_level_actors()
    meshes = [a for a in actors if isinstance(a, (unreal.StaticMeshActor, unreal.Landscape))]
    options = unreal.GLTFExportOptions()
    unreal.GLTFExporter.export_to_gltf(world, str(out / "level.glb"), options, set(meshes))
    spawns = [{"location_cm": [a.get_actor_location().x, a.get_actor_location().y, a.get_actor_location().z],
               "yaw_deg": a.get_actor_rotation().yaw} for a in actors if isinstance(a, unreal.PlayerStart)]
    meta = {"format": FORMAT, "level": world.get_path_name(), "mesh": "level.glb",
            "objects": [actor_record(a) for a in meshes], "spawn_points": spawns}
    path = out / "level.json"
    path.write_text(json.dumps(meta, indent=1))
    unreal.log(f"matrix-pano: exported {len(meshes)} actors and {len(spawns)} spawn points to {path}")
    return path


if __name__ == "__main__":
    export_level(sys.argv[1] if len(sys.argv) > 1 else str(Path(unreal.Paths.project_saved_dir()) / "MatrixPano"))
