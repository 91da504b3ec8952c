"""Mesh files written by trimesh in tmp_path, loaded back as world-frame scenes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from trimesh.transformations import rotation_matrix, scale_matrix, translation_matrix
from trimesh.visual.material import PBRMaterial, SimpleMaterial

from dataset.core.scene import Scene, SceneError
from dataset.sources import load_scene
from dataset.sources.meshfile import MAX_TEXTURE_SIZE, load_mesh_file

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)

# A unit quad in the glTF plane z = 3 with trimesh UVs (origin bottom-left of the image).
QUAD_VERTICES = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 3.0], [2.0, 3.0, 3.0], [1.0, 3.0, 3.0]])
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])
QUAD_UVS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def quadrant_image(size: int = 8) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow (image rows top to bottom)."""
    img = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    img[:h, :h], img[:h, h:], img[h:, :h], img[h:, h:] = RED, GREEN, BLUE, YELLOW
    return Image.fromarray(img)


def textured_quad(material) -> trimesh.Trimesh:
    visual = trimesh.visual.TextureVisuals(uv=QUAD_UVS, material=material)
    return trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, visual=visual, process=False)


def corner_index(scene: Scene, world_point) -> tuple[int, int]:
    """(face, corner) of a face corner at a world position."""
    dist = np.linalg.norm(scene.vertices[scene.faces] - np.asarray(world_point, np.float32), axis=-1)
    face, corner = np.unravel_index(np.argmin(dist), dist.shape)
    assert dist[face, corner] < 1e-5, f"no vertex at {world_point}"
    return int(face), int(corner)


def texel_near_corner(scene: Scene, world_point) -> tuple[int, ...]:
    """Texture colour just inside the face at the corner at ``world_point`` (Scene convention: v down)."""
    face, corner = corner_index(scene, world_point)
    uv = 0.9 * scene.uvs[face, corner] + 0.1 * scene.uvs[face].mean(0)
    tex = scene.textures[scene.materials[scene.face_material[face]].texture]
    h, w = tex.shape[:2]
    return tuple(int(c) for c in tex[int(uv[1] * h) % h, int(uv[0] * w) % w])


def srgb(linear: float) -> float:
    """sRGB encoding of a linear value (IEC 61966-2-1), written out here independently of the loader."""
    return 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055


@pytest.mark.parametrize("suffix", ["glb", "gltf"])
def test_gltf_textured_quad_is_z_up_with_top_left_uvs(tmp_path: Path, suffix: str) -> None:
    material = PBRMaterial(name="quads", baseColorTexture=quadrant_image(), baseColorFactor=[1.0, 1.0, 1.0, 1.0])
    tm = trimesh.Scene()
    tm.add_geometry(textured_quad(material), node_name="panel")
    path = tmp_path / f"quad.{suffix}"
    tm.export(str(path))

    scene = load_mesh_file(str(path))

    assert scene.num_faces == 2 and scene.name == str(path)
    corner_index(scene, (1.0, -3.0, 2.0))  # glTF (1, 2, 3) -> world (x, -z, y)
    np.testing.assert_allclose(scene.bounds(), [[1, -3, 2], [2, -3, 3]], atol=1e-6)
    assert len(scene.textures) == 1 and scene.textures[0].shape == (8, 8, 3)
    assert scene.materials[0].base_color == (1.0, 1.0, 1.0)
    assert texel_near_corner(scene, (1.0, -3.0, 2.0)) == BLUE  # trimesh uv (0, 0): bottom-left
    assert texel_near_corner(scene, (2.0, -3.0, 3.0)) == GREEN  # trimesh uv (1, 1): top-right
    np.testing.assert_allclose(scene.uvs[corner_index(scene, (1.0, -3.0, 3.0))], [0.0, 0.0])  # top-left
    assert [(o.name, o.kind) for o in scene.objects] == [("panel", "structure")]  # the file's only object
    assert scene.source_units == "m"
    assert scene.provenance == {"loader": "meshfile", "path": str(path.resolve()), "format": suffix, "up": "y",
                                "scale": 1.0, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_obj_mtl_png_texture(tmp_path: Path) -> None:
    material = SimpleMaterial(name="painted", image=quadrant_image(), diffuse=[255, 128, 0, 255])
    path = tmp_path / "quad.obj"
    textured_quad(material).export(str(path))
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".mtl", ".obj", ".png"]

    scene = load_mesh_file(str(path))

    assert texel_near_corner(scene, (1.0, -3.0, 2.0)) == BLUE
    assert texel_near_corner(scene, (2.0, -3.0, 3.0)) == GREEN
    assert texel_near_corner(scene, (1.0, -3.0, 3.0)) == RED
    assert scene.materials[0].name == "painted"
    np.testing.assert_allclose(scene.materials[0].base_color, [1.0, 128 / 255, 0.0], atol=1e-3)  # Kd, sRGB


