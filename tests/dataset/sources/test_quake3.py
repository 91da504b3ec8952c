"""Quake 3 BSP loader: a synthetic level built here byte by byte, error cases, and real OpenArena maps."""

from __future__ import annotations

import io
import math
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset.core.conventions import QUAKE_UNIT as INCH
from dataset.core.conventions import look_at, perspective_directions
from dataset.core.scene import SceneError
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from dataset.sources import load_scene, quake3
from dataset.sources.quake3 import color_shift, find_openarena_maps, load_quake3, parse_shader_script

RAW_LM = [(30, 40, 50), (10, 10, 10)]
MESH_COLOR = (100, 50, 25)
WALL_RGB = (200, 100, 50)
QUADRANTS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (255, 255, 255)}
"""floor.tga texels (row, col) -> colour: red top-left, green top-right, blue bottom-left, white bottom-right."""

SHADERS = """// a comment with { braces } that the tokenizer must ignore
textures/mptest/wall_shader
{
    qer_editorimage textures/mptest/editor.tga
    {
        map $lightmap
    }
    {
        map textures/mptest/env.tga
        tcGen environment
    }
    {
        map textures/mptest/wall.tga  /* stored as .jpg: the lookup falls back like Quake 3 */
        blendFunc filter
    }
}
textures/mptest/beam
{
    surfaceparm nonsolid
    surfaceparm trans
    {
        map textures/mptest/floor.tga
        blendFunc add
    }
}
"""


class BspBuilder:
    """Writes a minimal IBSP file the way q3map does: faces wound clockwise seen from the front."""

    def __init__(self) -> None:
        self.textures: list[bytes] = []
        self.vertices: list[bytes] = []
        self.meshverts: list[int] = []
        self.faces: list[bytes] = []
        self.models: list[tuple[int, int]] = []
        self.lightmaps: list[bytes] = []
        self.entities = ""

    def texture(self, name: str, flags: int = 0, contents: int = 1) -> int:
        self.textures.append(struct.pack("<64sii", name.encode(), flags, contents))
        return len(self.textures) - 1

    def _vertex(self, pos, st=(0, 0), lm=(0, 0), normal=(0, 0, 1), color=(255, 255, 255)) -> None:
        self.vertices.append(struct.pack("<3f2f2f3f4B", *pos, *st, *lm, *normal, *color, 255))

    def polygon(self, texture: int, corners, normal, st=None, lm_index: int = -3, lm=None,
                color=(255, 255, 255), face_type: int = 1) -> int:
        """A planar polygon (or a mesh with face_type 3); corners in any order, stored clockwise from the front."""
        p = np.asarray(corners, float)
        if np.dot(np.cross(p[1] - p[0], p[2] - p[0]), normal) > 0:
            corners = corners[::-1]
        first = len(self.vertices)
        for c in corners:
            self._vertex(c, st(c) if st else (0, 0), lm(c) if lm else (0, 0), normal, color)
        mv = len(self.meshverts)
        for i in range(1, len(corners) - 1):
            self.meshverts += [0, i, i + 1]
        return self._face(texture, face_type, first, len(corners), mv, 3 * (len(corners) - 2), lm_index, normal)

    def patch(self, texture: int, grid, normals) -> int:
        """A Bézier patch from an (h, w) grid of control points, rows first."""
        first = len(self.vertices)
        h, w = len(grid), len(grid[0])
        for r in range(h):
            for c in range(w):
                self._vertex(grid[r][c], st=(c / (w - 1), r / (h - 1)), normal=normals[r][c])
        return self._face(texture, 2, first, h * w, 0, 0, -3, (0, 0, 0), size=(w, h))

    def billboard(self, texture: int) -> int:
        self._vertex((0, 0, 0))
        return self._face(texture, 4, len(self.vertices) - 1, 1, 0, 0, -1, (0, 0, 0))

    def _face(self, texture, face_type, vertex, n_vertexes, meshvert, n_meshverts, lm_index, normal,
              size=(0, 0)) -> int:
        self.faces.append(struct.pack("<12i12f2i", texture, -1, face_type, vertex, n_vertexes, meshvert,
                                      n_meshverts, lm_index, 0, 0, 0, 0, *([0.0] * 9), *normal, *size))
        return len(self.faces) - 1

    def build(self, magic: bytes = b"IBSP", version: int = 46) -> bytes:
        lumps = {
            0: self.entities.encode() + b"\0",
            1: b"".join(self.textures),
            7: b"".join(struct.pack("<6f4i", *([0.0] * 6), f, n, 0, 0) for f, n in self.models),
            10: b"".join(self.vertices),
            11: struct.pack(f"<{len(self.meshverts)}i", *self.meshverts),
            13: b"".join(self.faces),
            14: b"".join(self.lightmaps),
        }
        header_size = 8 + 17 * 8
        body, directory = b"", []
        for i in range(17):
            data = lumps.get(i, b"")
            directory.append((header_size + len(body), len(data)))
            body += data + b"\0" * (-len(data) % 4)
        return struct.pack("<4si", magic, version) + b"".join(struct.pack("<ii", *d) for d in directory) + body


