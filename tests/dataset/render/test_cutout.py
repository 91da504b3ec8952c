"""See-through (alpha-tested) surfaces in the embedded renderer: a checkerboard fence in front of a wall."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.core.conventions import look_at, perspective_directions, pose_from_heading
from dataset.core.raycast import EmbreeCaster
from dataset.core.scene import Material, Scene, SceneError, SceneObject, merge_scenes
from dataset.render.embedded import MAX_CUTOUT_LAYERS, EmbeddedRenderer, RenderSettings

EYE = np.array([0.0, 0.0, 1.5])
WALL_X, FENCE_X = 3.0, 2.0
FENCE_Y, FENCE_Z = (-1.0, 1.0), (0.5, 2.5)
CELLS = 4
"""The fence texture is CELLS x CELLS texels, opaque where column + row is even."""
SIZE = 96


def quad(x: float, y: tuple[float, float], z: tuple[float, float], name: str, material: Material,
         textures: list[np.ndarray] = (), alphas: list[np.ndarray] = ()) -> Scene:
    """A vertical quad in the plane X = x with UV (0, 0) at (y0, z1): s grows with y, t grows downwards."""
    (y0, y1), (z0, z1) = y, z
    verts = [(x, y0, z1), (x, y1, z1), (x, y1, z0), (x, y0, z0)]
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return Scene(vertices=verts, faces=faces, face_material=[0, 0], materials=[material], face_object=[0, 0],
                 objects=[SceneObject(name, "structure")], textures=list(textures), alphas=list(alphas),
                 uvs=uv[faces], name=name)


def checker_alpha() -> np.ndarray:
    rows, cols = np.indices((CELLS, CELLS))
    return np.where((rows + cols) % 2 == 0, 255, 0).astype(np.uint8)


def fence_scene(invert: bool = False, clear_sheets: int = 0, mode: str = "mask") -> Scene:
    """Red wall at X = 3, green checkerboard fence at X = 2, and ``clear_sheets`` fully cut sheets between them."""
    green = np.zeros((CELLS, CELLS, 3), np.uint8)
    green[..., 1] = 230
    parts = [quad(WALL_X, (-6, 6), (-4, 7), "wall", Material("wall", (0.9, 0.1, 0.1))),
             quad(FENCE_X, FENCE_Y, FENCE_Z, "fence",
                  Material("fence", (1, 1, 1), 0, alpha_mode=mode, alpha_invert=invert,
                           alpha=0 if mode == "mask" else -1),
                  textures=[green], alphas=[checker_alpha()] if mode == "mask" else [])]
    for k in range(clear_sheets):
        parts.append(quad(FENCE_X + 0.5 + 0.05 * k, (-6, 6), (-4, 7), f"clear_{k}",
                          Material("clear", (0.2, 0.2, 0.9), alpha_mode="mask", alpha=0),
                          alphas=[np.zeros((1, 1), np.uint8)]))
    return merge_scenes(parts, "fence")


def analytic(invert: bool = False, margin: float = 0.15):
    """Pose of the SIZE x SIZE view from EYE along +X, the fence and wall ranges along its rays, masks of the rays
    that meet the fence well inside one texel (``margin`` texels from any texel edge), whose texel is drawn, and
    that pass well beside the fence."""
    pose = pose_from_heading(EYE, 0.0)
    dirs = perspective_directions(SIZE, SIZE, 90.0).reshape(-1, 3).astype(np.float64) @ pose[:3, :3].T
    t_fence = (FENCE_X - EYE[0]) / dirs[:, 0]
    t_wall = (WALL_X - EYE[0]) / dirs[:, 0]
    p = EYE + dirs * t_fence[:, None]
    s = (p[:, 1] - FENCE_Y[0]) / (FENCE_Y[1] - FENCE_Y[0]) * CELLS
    t = (FENCE_Z[1] - p[:, 2]) / (FENCE_Z[1] - FENCE_Z[0]) * CELLS
    inside = (s > margin) & (s < CELLS - margin) & (t > margin) & (t < CELLS - margin)
    beside = (s < -margin) | (s > CELLS + margin) | (t < -margin) | (t > CELLS + margin)
    clear = inside & (np.abs(s - np.rint(s)) > margin) & (np.abs(t - np.rint(t)) > margin)
    drawn = ((np.floor(s) + np.floor(t)) % 2 == 0) != invert
    return pose, t_fence, t_wall, clear, drawn, beside


def render(scene: Scene, pose: np.ndarray, **settings):
    with EmbeddedRenderer(scene, RenderSettings(auto_gain=False, **settings)) as r:
        frames = r.render_perspective(pose, SIZE, SIZE, 90.0)
    return frames.depth[0].reshape(-1), frames.instance[0].reshape(-1), frames.rgb[0].reshape(-1, 3).astype(int)


@pytest.mark.parametrize("invert", [False, True])
def test_fence_depth_ids_and_colour_come_from_the_wall_where_cut(invert):
    scene = fence_scene(invert)
    wall, fence = (scene.objects.index(o) for o in scene.objects)
    pose, t_fence, t_wall, clear, drawn, beside = analytic(invert)
    depth, inst, rgb = render(scene, pose)

    opaque, cut = clear & drawn, clear & ~drawn
    assert opaque.sum() > 500 and cut.sum() > 500  # both kinds of texel are well sampled
    np.testing.assert_allclose(depth[opaque], t_fence[opaque], rtol=1e-5)
    np.testing.assert_allclose(depth[cut], t_wall[cut], rtol=1e-5)
    assert beside.sum() > 1000
    np.testing.assert_allclose(depth[beside], t_wall[beside], rtol=1e-5)
    assert (inst[opaque] == fence).all() and (inst[cut] == wall).all()
    assert (rgb[opaque, 1] > 2 * rgb[opaque, 0]).all(), "opaque texels show the green fence"
    assert (rgb[cut, 0] > 2 * rgb[cut, 1]).all(), "cut-out texels show the red wall behind"


def test_opaque_fence_is_a_sheet():
    pose, t_fence, _, clear, _, _ = analytic()
    depth, _, _ = render(fence_scene(mode="opaque"), pose)
    np.testing.assert_allclose(depth[clear], t_fence[clear], rtol=1e-5)


def test_cutout_layers_are_bounded():
    """A ray passes MAX_CUTOUT_LAYERS cut-out surfaces; the next one is drawn whatever its alpha."""
    pose, t_fence, t_wall, clear, drawn, _ = analytic()
    cut = clear & ~drawn
    sheets = MAX_CUTOUT_LAYERS - 1  # the fence's cut texel + these: the limit, the wall is still reached
    depth, _, _ = render(fence_scene(clear_sheets=sheets), pose)
    np.testing.assert_allclose(depth[cut], t_wall[cut], rtol=1e-5)
    depth, inst, _ = render(fence_scene(clear_sheets=sheets + 1), pose)
    last = FENCE_X + 0.5 + 0.05 * sheets
    np.testing.assert_allclose(depth[cut], t_fence[cut] * (last - EYE[0]) / (FENCE_X - EYE[0]), rtol=1e-5)


def test_ray_caster_keeps_cutouts_solid():
    """Walkable-floor search and collision checks cast with EmbreeCaster: a fence blocks them even where cut."""
    scene = fence_scene()
    pose, t_fence, _, clear, drawn, _ = analytic()
    dirs = perspective_directions(SIZE, SIZE, 90.0).reshape(-1, 3) @ pose[:3, :3].T.astype(np.float32)
    rays = np.flatnonzero(clear & ~drawn)
    caster = EmbreeCaster(scene.vertices, scene.faces, threads=1)
    hits = caster.cast(np.tile(EYE.astype(np.float32), (len(rays), 1)), np.ascontiguousarray(dirs[rays]))
    caster.close()
    np.testing.assert_allclose(hits.t, t_fence[rays], rtol=1e-5)


def test_shadows_pass_through_cutouts():
    """A checkerboard roof over a floor: with sun shadows, floor under cut-out cells is lit, under drawn cells not."""
    cells, roof_z = 8, 2.0
    alpha = np.where(np.indices((cells, cells)).sum(0) % 2 == 0, 255, 0).astype(np.uint8)
    floor_verts = [(-20, -20, 0), (20, -20, 0), (20, 20, 0), (-20, 20, 0)]
    roof_verts = [(-10, 10, roof_z), (10, 10, roof_z), (10, -10, roof_z), (-10, -10, roof_z)]
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    scene = Scene(vertices=floor_verts + roof_verts, faces=np.concatenate([faces, faces + 4]),
                  face_material=[0, 0, 1, 1], face_object=[0, 0, 1, 1],
                  materials=[Material("floor", (0.8, 0.8, 0.8)),
                             Material("roof", (0.5, 0.5, 0.5), alpha_mode="mask", alpha=0)],
                  objects=[SceneObject("floor", "structure"), SceneObject("roof", "structure")],
                  alphas=[alpha], uvs=np.concatenate([uv[faces], uv[faces]]), name="roof")
    settings = RenderSettings(auto_gain=False, shadows=True)
    eye = np.array([0.0, 0.0, 1.0])
    pose = look_at(eye, (2.0, 1.0, 0.0))
    with EmbeddedRenderer(scene, settings) as r:
        frames = r.render_perspective(pose, SIZE, SIZE, 90.0)
    sun = settings.sun_direction().astype(np.float64)
    dirs = perspective_directions(SIZE, SIZE, 90.0).reshape(-1, 3).astype(np.float64) @ pose[:3, :3].T
    floor = (frames.instance[0].reshape(-1) == 0) & (dirs[:, 2] < -0.05)
    ground = eye + dirs * (-eye[2] / dirs[:, 2])[:, None]
    at_roof = ground + sun * (roof_z / sun[2])
    s = (at_roof[:, 0] + 10) / 20 * cells  # UV s grows with x, t with -y (the roof's corner order)
    t = (10 - at_roof[:, 1]) / 20 * cells
    under = (s > 0) & (s < cells) & (t > 0) & (t < cells)
    sharp = floor & under & (np.abs(s - np.rint(s)) > 0.2) & (np.abs(t - np.rint(t)) > 0.2)
    shaded = ((np.floor(s) + np.floor(t)) % 2 == 0)
    grey = frames.rgb[0].reshape(-1, 3).mean(1)
    lit, dark = grey[sharp & ~shaded], grey[sharp & shaded]
    assert len(lit) > 200 and len(dark) > 200
    assert lit.min() > dark.max() + 20, "sunlight reaches the floor through the cut-out cells only"


def test_masked_material_needs_its_alpha_plane():
    with pytest.raises(SceneError, match="masked but its alpha plane 0"):
        quad(0, (0, 1), (0, 1), "q", Material("m", alpha_mode="mask", alpha=0))
    with pytest.raises(SceneError, match="alpha_mode 'blend'"):
        quad(0, (0, 1), (0, 1), "q", Material("m", alpha_mode="blend"))


def test_content_hash_sees_the_mask_and_merge_reindexes_planes():
    opaque, masked = fence_scene(mode="opaque"), fence_scene()
    assert opaque.content_hash() != masked.content_hash()
    flipped = fence_scene()
    flipped.alphas[0] = 255 - flipped.alphas[0]
    assert flipped.content_hash() != masked.content_hash()
    both = merge_scenes([masked, fence_scene(clear_sheets=1)], "both")
    assert [m.alpha for m in both.materials] == [-1, 0, -1, 1, 2]
    assert len(both.alphas) == 3 and (both.alphas[2] == 0).all()