def test_obj_texture_without_kd_is_not_darkened(tmp_path: Path) -> None:
    quadrant_image().save(tmp_path / "tex.png")
    (tmp_path / "m.mtl").write_text("newmtl plain\nmap_Kd tex.png\n")
    (tmp_path / "quad.obj").write_text("mtllib m.mtl\nusemtl plain\nv 0 0 0\nv 1 0 0\nv 1 1 0\n"
                                       "vt 0 0\nvt 1 0\nvt 1 1\nf 1/1 2/2 3/3\n")
    scene = load_mesh_file(str(tmp_path / "quad.obj"))
    assert scene.materials[0].base_color == (1.0, 1.0, 1.0) and scene.materials[0].texture == 0


def test_ply_vertex_and_face_colours_kept(tmp_path: Path) -> None:
    colours = np.array([[255, 0, 0, 255], [0, 128, 0, 255], [0, 0, 255, 255], [10, 20, 30, 255]], np.uint8)
    trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, vertex_colors=colours, process=False).export(tmp_path / "v.ply")
    face_colours = np.array([[255, 0, 0, 255], [0, 0, 255, 255]], np.uint8)
    trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, face_colors=face_colours, process=False).export(tmp_path / "f.ply")

    scene = load_mesh_file(str(tmp_path / "v.ply"))
    assert scene.uvs is None and scene.materials[0].base_color == (1.0, 1.0, 1.0)
    for (x, y, z), rgba in zip(QUAD_VERTICES, colours, strict=True):
        face, corner = corner_index(scene, (x, -z, y))
        np.testing.assert_allclose(scene.colors[face, corner], rgba[:3] / 255, atol=1e-6)  # PLY: sRGB as is

    scene = load_mesh_file(str(tmp_path / "f.ply"))
    assert sorted(map(tuple, scene.colors.reshape(-1, 3).tolist())) == [(0, 0, 1)] * 3 + [(1, 0, 0)] * 3


def test_gltf_colours_are_linear_and_become_srgb(tmp_path: Path) -> None:
    colours = np.array([[128, 128, 128, 255]] * 4, np.uint8)
    tm = trimesh.Scene()
    tm.add_geometry(trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, vertex_colors=colours, process=False), node_name="c")
    material = PBRMaterial(name="half", baseColorFactor=[0.5, 0.25, 1.0, 1.0])
    tm.add_geometry(textured_quad(material), node_name="f", transform=translation_matrix([5.0, 0.0, 0.0]))
    tm.export(tmp_path / "colours.glb")

    scene = load_mesh_file(str(tmp_path / "colours.glb"))

    coloured = scene.face_object == [o.name for o in scene.objects].index("c")
    np.testing.assert_allclose(scene.colors[coloured], srgb(128 / 255), atol=1e-4)
    np.testing.assert_allclose(scene.colors[~coloured], 1.0)  # faces without colours multiply by white
    factor = scene.materials[scene.face_material[~coloured][0]].base_color
    np.testing.assert_allclose(factor, [srgb(128 / 255), srgb(64 / 255), 1.0], atol=1e-4)  # stored as uint8