def build_level() -> tuple[bytes, dict[str, int]]:
    """A 256-unit room: floor, two walls, a vertex-lit mesh prop, an arched patch, sky, beam, billboard, a door."""
    b = BspBuilder()
    floor_tex = b.texture("textures/mptest/floor")
    wall_tex = b.texture("textures/mptest/wall_shader")
    sky_tex = b.texture("textures/skies/mptest_sky", flags=0x4, contents=0)
    beam_tex = b.texture("textures/mptest/beam", contents=0x20000000)
    missing_tex = b.texture("textures/mptest/missing")
    b.lightmaps = [bytes(rgb * (128 * 128)) for rgb in RAW_LM]
    ids = {}
    ids["floor"] = b.polygon(floor_tex, [(0, 0, 0), (256, 0, 0), (256, 256, 0), (0, 256, 0)], (0, 0, 1),
                             st=lambda c: (c[0] / 128, -c[1] / 128), lm_index=0,
                             lm=lambda c: (c[0] / 512, c[1] / 512))
    ids["wall_x"] = b.polygon(wall_tex, [(0, 0, 0), (0, 256, 0), (0, 256, 128), (0, 0, 128)], (1, 0, 0), lm_index=0)
    ids["wall_y"] = b.polygon(wall_tex, [(0, 0, 0), (256, 0, 0), (256, 0, 128), (0, 0, 128)], (0, 1, 0), lm_index=0)
    ids["mesh"] = b.polygon(floor_tex, [(128, 128, 0), (160, 128, 0), (160, 128, 32), (128, 128, 32)], (0, -1, 0),
                            color=MESH_COLOR, face_type=3)
    r2 = math.sqrt(0.5)
    ids["patch"] = b.patch(floor_tex, [[(x, 0, 128) for x in (0, 128, 256)],
                                       [(x, 128, 256) for x in (0, 128, 256)],
                                       [(x, 256, 128) for x in (0, 128, 256)]],
                           [[(0, -r2, r2)] * 3, [(0, 0, 1)] * 3, [(0, r2, r2)] * 3])
    ids["sky"] = b.polygon(sky_tex, [(0, 0, 300), (256, 0, 300), (256, 256, 300), (0, 256, 300)], (0, 0, -1))
    ids["beam"] = b.polygon(beam_tex, [(64, 64, 0), (64, 96, 0), (64, 96, 128), (64, 64, 128)], (1, 0, 0))
    ids["billboard"] = b.billboard(floor_tex)
    ids["door"] = b.polygon(missing_tex, [(256, 0, 0), (256, 256, 0), (256, 256, 128), (256, 0, 128)], (-1, 0, 0),
                            lm_index=1)
    b.models = [(0, ids["door"]), (ids["door"], 1)]
    b.entities = ('{\n"classname" "worldspawn"\n}\n'
                  '{\n"classname" "info_player_deathmatch"\n"origin" "64 32 24"\n"angle" "90"\n}\n'
                  '{\n"classname" "func_door"\n"model" "*1"\n}\n')
    return b.build(), ids


