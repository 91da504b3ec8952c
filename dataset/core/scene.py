"""The scene model every source produces and every renderer and sampler consumes.

A scene is a triangle soup in the world frame of DESIGN.md (metres, right-handed,
Z up) with per-face materials, optional textures (and the alpha planes of cut-out
materials), per-corner UVs and colours, optional baked light maps, named objects
(each a set of faces, so each has a bounding box) and optional spawn points.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from dataset.core.conventions import EYE_HEIGHT, pose_from_heading


class SceneError(ValueError):
    """A scene could not be loaded or is malformed; the message names the scene and the fix."""


ALPHA_MODES = ("opaque", "mask")
"""``Material.alpha_mode`` values."""


@dataclass
class Material:
    """Surface appearance of a set of faces.

    Alpha-tested (cut-out) surfaces such as grates, fences and foliage cards have ``alpha_mode`` ``"mask"``: the
    renderer samples the material's alpha plane at the hit's UV (bilinear, repeat wrapping, like the colour) and
    where the texel fails the cutoff test the ray goes on to the next surface, for colour, depth and object ids
    alike. Only what is seen is cut: the scene's geometry stays whole, so the ray caster (``EmbreeCaster.cast``),
    and with it the walkable-floor search and collision checks, treat masked surfaces as solid sheets (a fence
    still blocks walking, a floor grate can be walked on).
    """

    name: str
    """Material name from the source (shader name, glTF material, ...)."""
    base_color: tuple[float, float, float] = (0.8, 0.8, 0.8)
    """sRGB colour in [0, 1]; multiplies the texture when there is one."""
    texture: int = -1
    """Index into ``Scene.textures`` or -1 for an untextured material."""
    alpha_mode: str = "opaque"
    """``"opaque"`` (alpha ignored) or ``"mask"`` (alpha-tested against ``alpha_cutoff``)."""
    alpha_cutoff: float = 0.5
    """A masked texel is drawn where its alpha (0-1) is >= this value (glTF ``alphaCutoff``)."""
    alpha_invert: bool = False
    """Draw where alpha < ``alpha_cutoff`` instead (Quake 3 ``alphaFunc LT128``)."""
    alpha: int = -1
    """Index into ``Scene.alphas`` of a masked material's alpha plane (-1 for opaque materials); sampled with the
    material's UVs like its texture (usually the texture's own alpha channel, at the texture's size)."""


@dataclass
class SceneObject:
    """A named group of faces: what the sampler treats as one obstacle."""

    name: str
    """Unique, human-readable object name."""
    kind: str = "prop"
    """``"structure"`` (floors, walls, terrain, whole buildings), ``"prop"`` (furniture, poles, ...) or
    ``"scenery"`` (distant terrain and building rows that only fill views to the horizon: rendered, but never
    walked on, collided with or searched for floor; the walkable grid spans the other objects)."""


