"""A parsed level as a Scene: triangles, materials, light maps, objects and spawn points."""

from __future__ import annotations

import math

import numpy as np

from dataset.core.conventions import quake_to_world
from dataset.core.scene import Scene, SceneError, SceneObject
from dataset.sources.quake3.archives import _Archives
from dataset.sources.quake3.bsp import (
    FACE_MESH,
    FACE_PATCH,
    _Bsp,
    _c_string,
    _check_ranges,
    _patch_triangles,
    _soup_triangles,
    _visible_faces,
)
from dataset.sources.quake3.lighting import color_shift
from dataset.sources.quake3.shaders import _shader_table
from dataset.sources.quake3.textures import _load_materials

STEP_SIZE = 18.0
"""Quake units a player steps up without jumping (stairs in Quake 3 levels are built for it)."""
PLAYER_MINS_Z = 24.0
"""Quake units from a spawn point's origin down to the player's feet (bounding box mins z)."""
LICENCE = "GPL-2+ (OpenArena)"
SPAWN_CLASSES = frozenset({
    "info_player_deathmatch", "info_player_start", "team_ctf_redspawn", "team_ctf_bluespawn",
    "team_ctf_redplayer", "team_ctf_blueplayer",
})


def _build_scene(bsp: _Bsp, archives: _Archives, level: int, where: str, provenance: dict) -> Scene:
    """Triangles, materials, light maps, objects and spawn points of a parsed level."""
    shaders = _shader_table(archives.stamps)
    visible = _visible_faces(bsp, shaders, where)
    _check_ranges(bsp, bsp.faces[visible], where)
    types = bsp.faces["type"]
    soup_ids = np.flatnonzero(visible & (types != FACE_PATCH))
    patch_ids = np.flatnonzero(visible & (types == FACE_PATCH))
    v = bsp.vertices
    # Per-vertex attributes: position (3), texcoord (2), lmcoord (2), shifted colour / 255 (3).
    with np.errstate(invalid="ignore"):  # signalling NaNs in the unused light-map coordinates of unlit faces
        attrs = np.concatenate([v["position"], v["texcoord"], v["lmcoord"],
                                color_shift(v["color"][:, :3]) / np.float32(255)], axis=1, dtype=np.float64)
    soup_tris, soup_face = _soup_triangles(bsp, soup_ids, where)
    patch_attrs, patch_tris, patch_face = _patch_triangles(bsp, patch_ids, attrs, level)
    attrs = np.concatenate([attrs, patch_attrs])
    tris = np.concatenate([soup_tris, patch_tris + len(v)])
    tri_face = np.concatenate([soup_face, patch_face])
    if not np.isfinite(attrs[np.unique(tris), :3]).all():
        raise SceneError(f"{where}: corrupt BSP: non-finite vertex positions")
    corner = np.nan_to_num(attrs[tris], nan=0.0, posinf=0.0, neginf=0.0)  # (T, 3, K); unlit faces hold junk
    pos = corner[:, :, :3]
    area2 = np.linalg.norm(np.cross(pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]), axis=1)
    keep = area2 > 1e-6
    tris, tri_face, corner = tris[keep], tri_face[keep], corner[keep]
    if len(tris) == 0:
        raise SceneError(f"{where}: the level has no visible faces (all sky, tool or invisible surfaces)")
    used, inverse = np.unique(tris, return_inverse=True)

    shader_ids, face_material = np.unique(bsp.faces["texture"][tri_face], return_inverse=True)
    shader_names = [_c_string(bsp.textures["name"][i]) for i in shader_ids]
    materials, textures, alphas, stats = _load_materials(archives, shaders, shader_names)

    lm_index = bsp.faces["lm_index"][tri_face]
    lit = (lm_index >= 0) & (lm_index < len(bsp.lightmaps))
    face_lightmap = np.where(lit, lm_index + len(textures), -1)
    textures += [np.ascontiguousarray(m) for m in color_shift(bsp.lightmaps)]
    colors = np.where(lit[:, None, None], np.float32(1), corner[:, :, 7:10])

    face_object, objects = _group_objects(bsp, tri_face)
    textured = np.array([m.texture >= 0 for m in materials])[face_material]
    stats["faces_textured"] = round(float(textured.mean()), 4)
    return Scene(
        vertices=quake_to_world(attrs[used, :3]),
        faces=inverse.reshape(-1, 3),
        face_material=face_material.reshape(-1),
        materials=materials,
        face_object=face_object,
        objects=objects,
        textures=textures,
        alphas=alphas,
        uvs=corner[:, :, 3:5],
        colors=colors,
        lightmap_uvs=np.where(lit[:, None, None], corner[:, :, 5:7], 0.0),
        face_lightmap=face_lightmap,
        baked_lighting=True,
        spawn_points=_spawn_points(bsp.entities),
        source_units="inch",
        provenance={**provenance, **stats, "licence": LICENCE},
    )


def _group_objects(bsp: _Bsp, tri_face: np.ndarray) -> tuple[np.ndarray, list[SceneObject]]:
    """Object index per triangle: world polygons, each patch, each mesh, each brush model (door, platform...)."""
    face_model = np.zeros(len(bsp.faces), np.int64)
    for k, model in enumerate(bsp.models[1:], start=1):
        face_model[max(model["face"], 0):max(model["face"] + model["n_faces"], 0)] = k
    model_class = {}
    for ent in bsp.entities:
        model = ent.get("model", "")
        if model.startswith("*") and model[1:].isdigit():
            model_class[int(model[1:])] = ent.get("classname", "model")
    face_ids, tri_object = np.unique(tri_face, return_inverse=True)
    objects: list[SceneObject] = []
    index: dict[str, int] = {}
    face_object = np.empty(len(face_ids), np.int32)
    for j, f in enumerate(face_ids.tolist()):
        model, ftype = int(face_model[f]), int(bsp.faces["type"][f])
        if model > 0:
            name, kind = f"{model_class.get(model, 'model')}_{model}", "prop"
        elif ftype == FACE_PATCH:
            name, kind = f"patch_{f}", "structure"
        elif ftype == FACE_MESH:
            name, kind = f"mesh_{f}", "prop"
        else:
            name, kind = "world", "structure"
        if name not in index:
            index[name] = len(objects)
            objects.append(SceneObject(name, kind))
        face_object[j] = index[name]
    return face_object[tri_object.reshape(-1)], objects


def _spawn_points(entities: list[dict[str, str]]) -> np.ndarray:
    """(S, 4) feet position in metres and heading (radians, CCW from +X) of the player spawn entities."""
    rows = []
    for ent in entities:
        if ent.get("classname", "").lower() not in SPAWN_CLASSES:
            continue
        try:
            x, y, z = (float(c) for c in ent["origin"].split())
            if "angle" in ent:
                yaw = float(ent["angle"])
            else:
                yaw = float(ent.get("angles", "0 0 0").split()[1])
        except (KeyError, ValueError, IndexError):
            continue
        rows.append((*quake_to_world((x, y, z - PLAYER_MINS_Z)), math.radians(yaw)))
    return np.array(rows, np.float64).reshape(-1, 4)
