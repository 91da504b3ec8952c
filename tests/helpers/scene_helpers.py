"""Small scenes built in code, shared by tests (import as `from scene_helpers import ...`)."""

from __future__ import annotations

import numpy as np

from dataset.core.scene import Material, Scene, SceneObject


def box_faces(lo, hi, inward: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (8, 3) and 12 triangles of an axis-aligned box, CCW seen from outside (or inside)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    f = []
    for a, b, c, d in quads:
        f += [(a, b, c), (a, c, d)]
    f = np.array(f)
    if inward:
        f = f[:, ::-1]
    return v, f


def make_scene(boxes: list[tuple], name: str = "test", textures: list[np.ndarray] | None = None,
               baked: bool = False) -> Scene:
    """Scene of boxes given as (lo, hi, inward, rgb, object_name[, kind]); kind defaults to "structure" for
    inward boxes (rooms) and "prop" for the others."""
    verts, faces, fmat, fobj, mats, objs = [], [], [], [], [], []
    for i, spec in enumerate(boxes):
        lo, hi, inward, rgb, obj = spec[:5]
        kind = spec[5] if len(spec) > 5 else ("structure" if inward else "prop")
        v, f = box_faces(lo, hi, inward)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        mats.append(Material(f"m{i}", tuple(rgb), -1))
        objs.append(SceneObject(obj, kind))
        fmat.append(np.full(len(f), i))
        fobj.append(np.full(len(f), i))
    return Scene(vertices=np.concatenate(verts), faces=np.concatenate(faces), face_material=np.concatenate(fmat),
                 materials=mats, face_object=np.concatenate(fobj), objects=objs, textures=textures or [],
                 baked_lighting=baked, name=name)
