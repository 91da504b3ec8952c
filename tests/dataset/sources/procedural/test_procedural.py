"""Procedural scenes: deterministic, exact sizes, textured, spawn points on floors, open sky outdoors."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.core.raycast import EmbreeCaster
from dataset.core.scene import SceneError
from dataset.sources import load_scene


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_same_seed_same_scene_other_seed_other_scene(kind):
    a, b, c = (load_scene(f"procedural:{kind}:{s}") for s in (3, 3, 4))
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != c.content_hash()


def test_room_has_the_exact_size():
    room = load_scene("procedural:room:4x6x2.5")
    np.testing.assert_allclose(room.bounds(), [[-2, -3, 0], [2, 3, 2.5]], atol=1e-6)
    normals = room.face_normals()
    floor = room.vertices[room.faces][:, :, 2].max(axis=1) < 1e-6
    assert (normals[floor, 2] > 0.99).all(), "the floor faces up (into the room)"


@pytest.mark.parametrize("source", ["procedural:indoor:0", "procedural:outdoor:0", "procedural:room:4x6x3"])
def test_textures_are_not_flat(source):
    scene = load_scene(source)
    assert scene.textures and scene.uvs is not None
    for tex in scene.textures:
        assert tex.dtype == np.uint8 and tex.shape[2] == 3
        assert tex.astype(float).std() > 2, "procedural textures carry detail, even plain ceilings"
    assert max(t.astype(float).std() for t in scene.textures) > 20


@pytest.mark.parametrize("source", ["procedural:indoor:0", "procedural:indoor:5", "procedural:outdoor:0"])
def test_spawn_points_stand_on_floor_outside_props(source):
    scene = load_scene(source)
    assert len(scene.spawn_points) >= 4
    caster = EmbreeCaster(scene.vertices, scene.faces)
    feet = scene.spawn_points[:, :3]
    down = np.tile([0.0, 0.0, -1.0], (len(feet), 1)).astype(np.float32)
    hits = caster.cast((feet + [0, 0, 0.5]).astype(np.float32), down)
    assert (hits.prim >= 0).all()
    np.testing.assert_allclose(hits.t, 0.5, atol=0.02)
    assert (scene.face_normals()[hits.prim, 2] > 0.9).all(), "spawn points stand on upward-facing floors"
    boxes = scene.object_bounds()
    props = [i for i, o in enumerate(scene.objects) if o.kind == "prop"]
    eye = feet + [0, 0, 1.0]
    for i in props:
        lo, hi = boxes[i]
        inside = np.all((eye > lo - 0.1) & (eye < hi + 0.1), axis=1)
        assert not inside.any(), f"spawn point inside {scene.objects[i].name}"


def test_indoor_has_storeys_doors_and_furniture():
    scene = load_scene("procedural:indoor:0")
    storeys = scene.provenance["storeys"]
    assert storeys >= 2
    floor_heights = np.unique(np.round(scene.spawn_points[:, 2], 2))
    assert len(floor_heights) == storeys, "spawn points on every storey"
    kinds = {o.name.split("_")[0] for o in scene.objects if o.kind == "prop"}
    assert {"table", "chair"} <= kinds
    assert any(o.name.startswith("stairs") for o in scene.objects)


def test_outdoor_has_open_sky():
    scene = load_scene("procedural:outdoor:1")
    caster = EmbreeCaster(scene.vertices, scene.faces)
    up = np.tile([0.0, 0.0, 1.0], (len(scene.spawn_points), 1)).astype(np.float32)
    hits = caster.cast((scene.spawn_points[:, :3] + [0, 0, 1.6]).astype(np.float32), up)
    assert (hits.prim < 0).all(), "nothing above the street"


@pytest.mark.parametrize("source, message", [
    ("procedural:indoor:x", "seed"), ("procedural:indoor:-1", "seed"), ("procedural:room:4x6", "WxDxH"),
    ("procedural:room:4x-6x3", "positive"), ("procedural:castle:1", "procedural:indoor:0"), ("procedural:", "one of"),
])
def test_bad_arguments_name_the_accepted_form(source, message):
    with pytest.raises(SceneError, match=message):
        load_scene(source)
