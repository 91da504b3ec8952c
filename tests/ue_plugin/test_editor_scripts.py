"""Editor scripts with a fake ``unreal`` module: level export read back as a scene, trajectories as
sequence keys, and MRQ frames ingested as a dataset clip."""

from __future__ import annotations

import importlib
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dataset.core.conventions import pose_from_heading, ue_pose_to_c2w
from ue_plugin.level import sequence_keys


class _V:
    def __init__(self, x, y, z):
        self.x, self.y, self.z = x, y, z


class _Actor:
    def __init__(self, label, cls, origin=(0, 0, 0), extent=(1, 1, 1), yaw=0.0):
        self.label, self.cls, self.origin, self.extent, self.yaw = label, cls, origin, extent, yaw

    def get_actor_bounds(self, only_colliding):
        return _V(*self.origin), _V(*self.extent)

    def get_class(self):
        return types.SimpleNamespace(get_name=lambda: type(self).__name__)

    def get_actor_label(self):
        return self.label

    def get_actor_location(self):
        return _V(*self.origin)

    def get_actor_rotation(self):
        return types.SimpleNamespace(yaw=self.yaw)


def _fake_unreal(exported: list):
    import trimesh

    class StaticMeshActor(_Actor):
        pass

    class Landscape(_Actor):
        pass

    class PlayerStart(_Actor):
        pass

    def export_to_gltf(world, path, options, actors):
        exported.append(sorted(a.label for a in actors))
        scene = trimesh.Scene()
        box = trimesh.creation.box(extents=[6, 3, 8])  # glTF Y-up: 6 x 8 m floor plan, 3 m high
        box.invert()  # faces inward: a closed room
        lift = trimesh.transformations.translation_matrix([0, 1.5, 0])
        scene.add_geometry(box, node_name="Room", geom_name="Room", transform=lift)
        scene.export(path)

    actors = [Landscape("Room", "Landscape", (0, 0, 150), (300, 400, 150)),
              StaticMeshActor("Sofa", "StaticMeshActor", (100, -200, 40), (90, 40, 40)),
              PlayerStart("Start", "PlayerStart", (120, -150, 10), yaw=90.0)]
    subsystems = {"UnrealEditorSubsystem": types.SimpleNamespace(
        get_editor_world=lambda: types.SimpleNamespace(get_path_name=lambda: "/Game/Maps/Test")),
        "EditorActorSubsystem": types.SimpleNamespace(get_all_level_actors=lambda: actors)}
    return types.SimpleNamespace(
        StaticMeshActor=StaticMeshActor, Landscape=Landscape, PlayerStart=PlayerStart, Actor=_Actor,
        UnrealEditorSubsystem="UnrealEditorSubsystem", EditorActorSubsystem="EditorActorSubsystem",
        get_editor_subsystem=lambda name: subsystems[name], GLTFExportOptions=lambda: None,
        GLTFExporter=types.SimpleNamespace(export_to_gltf=export_to_gltf), log=lambda msg: None)


def test_level_export_loads_as_a_scene_for_the_sampler(tmp_path, monkeypatch):
    exported = []
    monkeypatch.setitem(sys.modules, "unreal", _fake_unreal(exported))
    module = importlib.import_module("ue_plugin.editor.export_level")
    path = module.export_level(str(tmp_path / "level"))
    meta = json.loads(path.read_text())
    assert exported == [["Room", "Sofa"]] and [o["kind"] for o in meta["objects"]] == ["structure", "prop"]
    assert meta["objects"][1]["bounds_cm"] == [[10, -240, 0], [190, -160, 80]]
    from dataset.sources import load_scene

    scene = load_scene(f"unreal:{path}")
    x, y, z, heading = scene.spawn_points[0]
    assert (x, y, z) == pytest.approx((1.2, 1.5, 0.1)) and heading == pytest.approx(-math.pi / 2)
    lo, hi = scene.bounds()
    assert hi - lo == pytest.approx([6, 8, 3], abs=1e-6)


def test_bad_level_files_are_clear(tmp_path):
    from dataset.core.scene import SceneError
    from dataset.sources import load_scene

    with pytest.raises(SceneError, match="export the level with"):
        load_scene(f"unreal:{tmp_path / 'missing.json'}")
    bad = tmp_path / "level.json"
    bad.write_text(json.dumps({"format": "matrix-pano-ue-level/1", "mesh": "../../etc/x.glb"}))
    with pytest.raises(SceneError, match="must be a file beside level.json"):
        load_scene(f"unreal:{bad}")


def test_sequence_keys_round_trip_and_unwrap_yaw():
    c2w = np.stack([pose_from_heading((i * 0.1, 0, 1.6), math.radians(170 + 5 * i)) for i in range(6)])
    keys = sequence_keys(c2w, fps=12)
    yaws = [k["rotation_deg"][1] for k in keys]
    assert np.all(np.abs(np.diff(yaws)) < 10), "no jump at +-180"
    for k, pose in zip(keys, c2w, strict=True):
        assert np.allclose(ue_pose_to_c2w(k["location_cm"], k["rotation_deg"]), pose, atol=1e-9)
    assert keys[3]["time_s"] == pytest.approx(0.25)


def test_mrq_frames_are_ingested_as_a_clip(tmp_path):
    pytest.importorskip("OpenEXR")
    from mrq_helpers import write_mrq_frames

    from dataset.core.codecs import psnr
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.ingest import ingest_mrq
    from dataset.jobs.worker import plan_scene
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings
    from dataset.store.reader import PanoDataset, verify_dataset

    spec = parse_job_spec({"scenes": ["procedural:indoor:1"], "trajectories_per_scene": 1, "frames_per_clip": 5})
    scene, plan = plan_scene(spec, "procedural:indoor:1")
    c2w = plan.clips[0].c2w
    with EmbeddedRenderer(scene, RenderSettings(threads=1)) as r:
        frames = r.render(c2w, 256)
    mrq = write_mrq_frames(tmp_path / "mrq", frames.rgb, frames.depth)
    out = tmp_path / "ds"
    clip_id = ingest_mrq(mrq, c2w, 12.0, out, "traj0", "procedural:indoor:1")
    assert ingest_mrq(mrq, c2w, 12.0, out, "traj0", "procedural:indoor:1") == clip_id  # idempotent
    assert verify_dataset(out) == [] and len(PanoDataset(out)) == 1
    clip = next(PanoDataset(out).clips())
    assert psnr(clip.frames(), frames.rgb) > 30
    assert clip.row["scene_id"] == plan.scene_id, "the ingested clip joins the built clips of its scene"
    hit = frames.depth > 0
    assert np.array_equal(clip.depth() > 0, hit)
    assert (np.abs(clip.depth()[hit] - frames.depth[hit]) / frames.depth[hit]).max() < 1e-3
    with pytest.raises(ValueError, match="pass names"):
        ingest_mrq(mrq, c2w[:3], 12.0, out, "traj1", "procedural:indoor:1")
    assert Path(out / "shards").is_dir()