@dataclass
class Scene:
    """Triangles with materials, textures, objects and spawn points, in world metres."""

    vertices: np.ndarray
    """(V, 3) float32 world positions in metres."""
    faces: np.ndarray
    """(F, 3) int32 vertex indices, counter-clockwise seen from the front."""
    face_material: np.ndarray
    """(F,) int32 index into ``materials``."""
    materials: list[Material]
    """Materials referenced by ``face_material``."""
    face_object: np.ndarray
    """(F,) int32 index into ``objects``."""
    objects: list[SceneObject]
    """Named objects referenced by ``face_object``."""
    textures: list[np.ndarray] = field(default_factory=list)
    """RGB uint8 images (h, w, 3), sRGB; referenced by materials and light maps."""
    alphas: list[np.ndarray] = field(default_factory=list)
    """Alpha planes (h, w) uint8 (255 = opaque) of masked materials (``Material.alpha``)."""
    uvs: np.ndarray | None = None
    """(F, 3, 2) float32 texture coordinates per face corner (repeat wrapping, v down)."""
    colors: np.ndarray | None = None
    """(F, 3, 3) float32 per-corner colour multiplier (vertex colours or baked vertex light)."""
    lightmap_uvs: np.ndarray | None = None
    """(F, 3, 2) float32 light-map coordinates per face corner (clamped)."""
    face_lightmap: np.ndarray | None = None
    """(F,) int32 texture index of each face's light map, -1 for none."""
    baked_lighting: bool = False
    """True when colours/light maps already hold the lighting (no sun/sky shading on top)."""
    spawn_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    """(S, 4) float64: x, y, z of a standing point (feet) and heading in radians."""
    name: str = "scene"
    """The scene string the scene was loaded from."""
    source_units: str = "m"
    """Units of the source data before conversion to metres (``m``, ``cm``, ``inch``)."""
    provenance: dict = field(default_factory=dict)
    """Where the scene came from: loader, file path, archive, generator, seed, licence."""

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)
        self.face_material = np.ascontiguousarray(self.face_material, dtype=np.int32).reshape(-1)
        self.face_object = np.ascontiguousarray(self.face_object, dtype=np.int32).reshape(-1)
        self.spawn_points = np.asarray(self.spawn_points, dtype=np.float64).reshape(-1, 4)
        for attr in ("uvs", "lightmap_uvs"):
            value = getattr(self, attr)
            if value is not None:
                setattr(self, attr, np.ascontiguousarray(value, dtype=np.float32).reshape(-1, 3, 2))
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, dtype=np.float32).reshape(-1, 3, 3)
        if self.face_lightmap is not None:
            self.face_lightmap = np.ascontiguousarray(self.face_lightmap, dtype=np.int32).reshape(-1)
        self.validate()

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def validate(self) -> None:
        """Raise SceneError when arrays disagree in size or indices point nowhere."""
        n = self.num_faces
        where = f"scene {self.name!r}"
        if n == 0:
            raise SceneError(f"{where} has no triangles: check the file or generator produces geometry")
        if not np.isfinite(self.vertices).all():
            raise SceneError(f"{where} has non-finite vertex positions")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise SceneError(f"{where} has face indices outside its {len(self.vertices)} vertices")
        checks = [
            ("face_material", self.face_material, (n,)),
            ("face_object", self.face_object, (n,)),
            ("uvs", self.uvs, (n, 3, 2)),
            ("colors", self.colors, (n, 3, 3)),
            ("lightmap_uvs", self.lightmap_uvs, (n, 3, 2)),
            ("face_lightmap", self.face_lightmap, (n,)),
        ]
        for label, arr, shape in checks:
            if arr is not None and arr.shape != shape:
                raise SceneError(f"{where}: {label} has shape {arr.shape}, expected {shape}")
        if self.face_material.min() < 0 or self.face_material.max() >= len(self.materials):
            raise SceneError(f"{where}: face_material indexes outside its {len(self.materials)} materials")
        if self.face_object.min() < 0 or self.face_object.max() >= len(self.objects):
            raise SceneError(f"{where}: face_object indexes outside its {len(self.objects)} objects")
        for m in self.materials:
            if m.texture >= len(self.textures):
                raise SceneError(f"{where}: material {m.name!r} references missing texture {m.texture}")
            self._validate_alpha(m, where)
        if self.face_lightmap is not None and self.face_lightmap.max() >= len(self.textures):
            raise SceneError(f"{where}: face_lightmap references a missing texture")
        for i, t in enumerate(self.textures):
            if t.dtype != np.uint8 or t.ndim != 3 or t.shape[2] != 3:
                raise SceneError(f"{where}: texture {i} must be uint8 (h, w, 3), got {t.dtype} {t.shape}")
        for i, a in enumerate(self.alphas):
            if a.dtype != np.uint8 or a.ndim != 2 or a.size == 0:
                raise SceneError(f"{where}: alpha plane {i} must be uint8 (h, w), got {a.dtype} {a.shape}")

    def _validate_alpha(self, m: Material, where: str) -> None:
        """Raise SceneError when a material's alpha fields disagree (mask needs a plane, opaque has none)."""
        what = f"{where}: material {m.name!r}"
        if m.alpha_mode not in ALPHA_MODES:
            raise SceneError(f"{what} has alpha_mode {m.alpha_mode!r}: use one of {', '.join(ALPHA_MODES)}")
        if m.alpha_mode == "opaque" and m.alpha != -1:
            raise SceneError(f"{what} is opaque but references alpha plane {m.alpha}: set alpha_mode 'mask' or "
                             f"alpha -1")
        if m.alpha_mode == "mask" and not 0 <= m.alpha < len(self.alphas):
            raise SceneError(f"{what} is masked but its alpha plane {m.alpha} is not among the scene's "
                             f"{len(self.alphas)}: add the plane to Scene.alphas")
        if not 0.0 <= m.alpha_cutoff <= 1.0:
            raise SceneError(f"{what} has alpha_cutoff {m.alpha_cutoff}: it must lie in [0, 1]")

    def bounds(self) -> np.ndarray:
        """(2, 3) min and max corner of all vertices that faces use."""
        used = self.vertices[self.faces.reshape(-1)]
        return np.stack([used.min(0), used.max(0)]).astype(np.float64)

    def object_bounds(self) -> np.ndarray:
        """(N, 2, 3) axis-aligned box (min, max) of each object; NaN for objects without faces."""
        n = len(self.objects)
        corners = self.vertices[self.faces].astype(np.float64)  # (F, 3, 3)
        fmin, fmax = corners.min(1), corners.max(1)
        lo = np.full((n, 3), np.inf)
        hi = np.full((n, 3), -np.inf)
        np.minimum.at(lo, self.face_object, fmin)
        np.maximum.at(hi, self.face_object, fmax)
        empty = ~np.isfinite(lo).all(1)
        lo[empty] = np.nan
        hi[empty] = np.nan
        return np.stack([lo, hi], axis=1)

    def face_normals(self) -> np.ndarray:
        """(F, 3) float32 unit geometric normals (zero for degenerate faces)."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return (n / np.where(length > 0, length, 1.0)).astype(np.float32)

    def content_hash(self) -> str:
        """sha256 hex of the geometry, materials and textures: identifies the scene's content."""
        h = hashlib.sha256()
        for arr in (self.vertices, self.faces, self.face_material, self.face_object, self.uvs, self.colors,
                    self.lightmap_uvs, self.face_lightmap, self.spawn_points):
            h.update(b"-" if arr is None else np.ascontiguousarray(arr).tobytes())
        for m in self.materials:
            h.update(repr((m.name, tuple(float(c) for c in m.base_color), m.texture)).encode())
            if m.alpha_mode != "opaque":  # opaque scenes keep the hashes (and ids) they had before masks existed
                h.update(repr((m.alpha_mode, float(m.alpha_cutoff), m.alpha_invert, m.alpha)).encode())
        for o in self.objects:
            h.update(repr((o.name, o.kind)).encode())
        for t in self.textures:
            h.update(repr(t.shape).encode())
            h.update(t.tobytes())
        for a in self.alphas:
            h.update(repr(("alpha", a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(self.baked_lighting).encode())
        return h.hexdigest()

    def summary(self) -> str:
        """One line for logs and CLIs."""
        lo, hi = self.bounds()
        size = " x ".join(f"{s:.1f}" for s in hi - lo)
        return (f"{self.name}: {self.num_faces} triangles, {len(self.objects)} objects, "
                f"{len(self.materials)} materials, {len(self.textures)} textures, "
                f"{len(self.spawn_points)} spawn points, extent {size} m")


def merge_scenes(parts: list[Scene], name: str) -> Scene:
    """Concatenate scenes into one (materials, textures and objects re-indexed)."""
    if not parts:
        raise SceneError(f"scene {name!r}: nothing to merge")
    verts, faces, fmat, fobj, uvs, cols, lmuv, flm = [], [], [], [], [], [], [], []
    materials, objects, textures, alphas = [], [], [], []
    spawns = []
    any_uv = any(p.uvs is not None for p in parts)
    any_col = any(p.colors is not None for p in parts)
    any_lm = any(p.face_lightmap is not None for p in parts)
    v_off = 0
    for p in parts:
        t_off, m_off, o_off, a_off = len(textures), len(materials), len(objects), len(alphas)
        verts.append(p.vertices)
        faces.append(p.faces + v_off)
        v_off += len(p.vertices)
        fmat.append(p.face_material + m_off)
        fobj.append(p.face_object + o_off)
        n = p.num_faces
        uvs.append(p.uvs if p.uvs is not None else np.zeros((n, 3, 2), np.float32))
        cols.append(p.colors if p.colors is not None else np.ones((n, 3, 3), np.float32))
        lmuv.append(p.lightmap_uvs if p.lightmap_uvs is not None else np.zeros((n, 3, 2), np.float32))
        flm.append(np.where(p.face_lightmap >= 0, p.face_lightmap + t_off, -1) if p.face_lightmap is not None
                   else np.full(n, -1, np.int32))
        textures.extend(p.textures)
        alphas.extend(p.alphas)
        materials.extend(replace(m, texture=m.texture + t_off if m.texture >= 0 else -1,
                                 alpha=m.alpha + a_off if m.alpha >= 0 else -1)
                         for m in p.materials)
        objects.extend(p.objects)
        spawns.append(p.spawn_points)
    return Scene(
        vertices=np.concatenate(verts), faces=np.concatenate(faces),
        face_material=np.concatenate(fmat), materials=materials,
        face_object=np.concatenate(fobj), objects=objects, textures=textures, alphas=alphas,
        uvs=np.concatenate(uvs) if any_uv else None,
        colors=np.concatenate(cols) if any_col else None,
        lightmap_uvs=np.concatenate(lmuv) if any_lm else None,
        face_lightmap=np.concatenate(flm) if any_lm else None,
        baked_lighting=all(p.baked_lighting for p in parts),
        spawn_points=np.concatenate(spawns), name=name,
        source_units=parts[0].source_units, provenance=dict(parts[0].provenance),
    )


def default_poses(scene: Scene, count: int = 1) -> np.ndarray:
    """Sensible cameras (N, 4, 4): the first ``count`` spawn points at eye height, else one camera at the centre
    of the scene's bounds, eye height above their bottom (or at their centre when the scene is lower)."""
    if len(scene.spawn_points):
        return np.stack([pose_from_heading((x, y, z + EYE_HEIGHT), heading)
                         for x, y, z, heading in scene.spawn_points[:count]])
    lo, hi = scene.bounds()
    centre = (lo + hi) / 2
    return pose_from_heading((centre[0], centre[1], min(lo[2] + EYE_HEIGHT, centre[2])), 0.0)[None]


def default_pose(scene: Scene) -> np.ndarray:
    """The one default camera (4, 4) of a scene: its first spawn point, else the centre (``default_poses``)."""
    return default_poses(scene, 1)[0]
