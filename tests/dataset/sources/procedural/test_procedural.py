"""Procedural scenes: deterministic, exact sizes, textured, spawn points on floors, open sky and ground to the
horizon outdoors."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.filters import depth_scores
from dataset.core.conventions import EYE_HEIGHT, pose_from_heading
from dataset.core.raycast import EmbreeCaster
from dataset.core.scene import SceneError
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
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


@pytest.fixture(scope="module")
def outdoor1():
    return load_scene("procedural:outdoor:1")


def _edge_street_poses(scene) -> np.ndarray:
    """Level cameras at eye height on the town's outermost lanes, 1 m in from the asphalt's edge: the corners and
    the middle of each side, looking in several directions."""
    hx, hy = np.asarray(scene.provenance["extent"]) / 2 - 1.0
    spots = [(sx * hx, sy * hy) for sx in (-1, 1) for sy in (-1, 1)] + [(0, -hy), (hx, 0), (0, hy), (-hx, 0)]
    return np.stack([pose_from_heading((x, y, EYE_HEIGHT), 0.7 * k) for k, (x, y) in enumerate(spots)])


def test_outdoor_ground_reaches_the_horizon_from_the_edge_streets(outdoor1):
    """No view from the outermost streets looks into nothing below the horizon (the old town, which ended at
    its last street, showed 12-19% of such void there); every hit stays within 450 m."""
    poses = _edge_street_poses(outdoor1)
    with EmbeddedRenderer(outdoor1, RenderSettings(threads=1)) as renderer:
        frames = renderer.render(poses, 512)  # lowest below-horizon row: -0.35 deg, 262 m of flat ground away
    for depth, pose in zip(frames.depth, poses, strict=True):
        scores = depth_scores(depth[None], 0.25, pose[None])
        assert scores["void_fraction"] < 0.02, scores
        assert scores["sky_fraction"] > 0.3, "the sky stays open above the horizon"
    assert (frames.depth[:, 256:] > 0).all(), "every below-horizon ray hits the ground, a building or the hills"
    assert frames.depth.max() < 450


def test_outdoor_scenery_lies_beyond_the_town(outdoor1):
    """Town objects (structure, prop) stay within the streets' extent; everything beyond is scenery."""
    kinds = {o.kind for o in outdoor1.objects}
    assert kinds == {"structure", "prop", "scenery"}
    hx, hy = np.asarray(outdoor1.provenance["extent"]) / 2
    centres = outdoor1.vertices[outdoor1.faces].mean(axis=1)
    inside = (np.abs(centres[:, 0]) < hx + 1e-3) & (np.abs(centres[:, 1]) < hy + 1e-3)
    scenery = np.array([o.kind == "scenery" for o in outdoor1.objects])[outdoor1.face_object]
    assert inside[~scenery].all(), "the town ends at its last street"
    assert not inside[scenery].any(), "scenery starts beyond it"
    assert scenery.sum() < 0.5 * outdoor1.num_faces, "scenery is cheap next to the town"