def image_bytes(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def write_pk3(path: Path, bsp: bytes, map_name: str = "mptest") -> Path:
    floor = Image.new("RGB", (4, 4))
    for (r, c), rgb in QUADRANTS.items():
        floor.paste(rgb, (2 * c, 2 * r, 2 * c + 2, 2 * r + 2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"maps/{map_name}.bsp", bsp)
        zf.writestr("textures/mptest/floor.tga", image_bytes(floor, "TGA"))
        zf.writestr("textures/mptest/wall.jpg", image_bytes(Image.new("RGB", (1024, 512), WALL_RGB), "JPEG"))
        zf.writestr("textures/mptest/env.tga", image_bytes(Image.new("RGB", (8, 8), (0, 0, 0)), "TGA"))
        zf.writestr("scripts/mptest.shader", SHADERS)
    return path


@pytest.fixture
def no_installed_data(monkeypatch, tmp_path):
    """Hide the installed OpenArena archives so that the synthetic tests see only their own files."""
    monkeypatch.setattr(quake3.archives, "OPENARENA_DIRS", (str(tmp_path / "no-such-dir"),))
    monkeypatch.delenv(quake3.OPENARENA_ENV, raising=False)


@pytest.fixture
def level(tmp_path, no_installed_data):
    bsp, ids = build_level()
    pk3 = write_pk3(tmp_path / "mptest.pk3", bsp)
    return pk3, ids


def triangles_of(scene, material_name: str) -> np.ndarray:
    names = [m.name for m in scene.materials]
    return np.flatnonzero(scene.face_material == names.index(material_name)) if material_name in names else []


def test_synthetic_level_geometry(level):
    pk3, _ = level
    scene = load_quake3(f"{pk3}:mptest")
    # floor 2 + walls 2 x 2 + mesh 2 + patch 2 * 8^2 + door 2; sky, beam and billboard dropped.
    assert scene.num_faces == 2 + 4 + 2 + 128 + 2
    assert len(triangles_of(scene, "textures/skies/mptest_sky")) == 0
    assert len(triangles_of(scene, "textures/mptest/beam")) == 0
    assert scene.bounds()[1][2] == pytest.approx(192 * INCH)  # the sky at z=300 is gone; the arch peaks at 192
    corner = np.flatnonzero(np.all(np.isclose(scene.vertices, [256 * INCH, 256 * INCH, 0], atol=1e-6), axis=1))
    assert len(corner) >= 1
    assert scene.source_units == "inch" and scene.baked_lighting


def test_winding_is_counter_clockwise_from_the_front(level):
    pk3, ids = level
    scene = load_quake3(f"{pk3}:mptest")
    normals = scene.face_normals()
    corners = scene.vertices[scene.faces] / INCH
    # Planar faces: each triangle's right-hand normal is the face normal stored in the BSP.
    for axis, value, normal in ((2, 0, (0, 0, 1)), (0, 0, (1, 0, 0)), (1, 0, (0, 1, 0)), (0, 256, (-1, 0, 0)),
                                (1, 128, (0, -1, 0))):
        on_plane = np.isclose(corners[:, :, axis], value, atol=1e-3).all(1)
        assert on_plane.sum() == 2
        np.testing.assert_allclose(normals[on_plane], [normal] * int(on_plane.sum()), atol=1e-5)
    # The patch faces where its control-point normals point: up, and outwards from the arch's axis.
    patch = scene.face_object == [o.name for o in scene.objects].index(f"patch_{ids['patch']}")
    centre_y = corners[patch][:, :, 1].mean(1)
    assert (normals[patch][:, 2] > 0).all()
    side = np.abs(centre_y - 128) > 16
    assert (np.sign(normals[patch][side, 1]) == np.sign(centre_y[side] - 128)).all()


def test_patch_tessellation_level_and_shape(level):
    pk3, ids = level
    for subdivisions, expected in ((2, 8), (4, 32), (8, 128)):
        scene = load_quake3(f"{pk3}:mptest?subdivisions={subdivisions}")
        patch = [o.name for o in scene.objects].index(f"patch_{ids['patch']}")
        assert (scene.face_object == patch).sum() == expected
    # Bézier midpoint of control rows z = 128, 256, 128 at y = 0, 128, 256: (128, 128, 192).
    assert np.isclose(scene.vertices, np.array([128, 128, 192]) * INCH, atol=1e-5).all(1).any()


def test_uvs_textures_and_colours(level):
    pk3, _ = level
    scene = load_quake3(f"{pk3}:mptest")
    floor = triangles_of(scene, "textures/mptest/floor")
    material = scene.materials[scene.face_material[floor[0]]]
    texture = scene.textures[material.texture]
    assert texture.shape == (4, 4, 3)
    for (r, c), rgb in QUADRANTS.items():
        assert tuple(texture[2 * r, 2 * c]) == rgb
    # Quake st (x/128, -y/128) are kept as they are (origin at the image's top-left, v down).
    corners = scene.vertices[scene.faces[floor]]
    at_far_corner = np.isclose(corners, [256 * INCH, 256 * INCH, 0], atol=1e-6).all(-1)
    np.testing.assert_allclose(scene.uvs[floor][at_far_corner], [[2.0, -2.0]] * int(at_far_corner.sum()))
    at_origin = np.isclose(corners, 0, atol=1e-6).all(-1)
    u, v = scene.uvs[floor][at_origin][0]
    assert tuple(texture[int(v * 4) % 4, int(u * 4) % 4]) == QUADRANTS[(0, 0)]
    # The wall shader resolves through its script: the environment stage is skipped, wall.tga -> wall.jpg,
    # and the 1024x512 image is downscaled to 512 px on its longer side.
    wall = scene.materials[scene.face_material[triangles_of(scene, "textures/mptest/wall_shader")[0]]]
    wall_texture = scene.textures[wall.texture]
    assert wall_texture.shape == (256, 512, 3)
    np.testing.assert_allclose(wall_texture.reshape(-1, 3).mean(0), WALL_RGB, atol=3)
    missing = scene.materials[scene.face_material[triangles_of(scene, "textures/mptest/missing")[0]]]
    assert missing.texture == -1 and missing.base_color == quake3.UNTEXTURED_COLOR
    assert scene.provenance["shaders_resolved"] == 2
    assert scene.provenance["unresolved_shaders"] == ["textures/mptest/missing"]


def test_lightmaps_and_vertex_colours(level):
    pk3, _ = level
    scene = load_quake3(f"{pk3}:mptest")
    floor = triangles_of(scene, "textures/mptest/floor")
    lit_floor = floor[scene.face_lightmap[floor] >= 0]
    assert len(lit_floor) == 2
    lightmap = scene.textures[scene.face_lightmap[lit_floor[0]]]
    assert lightmap.shape == (128, 128, 3)
    assert tuple(lightmap[5, 7]) == tuple(4 * c for c in RAW_LM[0])  # over-bright shift: x4
    np.testing.assert_allclose(scene.colors[lit_floor], 1.0)
    assert scene.lightmap_uvs[lit_floor].max() == pytest.approx(0.5)
    door = triangles_of(scene, "textures/mptest/missing")
    assert tuple(scene.textures[scene.face_lightmap[door[0]]][0, 0]) == (40, 40, 40)
    mesh = np.flatnonzero(scene.face_object == [o.name for o in scene.objects].index("mesh_3"))
    assert (scene.face_lightmap[mesh] == -1).all()
    # (100, 50, 25) x 4 = (400, 200, 100): scaled back so the brightest channel is 255, keeping the hue.
    np.testing.assert_allclose(scene.colors[mesh], np.full((2, 3, 3), (255 / 255, 127 / 255, 63 / 255)), atol=1e-6)


def test_objects_and_spawn_points(level):
    pk3, ids = level
    scene = load_quake3(f"{pk3}:mptest")
    kinds = {o.name: o.kind for o in scene.objects}
    assert kinds == {"world": "structure", f"mesh_{ids['mesh']}": "prop", f"patch_{ids['patch']}": "structure",
                     "func_door_1": "prop"}
    door = [o.name for o in scene.objects].index("func_door_1")
    np.testing.assert_allclose(scene.object_bounds()[door], np.array([[256, 0, 0], [256, 256, 128]]) * INCH,
                               atol=1e-6)
    np.testing.assert_allclose(scene.spawn_points, [[64 * INCH, 32 * INCH, 0.0, math.pi / 2]], atol=1e-9)
    assert scene.provenance["loader"] == "quake3" and scene.provenance["map"] == "mptest"
    assert scene.provenance["licence"] == "GPL-2+ (OpenArena)"


def test_dispatch_through_load_scene_and_single_map_archive(level):
    pk3, _ = level
    scene = load_scene(f"{pk3}:mptest")
    assert scene.name == f"{pk3}:mptest"
    assert load_scene(str(pk3)).num_faces == scene.num_faces  # an archive with one map needs no name


def test_openarena_source_and_archive_precedence(tmp_path, monkeypatch, no_installed_data):
    bsp, _ = build_level()
    data_dir = tmp_path / "baseoa"
    data_dir.mkdir()
    write_pk3(data_dir / "pak0.pk3", bsp)
    write_pk3(data_dir / "pak9-patch.pk3", bsp)
    monkeypatch.setenv(quake3.OPENARENA_ENV, str(data_dir))
    assert find_openarena_maps() == [("mptest", str((data_dir / "pak9-patch.pk3").resolve()))]
    scene = load_quake3("openarena:mptest")
    assert scene.provenance["archive"].endswith("pak9-patch.pk3")
    with pytest.raises(SceneError, match=r"unknown map 'mptset'.*mptest.*matrix-pano scenes"):
        load_quake3("openarena:mptset")


def test_missing_openarena_data_says_how_to_install(no_installed_data):
    with pytest.raises(SceneError, match=r"apt-get install openarena-data.*MATRIX_PANO_OPENARENA_PATH"):
        load_quake3("openarena:oa_dm1")


def test_loose_bsp_without_archives_is_untextured(tmp_path, no_installed_data):
    bsp, _ = build_level()
    path = tmp_path / "mptest.bsp"
    path.write_bytes(bsp)
    scene = load_quake3(str(path))
    assert scene.num_faces == 138 + 2  # without its shader script the beam is not known to be a glow
    assert all(m.texture == -1 for m in scene.materials)
    assert scene.provenance["shaders_resolved"] == 0


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"PK\3\4" + b[4:], "magic"),
    (lambda b: b[:4] + struct.pack("<i", 47) + b[8:], "version 47"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:100], "truncated"),
])
def test_bad_bsp_files(tmp_path, no_installed_data, mutate, message):
    bsp, _ = build_level()
    path = tmp_path / "broken.bsp"
    path.write_bytes(mutate(bsp))
    with pytest.raises(SceneError, match=message) as err:
        load_quake3(str(path))
    assert "broken.bsp" in str(err.value)


