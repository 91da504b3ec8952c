"""The embedded renderer: exact depth, equirect orientation, textures, ids, and the fast path vs reference."""

from __future__ import annotations

import numpy as np
import pytest
from scene_helpers import make_scene

from dataset.core.conventions import (
    crop_rotation,
    equirect_directions,
    equirect_to_perspective,
    pose_from_heading,
)
from dataset.core.raycast import EmbreeCaster, cast_reference
from dataset.core.scene import Material, Scene, SceneObject
from dataset.render.base import Renderer
from dataset.render.embedded import EmbeddedRenderer, RenderSettings

W, H = 256, 128


def analytic_box_range(origin, dirs, lo, hi):
    """Distance from a point inside an axis-aligned box to its walls along unit directions."""
    with np.errstate(divide="ignore"):
        t_hi = (np.asarray(hi) - origin) / dirs
        t_lo = (np.asarray(lo) - origin) / dirs
    t = np.where(dirs > 0, t_hi, np.where(dirs < 0, t_lo, np.inf))
    return t.min(axis=-1)


@pytest.mark.parametrize("heading", [0.0, 0.7, -2.0])
def test_box_room_ranges_are_exact(heading):
    lo, hi = (-2, -3, 0), (2, 3, 3)
    scene = make_scene([(lo, hi, True, (0.8, 0.8, 0.8), "room")])
    origin = np.array([0.0, 0.0, 1.5])
    pose = pose_from_heading(origin, heading)
    with EmbeddedRenderer(scene) as r:
        frames = r.render(pose, W)
    depth = frames.depth[0]
    assert depth.shape == (H, W) and depth.dtype == np.float32
    world_dirs = equirect_directions(W).astype(np.float64) @ pose[:3, :3].T
    expected = analytic_box_range(origin, world_dirs, lo, hi)
    np.testing.assert_allclose(depth, expected, rtol=2e-5)
    if heading == 0.0:
        # Forward (centre column) hits x = 2, right (column 3W/4) hits y = -3, up hits z = 3, down z = 0.
        fwd = depth[H // 2 - 1 : H // 2 + 1, W // 2 - 1 : W // 2 + 1]
        np.testing.assert_allclose(fwd, 2.0, rtol=1e-3)
        np.testing.assert_allclose(depth[H // 2, 3 * W // 4], 3.0 / np.cos(np.pi / (2 * H)) ** 2, rtol=1e-5)
        np.testing.assert_allclose(depth[H // 2, W // 4], 3.0 / np.cos(np.pi / (2 * H)) ** 2, rtol=1e-5)
        np.testing.assert_allclose(depth[0], 1.5 / np.cos(np.pi / (2 * H)), rtol=1e-5)
        np.testing.assert_allclose(depth[-1], 1.5 / np.cos(np.pi / (2 * H)), rtol=1e-5)


def test_object_left_of_camera_appears_in_left_quarter(box_room):
    # Camera looks along +X; the crate at (1.25, 2.25) is ahead and to the left (+Y is left).
    with EmbeddedRenderer(box_room) as r:
        frames = r.render(pose_from_heading((1.25, 0.0, 1.5), 0.0), W)
    crate = box_room.objects.index(next(o for o in box_room.objects if o.name == "crate"))
    cols = np.flatnonzero((frames.instance[0] == crate).any(axis=0))
    assert len(cols) and np.all(cols < W // 2), "an object on the camera's left must appear left of centre"
    assert abs(np.median(cols) - W / 4) < W / 16
    rows = np.flatnonzero((frames.instance[0] == crate).any(axis=1))
    assert rows.min() > H // 2, "a crate on the floor below eye height must appear below the horizon"


def test_instances_depth_and_rgb_are_consistent(box_room):
    with EmbeddedRenderer(box_room) as r:
        frames = r.render(np.stack([pose_from_heading((0, 0, 1.6), a) for a in (0.0, 1.0)]), W)
    assert isinstance(r, Renderer)
    assert frames.rgb.shape == (2, H, W, 3) and frames.rgb.dtype == np.uint8
    assert frames.instance.shape == (2, H, W)
    assert set(np.unique(frames.instance)) == {0, 1}  # closed room: every ray hits the room or the crate
    assert (frames.depth > 0).all()
    crate_px = frames.rgb[0][frames.instance[0] == 1].mean(0)
    assert crate_px[0] > 1.5 * crate_px[1], "the red crate renders red"


def test_sky_rays_have_zero_depth_and_no_instance():
    floor = make_scene([((-50, -50, -1), (50, 50, 0), False, (0.5, 0.5, 0.5), "ground")])
    with EmbeddedRenderer(floor) as r:
        f = r.render(pose_from_heading((0, 0, 1.6), 0.0), W)
    assert (f.depth[0, : H // 2] == 0).all() and (f.instance[0, : H // 2] == -1).all()
    assert (f.depth[0, H // 2 + 2 :] > 0).all()
    sky = f.rgb[0, :4].mean((0, 1))
    assert sky[2] > sky[0], "sky is blue"


def test_shadows_with_a_chunk_of_sky_only():
    """512 px wide = 8 ray chunks on 2 threads; the top ones see only sky, so they cast no shadow ray at all."""
    floor = make_scene([((-50, -50, -1), (50, 50, 0), False, (0.5, 0.5, 0.5), "ground"),
                        ((2, -1, 0), (3, 1, 3), False, (0.5, 0.5, 0.5), "block")])
    with EmbeddedRenderer(floor, RenderSettings(shadows=True, auto_gain=False, threads=2)) as r:
        f = r.render(pose_from_heading((0, 0, 1.6), 0.0), 512)
    assert (f.depth[0, :64] == 0).all()
    ground = f.rgb[0][f.instance[0] == 0].mean(1)
    assert ground.max() - ground.min() > 20, "the block's shadow darkens part of the ground"


def quad_scene(texture: np.ndarray) -> Scene:
    """A 2 x 2 m textured quad in the plane x = 3 facing -X, uv (0,0) at its top-left seen from the origin."""
    # Seen from the origin looking +X: left is +Y, up is +Z.
    v = np.array([[3, 1, 1], [3, -1, 1], [3, -1, -1], [3, 1, -1]], float)
    f = np.array([[0, 2, 1], [0, 3, 2]])
    corner_uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    return Scene(vertices=v, faces=f, face_material=np.zeros(2), materials=[Material("t", (1, 1, 1), 0)],
                 face_object=np.zeros(2), objects=[SceneObject("quad")], textures=[texture],
                 uvs=corner_uv[f], baked_lighting=True)


def test_texture_orientation_top_left_origin():
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:32, :32] = (255, 0, 0)  # top-left red
    tex[:32, 32:] = (0, 255, 0)  # top-right green
    tex[32:, :32] = (0, 0, 255)  # bottom-left blue
    tex[32:, 32:] = (255, 255, 255)
    scene = quad_scene(tex)
    with EmbeddedRenderer(scene, RenderSettings(mipmaps=False, auto_gain=False)) as r:
        img = r.render_perspective(pose_from_heading((0, 0, 0), 0.0), 64, 64, fov_deg=60).rgb[0]
    # The quad spans about +-18 degrees; sample well inside each quadrant.
    assert tuple(img[22, 22]) == (255, 0, 0)
    assert tuple(img[22, 41]) == (0, 255, 0)
    assert tuple(img[41, 22]) == (0, 0, 255)
    assert tuple(img[41, 41]) == (255, 255, 255)


def test_mipmaps_average_distant_texture():
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    tex = np.repeat(checker[..., None], 3, axis=2)
    scene = quad_scene(tex)
    scene.uvs *= 64  # 64 repeats: far finer than a pixel
    with EmbeddedRenderer(scene) as r:
        img = r.render_perspective(pose_from_heading((0, 0, 0), 0.0), 32, 32, fov_deg=40).rgb[0].astype(float)
    centre = img[10:22, 10:22]
    assert abs(centre.mean() - 127.5) < 12 and centre.std() < 10, "mip-mapping filters to grey, no aliasing"


def test_perspective_matches_equirect_crop(box_room):
    pose = pose_from_heading((0.3, -0.5, 1.4), 0.4)
    with EmbeddedRenderer(box_room) as r:
        pano = r.render(pose, 1024).depth[0]
        rot = crop_rotation(90.0, 20.0)
        crop_pose = pose.copy()
        crop_pose[:3, :3] = pose[:3, :3] @ rot
        persp = r.render_perspective(crop_pose, 48, 48, 90.0).depth[0]
    from_pano = equirect_to_perspective(pano, rot, 48, 48, 90.0, mode="nearest")
    # Nearest-pixel resampling of a 1024-wide panorama: compare medians, the box edges differ by a pixel.
    rel = np.abs(persp - from_pano) / persp
    assert np.median(rel) < 0.01


def test_supersampling_keeps_depth_and_smooths_colour(box_room):
    pose = pose_from_heading((0, 0, 1.6), 0.3)
    with EmbeddedRenderer(box_room) as r1, EmbeddedRenderer(box_room, RenderSettings(supersample=2)) as r2:
        a, b = r1.render(pose, W), r2.render(pose, W)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.instance, b.instance)
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 6


def test_shadows_darken_the_floor_under_a_box():
    scene = make_scene([((-20, -20, -1), (20, 20, 0), False, (0.7, 0.7, 0.7), "ground"),
                        ((-1, -1, 2), (1, 1, 2.2), False, (0.7, 0.7, 0.7), "slab")])
    pose = pose_from_heading((0.5, 0.5, 1.0), 0.0)  # under the slab, sun from above
    settings = dict(sun_elevation_deg=89.0)
    with EmbeddedRenderer(scene, RenderSettings(**settings)) as lit, \
            EmbeddedRenderer(scene, RenderSettings(shadows=True, **settings)) as shaded:
        a, b = lit.render(pose, W), shaded.render(pose, W)
    floor = a.instance[0] == 0
    near = floor & (a.depth[0] < 1.2)
    assert b.rgb[0][near].mean() < 0.8 * a.rgb[0][near].mean()


def test_embree_agrees_with_reference_caster():
    rng = np.random.default_rng(3)
    verts = rng.uniform(-3, 3, (60, 3))
    faces = rng.integers(0, 60, (40, 3))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    dirs = rng.normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = rng.uniform(-0.5, 0.5, (500, 3))
    fast = EmbreeCaster(verts, faces, threads=2).cast(origins.astype(np.float32), dirs.astype(np.float32))
    ref = cast_reference(verts, faces, origins, dirs)
    hit = ref.prim >= 0
    assert hit.sum() > 50
    assert np.mean(fast.prim == ref.prim) > 0.99
    same = hit & (fast.prim == ref.prim)
    np.testing.assert_allclose(fast.t[same], ref.t[same], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast.u[same], ref.u[same], atol=1e-5)
    np.testing.assert_allclose(fast.v[same], ref.v[same], atol=1e-5)


def test_bad_sizes_and_poses_are_rejected(box_room):
    with EmbeddedRenderer(box_room) as r:
        with pytest.raises(ValueError, match="2 x height"):
            r.render(np.eye(4), 255)
        with pytest.raises(ValueError, match="rigid"):
            r.render(np.eye(4) * 2, 64)
    with pytest.raises(ValueError, match="supersample"):
        RenderSettings(supersample=7)


@pytest.mark.parametrize("suffix", [".glb", ".gltf"])
def test_gltf_export_renders_the_same_depth_as_the_scene_built_in_code(tmp_path, box_room, suffix):
    import trimesh

    from dataset.core.conventions import world_to_gltf
    from dataset.sources import load_scene

    # Export the code-built scene as a Y-up glTF, one node per object, the way DCC tools write it.
    gltf_scene = trimesh.Scene()
    for i, obj in enumerate(box_room.objects):
        faces = box_room.faces[box_room.face_object == i]
        used, local = np.unique(faces, return_inverse=True)
        mesh = trimesh.Trimesh(world_to_gltf(box_room.vertices[used]), local.reshape(-1, 3), process=False)
        gltf_scene.add_geometry(mesh, node_name=obj.name, geom_name=obj.name)
    path = tmp_path / f"scene{suffix}"
    gltf_scene.export(path)
    loaded = load_scene(str(path))
    poses = np.stack([pose_from_heading((0.3, -1.0, 1.6), 0.5), pose_from_heading((-1.2, 2.0, 0.9), 2.5)])
    with EmbeddedRenderer(box_room) as a, EmbeddedRenderer(loaded) as b:
        da, db = a.render(poses, W).depth, b.render(poses, W).depth
    np.testing.assert_allclose(db, da, rtol=1e-5)
    assert sorted(o.name for o in loaded.objects) == sorted(o.name for o in box_room.objects)


@pytest.mark.openarena
def test_openarena_levels_render_textured_lit_panoramas():
    from dataset.core.scene import default_pose
    from dataset.sources import load_scene
    from dataset.sources.quake3 import find_openarena_maps

    maps = [f"openarena:{name}" for name, _ in find_openarena_maps()]
    if not maps:
        pytest.skip("openarena-data is not installed (apt-get install openarena-data)")
    wanted = [m for m in ("openarena:oa_dm1", "openarena:aggressor", "openarena:oa_dm4") if m in maps] or maps[:3]
    for source in wanted:
        scene = load_scene(source)
        with EmbeddedRenderer(scene) as r:
            f = r.render(default_pose(scene), 256)
        hit = f.depth[0] > 0
        assert hit.mean() > 0.5, f"{source}: a spawn point is inside the level, most rays hit"
        assert 0.3 < np.median(f.depth[0][hit]) < 60, f"{source}: distances are metres, not inches"
        lum = f.rgb[0][hit].mean(axis=1)
        assert 15 < lum.mean() < 230, f"{source}: light-mapped panorama is neither black nor blown out"
        assert lum.std() > 8, f"{source}: textures and lighting vary across the panorama"
        assert len(np.unique(f.instance[0][hit])) >= 1