def test_gltf_node_transforms_are_applied(tmp_path: Path) -> None:
    mesh = trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, process=False)
    parent = translation_matrix([10.0, 0.0, 0.0]) @ rotation_matrix(np.pi / 2, [0.0, 1.0, 0.0])
    child = translation_matrix([0.0, 5.0, 0.0])
    tm = trimesh.Scene()
    tm.add_geometry(mesh, node_name="parent", geom_name="quad", transform=parent)
    tm.graph.update(frame_from="parent", frame_to="child", matrix=child, geometry="quad")
    tm.add_geometry(mesh.copy(), node_name="mirror", geom_name="quad2", transform=scale_matrix(-1.0))
    tm.export(tmp_path / "nodes.glb")

    scene = load_mesh_file(str(tmp_path / "nodes.glb"))

    names = [o.name for o in scene.objects]
    assert sorted(names) == ["child", "mirror", "parent"]
    for name, transform in (("parent", parent), ("child", parent @ child)):
        gltf = trimesh.transform_points(QUAD_VERTICES, transform)
        expected = np.stack([gltf[:, 0], -gltf[:, 2], gltf[:, 1]], axis=1)
        got = scene.vertices[np.unique(scene.faces[scene.face_object == names.index(name)])]
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=1e-5)
    # The quad faces glTF +z (world -y); a point mirror turns it to face glTF -z, i.e. world +y, and the
    # winding must follow so the face stays front-facing.
    mirrored = scene.face_object == names.index("mirror")
    np.testing.assert_allclose(scene.face_normals()[mirrored], [[0.0, 1.0, 0.0]] * 2, atol=1e-6)
    np.testing.assert_allclose(scene.face_normals()[~mirrored][:, 1], 0.0, atol=1e-6)  # rotated 90 about y


def test_up_axis_and_scale_query(tmp_path: Path) -> None:
    path = tmp_path / "cm.ply"
    trimesh.Trimesh([[100.0, 200.0, 300.0], [0, 0, 0], [0, 100.0, 0]], [[0, 1, 2]], process=False).export(path)

    scene = load_mesh_file(f"{path}?up=z&scale=0.01")
    corner_index(scene, (1.0, 2.0, 3.0))
    assert scene.source_units == "cm"
    assert scene.provenance["up"] == "z" and scene.provenance["scale"] == 0.01

    scene = load_mesh_file(f"{path}?scale=0.01&up=x")  # x up: the file's +x ends at world +z, a proper rotation
    corner_index(scene, (2.0, 3.0, 1.0))
    corner_index(scene, (1.0, 0.0, 0.0))

    scene = load_mesh_file(f"{path}?scale=2")
    corner_index(scene, (200.0, -600.0, 400.0))
    assert scene.source_units == "2 m"


def test_textures_shared_downscaled_and_alpha_composited(tmp_path: Path) -> None:
    shared = quadrant_image()
    wide = np.zeros((4, 2100, 4), np.uint8)
    wide[:, :1050] = (200, 40, 20, 255)  # opaque left half
    wide[:, 1050:] = (0, 0, 255, 0)  # fully transparent right half with garbage colour
    tm = trimesh.Scene()
    for i, image in enumerate([shared, shared, quadrant_image(), Image.fromarray(wide, "RGBA")]):
        material = PBRMaterial(name=f"m{i}", baseColorTexture=image, baseColorFactor=[1.0, 1.0, 1.0, 1.0])
        tm.add_geometry(textured_quad(material), node_name=f"n{i}", transform=translation_matrix([2.0 * i, 0, 0]))
    tm.export(tmp_path / "shared.glb")

    scene = load_mesh_file(str(tmp_path / "shared.glb"))

    texture_of = {o.name: scene.materials[scene.face_material[scene.face_object == i][0]].texture
                  for i, o in enumerate(scene.objects)}
    assert len(scene.textures) == 2  # the same image object, or the same pixels, is stored once
    assert texture_of["n0"] == texture_of["n1"] == texture_of["n2"] != texture_of["n3"]
    wide_tex = scene.textures[texture_of["n3"]]
    assert wide_tex.shape == (4, MAX_TEXTURE_SIZE, 3) and wide_tex.dtype == np.uint8
    assert np.abs(wide_tex[:, :900].astype(int) - (200, 40, 20)).max() <= 2
    assert np.abs(wide_tex[:, 1100:].astype(int) - (200, 40, 20)).max() <= 2  # mean visible colour, not blue