def test_bad_archives_and_names(tmp_path, no_installed_data):
    bad = tmp_path / "bad.pk3"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(SceneError, match=r"bad\.pk3 is not a readable \.pk3 \(zip\) archive"):
        load_quake3(f"{bad}:oa_dm1")
    pk3 = write_pk3(tmp_path / "good.pk3", build_level()[0])
    with pytest.raises(SceneError, match=r"unknown map 'nosuchmap'; available: mptest"):
        load_quake3(f"{pk3}:nosuchmap")
    with pytest.raises(SceneError, match="does not exist"):
        load_quake3(f"{tmp_path / 'absent.pk3'}:mptest")
    with pytest.raises(SceneError, match="not a map name"):
        load_quake3(f"{pk3}:../../etc/passwd")
    with pytest.raises(SceneError, match="subdivisions must be an integer"):
        load_quake3(f"{pk3}:mptest?subdivisions=0")
    with pytest.raises(SceneError, match="unknown option"):
        load_quake3(f"{pk3}:mptest?tess=4")


def test_unsafe_member_names_are_ignored(tmp_path, no_installed_data):
    pk3 = tmp_path / "evil.pk3"
    with zipfile.ZipFile(pk3, "w") as zf:
        zf.writestr("../maps/escape.bsp", build_level()[0])
        zf.writestr("/maps/absolute.bsp", build_level()[0])
    with pytest.raises(SceneError, match="holds no maps"):
        load_quake3(f"{pk3}:escape")


