"""A small mesh builder for procedural scenes: quads, boxes, cylinders and spheres with world-scaled UVs."""

from __future__ import annotations

import math

import numpy as np

from dataset.core.scene import Material, Scene, SceneObject
from dataset.sources.procedural.textures import texture


class MeshBuilder:
    """Accumulates textured primitives, each tagged with a material and an object, into one Scene.

    UVs are planar and world-scaled: one texture repeat covers ``repeat`` metres of the material, so
    textures keep their physical size whatever the size of the face. Image rows run downward along a
    face's "up" edge (v down, the Scene convention).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._verts: list[np.ndarray] = []
        self._faces: list[np.ndarray] = []
        self._uvs: list[np.ndarray] = []
        self._mat: list[np.ndarray] = []
        self._obj: list[np.ndarray] = []
        self._nverts = 0
        self.materials: list[Material] = []
        self._repeat: list[float] = []
        self._mat_index: dict[tuple, int] = {}
        self.textures: list[np.ndarray] = []
        self._tex_index: dict[str, int] = {}
        self.objects: list[SceneObject] = []

    # ------------------------------------------------------------------ registries

    def material(self, tex: str | None, repeat: float = 1.0, color: tuple[float, float, float] = (1, 1, 1)) -> int:
        """Index of a material showing texture ``tex`` (None = plain colour), one repeat per ``repeat`` m."""
        key = (tex, repeat, color)
        if key not in self._mat_index:
            t = -1
            if tex is not None:
                if tex not in self._tex_index:
                    self._tex_index[tex] = len(self.textures)
                    self.textures.append(texture(tex, self.seed))
                t = self._tex_index[tex]
            self._mat_index[key] = len(self.materials)
            self.materials.append(Material(f"{tex or 'colour'}_{len(self.materials)}", color, t))
            self._repeat.append(repeat)
        return self._mat_index[key]

    def object(self, name: str, kind: str) -> int:
        """Index of a new object (names are made unique with a counter)."""
        self.objects.append(SceneObject(f"{name}_{len(self.objects)}", kind))
        return len(self.objects) - 1

    # ------------------------------------------------------------------ primitives

    def _add(self, verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, mat: int, obj: int) -> None:
        self._verts.append(np.asarray(verts, np.float64))
        self._faces.append(np.asarray(faces, np.int64) + self._nverts)
        self._nverts += len(verts)
        self._uvs.append(np.asarray(uvs, np.float64))
        self._mat.append(np.full(len(faces), mat, np.int32))
        self._obj.append(np.full(len(faces), obj, np.int32))

    def quad(self, p0, p1, p2, p3, mat: int, obj: int) -> None:
        """Quad p0 p1 p2 p3 counter-clockwise seen from its front; p0 -> p1 is u, p0 -> p3 is "up"."""
        p = np.array([p0, p1, p2, p3], np.float64)
        e1, e2 = p[1] - p[0], p[3] - p[0]
        l1, l2 = np.linalg.norm(e1), np.linalg.norm(e2)
        if l1 < 1e-9 or l2 < 1e-9:
            return
        rep = self._repeat[mat]
        d = p - p[0]
        uv = np.column_stack([d @ (e1 / l1), -(d @ (e2 / l2))]) / rep
        corner_uv = uv[[[0, 1, 2], [0, 2, 3]]]
        self._add(p, np.array([[0, 1, 2], [0, 2, 3]]), corner_uv.reshape(-1, 2), mat, obj)

    def triangle(self, p0, p1, p2, mat: int, obj: int) -> None:
        """Triangle counter-clockwise seen from its front; UVs planar in its own plane (p0 -> p1 is u)."""
        p = np.array([p0, p1, p2], np.float64)
        e1 = p[1] - p[0]
        n = np.cross(e1, p[2] - p[0])
        if np.linalg.norm(e1) < 1e-9 or np.linalg.norm(n) < 1e-12:
            return
        u = e1 / np.linalg.norm(e1)
        v = np.cross(n / np.linalg.norm(n), u)
        d = p - p[0]
        self._add(p, np.array([[0, 1, 2]]), np.column_stack([d @ u, -(d @ v)]) / self._repeat[mat], mat, obj)

    def box(self, lo, hi, mat: int, obj: int, skip: tuple[str, ...] = (), inward: bool = False,
            top_mat: int | None = None) -> None:
        """Axis-aligned box; ``skip`` names faces to leave out (-x +x -y +y -z +z); ``inward`` faces the inside."""
        x0, y0, z0 = lo
        x1, y1, z1 = hi
        faces = {
            "-x": ((x0, y1, z0), (x0, y0, z0), (x0, y0, z1), (x0, y1, z1)),
            "+x": ((x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)),
            "-y": ((x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)),
            "+y": ((x1, y1, z0), (x0, y1, z0), (x0, y1, z1), (x1, y1, z1)),
            "-z": ((x0, y1, z0), (x1, y1, z0), (x1, y0, z0), (x0, y0, z0)),
            "+z": ((x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)),
        }
        for name, (a, b, c, d) in faces.items():
            if name in skip:
                continue
            m = top_mat if (name == "+z" and top_mat is not None) else mat
            if inward:
                self.quad(b, a, d, c, m, obj)
            else:
                self.quad(a, b, c, d, m, obj)

    def cylinder(self, cx: float, cy: float, z0: float, z1: float, r: float, mat: int, obj: int,
                 segments: int = 10, cap: bool = True) -> None:
        """Vertical cylinder (side UVs wrap around once per circumference in metres)."""
        a = np.linspace(0, 2 * math.pi, segments + 1)
        ring = np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)])
        for i in range(segments):
            (xa, ya), (xb, yb) = ring[i], ring[i + 1]
            self.quad((xa, ya, z0), (xb, yb, z0), (xb, yb, z1), (xa, ya, z1), mat, obj)
        if cap:
            top = np.column_stack([ring[:-1], np.full(segments, z1)])
            verts = np.vstack([[cx, cy, z1], top])
            faces = np.array([[0, 1 + i, 1 + (i + 1) % segments] for i in range(segments)])
            uv = verts[:, :2] / self._repeat[mat]
            self._add(verts, faces, uv[faces].reshape(-1, 2), mat, obj)

    def sphere(self, centre, radii, mat: int, obj: int, subdivisions: int = 1) -> None:
        """Ellipsoid from an icosphere (tree crowns, bushes, lamp globes)."""
        import trimesh

        ico = trimesh.creation.icosphere(subdivisions=subdivisions)
        v = ico.vertices * np.asarray(radii) + np.asarray(centre)
        uv = v[:, :2] / self._repeat[mat]
        self._add(v, ico.faces, uv[ico.faces].reshape(-1, 2), mat, obj)

    # ------------------------------------------------------------------ output

    def build(self, name: str, spawn_points: np.ndarray, provenance: dict) -> Scene:
        """The Scene of everything added."""
        faces = np.concatenate(self._faces)
        return Scene(vertices=np.concatenate(self._verts), faces=faces, face_material=np.concatenate(self._mat),
                     materials=self.materials, face_object=np.concatenate(self._obj), objects=self.objects,
                     textures=list(self.textures), uvs=np.concatenate(self._uvs).reshape(-1, 3, 2),
                     spawn_points=spawn_points, name=name, provenance=provenance)