def test_objects_classified_by_bounding_box(tmp_path: Path) -> None:
    tm = trimesh.Scene()
    parts = {
        "floor": trimesh.creation.box([6.0, 0.1, 6.0]),  # glTF y up: a thin slab at the bottom
        "chair": trimesh.creation.box([0.5, 1.0, 0.5], translation_matrix([0.0, 0.5, 0.0])),
        "rug": trimesh.creation.box([2.5, 0.02, 1.5], translation_matrix([1.0, 0.06, 1.0])),
        "shelf": trimesh.creation.box([3.5, 2.2, 0.4], translation_matrix([0.0, 1.1, -2.5])),
        "hall": trimesh.creation.box([4.0, 3.0, 4.0], translation_matrix([0.0, 1.5, 0.0])),
        "tower": trimesh.creation.box([1.0, 9.0, 1.0], translation_matrix([2.0, 4.5, 2.0])),
        "shelf_board": trimesh.creation.box([2.5, 0.05, 0.4], translation_matrix([0.0, 1.5, -2.5])),
    }
    for name, mesh in parts.items():
        tm.add_geometry(mesh, node_name=name)
    tm.export(tmp_path / "room.glb")

    scene = load_mesh_file(str(tmp_path / "room.glb"))

    kinds = {o.name: o.kind for o in scene.objects}
    assert kinds == {"floor": "structure", "chair": "prop", "rug": "structure", "shelf": "prop",
                     "hall": "structure", "tower": "structure", "shelf_board": "prop"}


def test_load_scene_dispatches_mesh_files(tmp_path: Path) -> None:
    path = tmp_path / "tri.ply"
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False).export(path)
    scene = load_scene(f" {path}?up=z ")
    assert scene.name == f"{path}?up=z" and scene.num_faces == 1


def _garbage(path: Path) -> str:
    path.write_bytes(b"glTF\x02\x00\x00\x00 not really")
    return str(path)


def _point_cloud(path: Path) -> str:
    trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(path)
    return str(path)


def _degenerate(path: Path) -> str:
    trimesh.Trimesh([[1.0, 1.0, 1.0]] * 3, [[0, 1, 2]], process=False).export(path)
    return str(path)


def _quad_glb(path: Path) -> str:
    trimesh.Trimesh(QUAD_VERTICES, QUAD_FACES, process=False).export(path)
    return str(path)


@pytest.mark.parametrize(("name", "make", "suffix", "expected"), [
    ("missing.glb", None, "", "does not exist"),
    ("folder.glb", "dir", "", "is a directory"),
    ("scene.fbx", "touch", "", "procedural:indoor:SEED"),
    ("broken.glb", _garbage, "", "cannot parse"),
    ("broken.ply", lambda p: p.write_text("ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2") and str(p),
     "", "cannot parse"),
    ("cloud.ply", _point_cloud, "", "has no triangles"),
    ("flat.ply", _degenerate, "", "zero-area triangles"),
    ("q.glb", _quad_glb, "?color=red", "unknown or repeated"),
    ("q.glb", _quad_glb, "?up=y&up=z", "unknown or repeated"),
    ("q.glb", _quad_glb, "?up=w", "up axis 'w'"),
    ("q.glb", _quad_glb, "?scale=0", "positive number"),
    ("q.glb", _quad_glb, "?scale=-2", "positive number"),
    ("q.glb", _quad_glb, "?scale=nan", "positive number"),
    ("q.glb", _quad_glb, "?scale=cm", "positive number"),
])
def test_errors_name_the_file_and_the_fix(tmp_path: Path, name, make, suffix, expected) -> None:
    path = tmp_path / name
    if make == "dir":
        path.mkdir()
    elif make == "touch":
        path.touch()
    elif make is not None:
        make(path)
    with pytest.raises(SceneError) as info:
        load_mesh_file(str(path) + suffix)
    message = str(info.value)
    assert expected in message and name in message and "\n" not in message