def test_shader_script_parsing():
    table = parse_shader_script("""
    textures/a/anim { { animMap 4 textures/a/f1.tga textures/a/f2.tga } }
    textures/a/editor_only { qer_editorimage textures/a/ed.jpg { map $whiteimage } }
    textures/a/env_only { { map textures/a/chrome.tga tcgen environment } }
    textures/a/glow { { clampmap textures/a/glow.tga blendfunc GL_ONE GL_ONE } { map $lightmap } }
    """)
    assert table["textures/a/anim"].image == "textures/a/f1.tga"
    assert table["textures/a/editor_only"].image == "textures/a/ed.jpg"
    assert table["textures/a/env_only"].image == "textures/a/chrome.tga"
    assert table["textures/a/glow"].blended and not table["textures/a/anim"].blended


def test_color_shift_keeps_hue():
    assert color_shift(np.array([[10, 20, 30], [100, 50, 25], [255, 255, 255]], np.uint8), 2).tolist() == [
        [40, 80, 120], [255, 127, 63], [255, 255, 255]]
    assert color_shift(np.array([100, 50, 25], np.uint8), 1).tolist() == [200, 100, 50]


REAL_MAPS = ("oa_dm1", "oa_dm4", "aggressor", "oa_dm5")


@pytest.mark.openarena
@pytest.mark.parametrize("name", REAL_MAPS)
def test_real_openarena_maps(name):
    available = dict(find_openarena_maps())
    if not available:
        pytest.skip("OpenArena data not installed (apt-get install openarena-data)")
    if name not in available:
        pytest.skip(f"map {name} not in the installed OpenArena archives")
    load_quake3(f"openarena:{name}")  # textures decoded and cached
    start = time.perf_counter()
    scene = load_quake3(f"openarena:{name}")
    elapsed = time.perf_counter() - start
    print(f"{name}: {scene.summary()}; load {elapsed:.3f} s (textures cached), "
          f"{scene.provenance['faces_textured']:.1%} of triangles textured")
    assert elapsed < 5.0
    assert 1_000 < scene.num_faces < 300_000
    assert scene.provenance["faces_textured"] > 0.85
    assert len(scene.spawn_points) >= 2
    extent = np.ptp(scene.bounds(), axis=0)
    assert 10 < extent[:2].max() < 500 and 3 < extent[2] < 250
    lo, hi = scene.bounds()
    assert ((scene.spawn_points[:, :3] >= lo - 1e-3) & (scene.spawn_points[:, :3] <= hi + 1e-3)).all()
    assert np.isfinite(scene.uvs).all() and np.isfinite(scene.lightmap_uvs).all()
    assert (scene.face_lightmap >= 0).mean() > 0.5


def test_shader_alpha_func_is_the_image_stages():
    table = parse_shader_script("""
    textures/a/grate { cull none { map textures/a/grate.tga blendFunc gl_one gl_zero alphaFunc GT0 depthWrite }
                       { map $lightmap blendFunc GL_DST_COLOR GL_ZERO } }
    textures/a/fence { { map $lightmap alphaFunc GE128 } { map textures/a/fence.tga alphafunc ge128 } }
    textures/a/inverted { { map textures/a/x.tga alphaFunc LT128 } }
    textures/a/later { { map textures/a/base.tga } { map textures/a/detail.tga alphaFunc GE128 } }
    textures/a/env { { map textures/a/chrome.tga tcGen environment alphaFunc GT0 } }
    textures/a/odd { { map textures/a/odd.tga alphaFunc GE64 } }
    textures/a/plain { { map textures/a/plain.tga } }
    """)
    funcs = {name.rsplit("/", 1)[1]: info.alpha_func for name, info in table.items()}
    assert funcs == {"grate": "GT0", "fence": "GE128", "inverted": "LT128", "later": None, "env": "GT0",
                     "odd": None, "plain": None}
    assert not table["textures/a/grate"].blended and table["textures/a/grate"].image == "textures/a/grate.tga"


ALPHA_SHADERS = """
textures/mpalpha/grate_ge { { map textures/mpalpha/grate.tga alphaFunc GE128 depthWrite } { map $lightmap } }
textures/mpalpha/grate_lt { { map textures/mpalpha/grate.tga alphaFunc LT128 } }
textures/mpalpha/grate_gt { { map textures/mpalpha/grate.tga alphaFunc GT0 } }
textures/mpalpha/solid_jpg { { map textures/mpalpha/solid.jpg alphaFunc GT0 } }
textures/mpalpha/plain { { map textures/mpalpha/grate.tga } }
"""