def alpha_quad_image() -> Image.Image:
    """8 x 8 RGBA: colour from ``quadrant_image``, alpha 255 on the left half, 0 on the right, 100 on the last row."""
    rgba = np.dstack([np.asarray(quadrant_image()), np.zeros((8, 8), np.uint8)])
    rgba[:, :4, 3] = 255
    rgba[-1, :, 3] = 100
    return Image.fromarray(rgba, "RGBA")


@pytest.mark.parametrize("mode, cutoff, expected", [("MASK", 0.3, ("mask", 0.3)), ("MASK", None, ("mask", 0.5)),
                                                    ("BLEND", 0.3, ("mask", 0.5)), ("OPAQUE", 0.3, ("opaque", 0.5))])
def test_gltf_alpha_modes(tmp_path: Path, mode: str, cutoff: float | None, expected: tuple) -> None:
    material = PBRMaterial(name="fence", baseColorTexture=alpha_quad_image(), baseColorFactor=[1.0, 1.0, 1.0, 0.8],
                           alphaMode=mode, alphaCutoff=cutoff)
    textured_quad(material).export(tmp_path / "fence.glb")

    scene = load_mesh_file(str(tmp_path / "fence.glb"))

    m = scene.materials[0]
    assert (m.alpha_mode, m.alpha_cutoff, m.alpha_invert) == (*expected, False)
    assert scene.textures[0].shape == (8, 8, 3)  # colour stays RGB (alpha composited)
    if mode == "OPAQUE":
        assert m.alpha == -1 and scene.alphas == []
        return
    alpha = np.asarray(alpha_quad_image())[..., 3].astype(np.float64)
    np.testing.assert_array_equal(scene.alphas[m.alpha], np.rint(alpha * 204 / 255))  # factor 0.8 as stored, 204


def test_gltf_mask_without_cut_texels_stays_opaque(tmp_path: Path) -> None:
    material = PBRMaterial(name="solid", baseColorTexture=quadrant_image(), alphaMode="MASK", alphaCutoff=0.5)
    untextured = PBRMaterial(name="glass", baseColorFactor=[0.5, 0.5, 0.5, 0.2], alphaMode="BLEND")
    tm = trimesh.Scene()
    tm.add_geometry(textured_quad(material), node_name="panel")
    tm.add_geometry(trimesh.Trimesh(QUAD_VERTICES + 5, QUAD_FACES, process=False,
                                    visual=trimesh.visual.TextureVisuals(material=untextured)), node_name="glass")
    tm.export(tmp_path / "two.glb")

    scene = load_mesh_file(str(tmp_path / "two.glb"))

    by_name = {m.name: m for m in scene.materials}
    assert by_name["solid"].alpha_mode == "opaque"
    glass = by_name["glass"]  # factor alpha 0.2 < 0.5 everywhere: a constant, fully cut plane
    assert glass.alpha_mode == "mask" and scene.alphas[glass.alpha].tolist() == [[51]]


def test_obj_map_d_is_an_alpha_mask(tmp_path: Path) -> None:
    quadrant_image().save(tmp_path / "tex.png")
    mask = np.zeros((4, 4), np.uint8)
    mask[:, :2] = 255
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    (tmp_path / "m.mtl").write_text("newmtl leaves\nmap_Kd tex.png\nmap_d -clamp off mask.png\n")
    (tmp_path / "quad.obj").write_text("mtllib m.mtl\nusemtl leaves\nv 0 0 0\nv 1 0 0\nv 1 1 0\n"
                                       "vt 0 0\nvt 1 0\nvt 1 1\nf 1/1 2/2 3/3\n")

    scene = load_mesh_file(str(tmp_path / "quad.obj"))

    m = scene.materials[0]
    assert (m.alpha_mode, m.alpha_cutoff) == ("mask", 0.5)
    np.testing.assert_array_equal(scene.alphas[m.alpha], mask)  # grey level of a map without alpha