def test_alpha_tested_shaders_become_masked_materials(tmp_path, no_installed_data):
    b = BspBuilder()
    for k, name in enumerate(("grate_ge", "grate_lt", "grate_gt", "solid_jpg", "plain")):
        b.polygon(b.texture(f"textures/mpalpha/{name}"), [(0, 64 * k, 0), (64, 64 * k, 0), (64, 64 * k + 64, 0),
                                                        (0, 64 * k + 64, 0)], (0, 0, 1))
    alpha = np.array([[0, 64, 127, 128], [255, 200, 1, 0]], np.uint8)
    rgba = np.dstack([np.full((2, 4, 3), 90, np.uint8), alpha])
    pk3 = tmp_path / "mpalpha.pk3"
    with zipfile.ZipFile(pk3, "w") as zf:
        zf.writestr("maps/mpalpha.bsp", b.build())
        zf.writestr("textures/mpalpha/grate.tga", image_bytes(Image.fromarray(rgba, "RGBA"), "TGA"))
        zf.writestr("textures/mpalpha/solid.jpg", image_bytes(Image.new("RGB", (4, 4), (9, 9, 9)), "JPEG"))
        zf.writestr("scripts/mpalpha.shader", ALPHA_SHADERS)

    scene = load_quake3(f"{pk3}:mpalpha")

    mats = {m.name.rsplit("/", 1)[1]: m for m in scene.materials}
    assert {k: (m.alpha_mode, m.alpha_cutoff, m.alpha_invert) for k, m in mats.items()} == {
        "grate_ge": ("mask", 0.5, False), "grate_lt": ("mask", 0.5, True), "grate_gt": ("mask", 0.5 / 255, False),
        "solid_jpg": ("opaque", 0.5, False), "plain": ("opaque", 0.5, False)}
    assert len(scene.alphas) == 1 and mats["grate_ge"].alpha == mats["grate_lt"].alpha == mats["grate_gt"].alpha == 0
    np.testing.assert_array_equal(scene.alphas[0], alpha)  # the TGA's alpha as stored, the texture stays RGB
    assert scene.textures[mats["plain"].texture].shape == (2, 4, 3) and mats["plain"].alpha == -1
    assert scene.provenance["shaders_alpha_tested"] == 3


@pytest.mark.openarena
def test_openarena_grates_are_see_through():
    """oa_dm6's floor grates (proto_grate, alphaFunc GT0): from above, a good share of the pixels whose first
    solid surface is a grate see the floor below it (the ray caster, as collisions do, still meets the grate)."""
    if "oa_dm6" not in dict(find_openarena_maps()):
        pytest.skip("OpenArena map oa_dm6 not installed (apt-get install openarena-data)")
    scene = load_quake3("openarena:oa_dm6")
    grate = next(i for i, m in enumerate(scene.materials) if m.name == "textures/base_floor/proto_grate")
    assert scene.materials[grate].alpha_mode == "mask"
    faces = np.flatnonzero(scene.face_material == grate)
    tri = scene.vertices[scene.faces[faces]].astype(np.float64)
    largest = int(np.argmax(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)))
    centre = tri[largest].mean(0)
    pose = look_at(centre + (0.6, 0.3, 1.6), centre)
    w, h = 160, 120
    with EmbeddedRenderer(scene, RenderSettings(auto_gain=False)) as r:
        frames = r.render_perspective(pose, w, h, 90.0)
        dirs = np.ascontiguousarray(perspective_directions(w, h, 90.0).reshape(-1, 3) @ pose[:3, :3].T.astype(
            np.float32))
        solid = r.caster.cast(np.tile(pose[:3, 3].astype(np.float32), (len(dirs), 1)), dirs)
    on_grate = np.isin(solid.prim, faces)
    through = frames.depth[0].reshape(-1)[on_grate] > solid.t[on_grate] + 0.01
    print(f"oa_dm6 grate: {on_grate.mean():.0%} of the view, {through.mean():.0%} of it seen through")
    assert on_grate.mean() > 0.3
    assert 0.1 < through.mean() < 0.6  # proto_grate.tga is 28 % transparent texels
    assert (frames.instance[0].reshape(-1)[on_grate][through] >= 0).all()  # something solid lies below
