"""Mesh files (``.gltf``, ``.glb``, ``.obj``, ``.ply``) as scenes, read with trimesh.

A source string is a file path, optionally followed by ``?up=y|z|x&scale=S``: ``up`` names the file's up
axis (default ``y``, the glTF/OBJ/PLY convention of DESIGN.md) and ``scale`` the size of one file unit in
metres (default 1; e.g. 0.01 for centimetre files). Positions are scaled, then rotated to the world frame
with ``conventions.UP_AXIS_TO_WORLD``.

Every node of the file's scene graph that holds a triangle mesh becomes one ``SceneObject`` named after the
node, with the node's transform applied (mirroring transforms flip the winding back to counter-clockwise).
UV seams are kept (no vertex merging). Colour spaces: glTF's ``baseColorFactor`` and ``COLOR_0`` are linear
by specification and are converted to sRGB; OBJ ``Kd`` and PLY/OBJ vertex colours are taken as sRGB (the
three.js convention). Textures become RGB uint8 (alpha composited over the texture's mean visible colour,
so cut-out cards keep a plausible colour), at most ``MAX_TEXTURE_SIZE`` pixels on their longer side; an
image used by several materials (the same object or the same pixels) is stored once.

See-through materials become masked materials (``Material.alpha_mode`` ``"mask"``) whose alpha plane is the
texture's alpha times the ``baseColorFactor`` alpha (a constant plane for an untextured material):

- glTF ``alphaMode: MASK`` keeps its ``alphaCutoff`` (default 0.5);
- glTF ``alphaMode: BLEND`` is alpha-tested at 0.5 as well: the renderer has no order-independent blending,
  and a cut at half keeps what is mostly opaque (leaves, lettering) and drops what is mostly clear (thin glass
  disappears, which is closer to the truth for depth than an opaque sheet);
- glTF ``OPAQUE`` ignores alpha, as the specification says;
- OBJ/MTL ``map_d`` (its alpha channel, else its grey level; the line's last word names the file, relative to
  the OBJ) is alpha-tested at 0.5; the scalar ``d``/``Tr`` and the alpha of ``map_Kd`` are ignored (exporters
  disagree on them), as are vertex-colour alphas.

A masked material none of whose texels is cut stays opaque (no cost in the renderer).

An object is a ``"structure"`` (floors, walls, buildings, terrain) when any of these holds, else a ``"prop"``:

- it is the only object of the file (a whole level exported as one mesh);
- its box's longest side exceeds ``STRUCTURE_MIN_SIDE`` (8 m);
- its box spans at least ``ROOM_MIN_SIDE`` (3 m) both ways horizontally and ``ROOM_MIN_HEIGHT`` (2 m)
  vertically: it encloses a room-sized space (a bed, a car or a wardrobe does not);
- it is a horizontal slab at the bottom of the scene: at least ``SLAB_MIN_SIDE`` (2 m) across, thinner
  than ``SLAB_MAX_THICKNESS_RATIO`` of that, and starting within ``SLAB_MAX_LIFT`` (0.5 m) of the
  scene's lowest point (floors, ground planes, rugs).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual.color import ColorVisuals, linear_to_srgb, to_float
from trimesh.visual.material import PBRMaterial, SimpleMaterial
from trimesh.visual.texture import TextureVisuals

from dataset.core.conventions import UP_AXIS_TO_WORLD
from dataset.core.scene import Material, Scene, SceneError, SceneObject

MESH_SUFFIXES = (".gltf", ".glb", ".obj", ".ply")
"""File suffixes this loader reads (lower case)."""
MAX_TEXTURE_SIZE = 2048
"""Textures larger than this on their longer side are downscaled (UVs are normalised, so nothing else changes)."""
STRUCTURE_MIN_SIDE = 8.0
ROOM_MIN_SIDE = 3.0
ROOM_MIN_HEIGHT = 2.0
SLAB_MIN_SIDE = 2.0
SLAB_MAX_THICKNESS_RATIO = 0.1
SLAB_MAX_LIFT = 0.5

_OTHER_SOURCES = ("procedural:indoor:SEED, procedural:outdoor:SEED, procedural:room:WxDxH, openarena:MAP, "
                  "PATH.pk3:MAP or PATH.bsp")
_NAMED_UNITS = {1.0: "m", 0.01: "cm", 0.001: "mm", 0.0254: "inch"}


def load_mesh_file(source: str) -> Scene:
    """Load ``PATH[?up=y|z|x&scale=S]`` as a world-frame scene (metres, Z up); raises SceneError."""
    path, up, scale = _parse_source(source)
    fmt = path.suffix.lower().lstrip(".")
    try:
        loaded = trimesh.load(str(path), force="scene", process=False)
    except ModuleNotFoundError as exc:  # e.g. charset_normalizer, which trimesh needs for non-UTF-8 OBJ/MTL
        raise SceneError(f"reading {path} needs the Python package {exc.name!r}: pip install {exc.name}") from exc
    except Exception as exc:  # trimesh raises many types for malformed files
        detail = " ".join(str(exc).split())
        raise SceneError(f"cannot parse {path} as {fmt}: {type(exc).__name__}: {detail}; check the file is "
                         f"complete and valid (a .gltf needs its .bin and image files beside it)") from exc

    to_world = UP_AXIS_TO_WORLD[up] * scale
    builder = _SceneBuilder(linear_colors=fmt in ("gltf", "glb"), folder=path.parent)
    for node in loaded.graph.nodes_geometry:
        transform, geometry_name = loaded.graph[node]
        geometry = loaded.geometry[geometry_name]
        if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces):
            builder.add(str(node), geometry, to_world @ transform[:3, :3], to_world @ transform[:3, 3])
    if not builder.faces:
        kinds = sorted({type(g).__name__ for g in loaded.geometry.values()}) or ["nothing"]
        raise SceneError(f"{path} has no triangles (it holds {', '.join(kinds)}): give a mesh with faces, "
                         f"not a point cloud or lines")
    return builder.build(source, path, fmt, up, scale)


def _parse_source(source: str) -> tuple[Path, str, float]:
    """Split ``PATH?up=..&scale=..`` into a checked existing file path, up axis and scale."""
    path_text, _, query = source.partition("?")
    path = Path(path_text).expanduser()
    if path.is_dir():
        raise SceneError(f"{path} is a directory: give a {', '.join(MESH_SUFFIXES)} file inside it")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise SceneError(f"{path_text!r} is not a supported scene: give a {', '.join(MESH_SUFFIXES)} file "
                         f"or one of {_OTHER_SOURCES}")
    up, scale = "y", 1.0
    seen: set[str] = set()
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key in seen or key not in ("up", "scale"):
            raise SceneError(f"{source!r}: query part {item!r} is unknown or repeated; "
                             f"use ?up=y|z|x&scale=S, each at most once")
        seen.add(key)
        if key == "up":
            if value not in UP_AXIS_TO_WORLD:
                raise SceneError(f"{source!r}: up axis {value!r} is not one of y, z, x (e.g. ?up=z)")
            up = value
        else:
            try:
                scale = float(value)
            except ValueError:
                scale = math.nan
            if not math.isfinite(scale) or scale <= 0:
                raise SceneError(f"{source!r}: scale {value!r} must be a positive number of metres per file "
                                 f"unit (e.g. ?scale=0.01 for centimetres)")
    if not path.is_file():
        raise SceneError(f"mesh file {path} does not exist: check the path")
    return path, up, scale


class _SceneBuilder:
    """Accumulates transformed geometry instances, sharing materials and textures between them."""

    def __init__(self, linear_colors: bool, folder: Path) -> None:
        self.linear_colors = linear_colors
        self.folder = folder
        self.vertices: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.face_material: list[np.ndarray] = []
        self.uvs: list[np.ndarray | None] = []
        self.colors: list[np.ndarray | None] = []
        self.objects: list[SceneObject] = []
        self.materials: list[Material] = []
        self.textures: list[np.ndarray] = []
        self.alphas: list[np.ndarray] = []
        self._material_index: dict[tuple, int] = {}
        self._texture_index: dict[int, tuple[int, np.ndarray | None]] = {}
        self._texture_by_content: dict[str, int] = {}
        self._alpha_by_content: dict[str, int] = {}
        self._num_vertices = 0

    def add(self, name: str, mesh: trimesh.Trimesh, linear: np.ndarray, offset: np.ndarray) -> None:
        """Add one instance of ``mesh`` with world position = linear @ p + offset."""
        faces = np.asarray(mesh.faces, np.int64)
        if np.linalg.det(linear) < 0:  # a mirroring node transform: keep faces counter-clockwise
            faces = faces[:, ::-1]
        visual = mesh.visual
        uv = getattr(visual, "uv", None)
        corner_uvs = None
        if uv is not None and len(uv) == len(mesh.vertices):
            corner_uvs = np.asarray(uv, np.float64)[faces]
            corner_uvs[..., 1] = 1.0 - corner_uvs[..., 1]  # trimesh: origin bottom-left; Scene: top-left, v down
        corner_colors = self._corner_colors(visual, faces, len(mesh.vertices))
        material = self._material(visual, textured=corner_uvs is not None, coloured=corner_colors is not None)

        self.vertices.append(np.asarray(mesh.vertices, np.float64) @ linear.T + offset)
        self.faces.append(faces + self._num_vertices)
        self._num_vertices += len(mesh.vertices)
        self.face_material.append(np.full(len(faces), material, np.int32))
        self.uvs.append(corner_uvs)
        self.colors.append(corner_colors)
        self.objects.append(SceneObject(name))

    def _corner_colors(self, visual, faces: np.ndarray, num_vertices: int) -> np.ndarray | None:
        """(F, 3, 3) sRGB per-corner colours from vertex or face colours, or None when the mesh has none."""
        rgb = None
        if isinstance(visual, TextureVisuals):
            attr = visual.vertex_attributes.get("color")
            if attr is not None and len(attr) == num_vertices:
                rgb = to_float(attr)[:, :3][faces]
        elif isinstance(visual, ColorVisuals) and visual.kind == "vertex":
            rgb = to_float(visual.vertex_colors)[:, :3][faces]
        elif isinstance(visual, ColorVisuals) and visual.kind == "face":
            rgb = np.repeat(to_float(visual.face_colors)[:, None, :3], 3, axis=1)
        if rgb is not None and self.linear_colors:
            rgb = linear_to_srgb(rgb)
        return rgb

    def _material(self, visual, textured: bool, coloured: bool) -> int:
        """Index of the Scene material for a mesh visual, creating it (and its texture) on first use."""
        source = getattr(visual, "material", None)
        key = (id(source), textured, coloured)
        if key in self._material_index:
            return self._material_index[key]
        name = getattr(source, "name", None) or f"material_{len(self.materials)}"
        image = mask_image = None
        factor_alpha, cutoff = 1.0, None  # cutoff None: opaque
        if isinstance(source, PBRMaterial):
            image = source.baseColorTexture
            factor = source.baseColorFactor
            base = linear_to_srgb(to_float(factor)[:3]) if factor is not None else np.ones(3)
            mode = (source.alphaMode or "OPAQUE").upper()
            if mode in ("MASK", "BLEND"):
                cutoff = source.alphaCutoff if mode == "MASK" and source.alphaCutoff is not None else 0.5
                factor_alpha = float(to_float(factor)[3]) if factor is not None and len(factor) > 3 else 1.0
                mask_image = image
        elif isinstance(source, SimpleMaterial):
            image = source.image
            if "kd" in source.kwargs:  # trimesh sets a 0.4 grey diffuse when the MTL gives no Kd
                base = to_float(source.diffuse)[:3]
            else:
                base = np.ones(3) if image is not None else np.array(Material.base_color)
            mask_image = self._map_d(source.kwargs.get("map_d")) if textured else None
            cutoff = 0.5 if mask_image is not None else None
        else:
            name = "vertex_colors" if coloured else "default"
            base = np.ones(3) if coloured else np.array(Material.base_color)
        texture, alpha = self._texture(image) if textured and image is not None else (-1, None)
        material = Material(name, tuple(round(float(c), 6) for c in base), texture)
        if cutoff is not None:
            if mask_image is not image:  # an OBJ map_d: its own image
                alpha = _image_arrays(mask_image)[1]
            plane = self._alpha_plane(alpha, factor_alpha, float(cutoff))
            if plane >= 0:
                material = replace(material, alpha_mode="mask", alpha_cutoff=float(cutoff), alpha=plane)
        self.materials.append(material)
        self._material_index[key] = len(self.materials) - 1
        return self._material_index[key]

    def _texture(self, image: Image.Image) -> tuple[int, np.ndarray | None]:
        """Index of the RGB uint8 texture made from a PIL image (one entry per distinct image content) and the
        image's alpha (h, w) uint8, None when it has none."""
        if id(image) not in self._texture_index:  # the same image object is converted once
            pixels, alpha = _image_arrays(image)
            digest = hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
            if digest not in self._texture_by_content:  # files often store one image several times
                self.textures.append(pixels)
                self._texture_by_content[digest] = len(self.textures) - 1
            self._texture_index[id(image)] = (self._texture_by_content[digest], alpha)
        return self._texture_index[id(image)]

    def _alpha_plane(self, alpha: np.ndarray | None, factor: float, cutoff: float) -> int:
        """Index of the alpha plane ``alpha`` x ``factor`` (a constant 1 x 1 plane when ``alpha`` is None), or -1
        when no texel of it falls below ``cutoff`` (the material is then opaque)."""
        source = alpha.astype(np.float32) if alpha is not None else np.full((1, 1), 255.0, np.float32)
        plane = np.clip(np.rint(source * factor), 0, 255).astype(np.uint8)
        if not (plane < cutoff * 255.0).any():
            return -1
        digest = hashlib.sha256(repr(plane.shape).encode() + plane.tobytes()).hexdigest()
        if digest not in self._alpha_by_content:
            self.alphas.append(plane)
            self._alpha_by_content[digest] = len(self.alphas) - 1
        return self._alpha_by_content[digest]

    def _map_d(self, words: list[str] | None) -> Image.Image | None:
        """The image an MTL ``map_d`` line names (its last word, relative to the OBJ), as alpha; None if absent."""
        if not words:
            return None
        path = self.folder / words[-1].replace("\\", "/")
        try:
            with Image.open(path) as image:
                if _has_alpha(image):
                    return image.convert("RGBA")
                grey = image.convert("L")
                return Image.merge("LA", (grey, grey))
        except OSError:  # a missing or unreadable file, like an unreadable map_Kd in trimesh: no mask
            return None

    def build(self, source: str, path: Path, fmt: str, up: str, scale: float) -> Scene:
        """Concatenate everything added into a Scene."""
        faces = np.concatenate(self.faces)
        counts = [len(f) for f in self.faces]
        vertices = np.concatenate(self.vertices)
        tri = vertices[faces]
        if not np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).any():
            raise SceneError(f"{path} has only zero-area triangles (a compressed glTF, e.g. Draco or meshopt, "
                             f"that trimesh cannot decode?): decompress it, e.g. gltf-transform copy IN OUT")
        uvs = _concat_or_none(self.uvs, counts, fill=0.0)
        colors = _concat_or_none(self.colors, counts, fill=1.0)
        face_object = np.repeat(np.arange(len(self.objects), dtype=np.int32), counts)
        scene = Scene(
            vertices=vertices, faces=faces, face_material=np.concatenate(self.face_material),
            materials=self.materials, face_object=face_object, objects=self.objects, textures=self.textures,
            alphas=self.alphas, uvs=uvs, colors=colors, name=source,
            source_units=_NAMED_UNITS.get(scale, f"{scale:g} m"),
            provenance={"loader": "meshfile", "path": str(path.resolve()), "format": fmt, "up": up,
                        "scale": scale, "sha256": _file_sha256(path)},
        )
        _classify_objects(scene)
        return scene


def _concat_or_none(parts: list[np.ndarray | None], counts: list[int], fill: float) -> np.ndarray | None:
    """Concatenate per-instance corner arrays, filling instances without one; None when none has one."""
    shape = next((p.shape[1:] for p in parts if p is not None), None)
    if shape is None:
        return None
    return np.concatenate([p if p is not None else np.full((n, *shape), fill)
                           for p, n in zip(parts, counts, strict=True)])


def _has_alpha(image: Image.Image) -> bool:
    """Whether a PIL image carries an alpha channel or a transparent palette entry."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _image_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 (h, w, 3) copy of a PIL image, downscaled to MAX_TEXTURE_SIZE with alpha composited, and its
    alpha (h, w) uint8 at the same size (None when the image has none)."""
    has_alpha = _has_alpha(image)
    image = image.convert("RGBA" if has_alpha else "RGB")
    longer = max(image.size)
    if longer > MAX_TEXTURE_SIZE:
        size = tuple(max(1, round(s * MAX_TEXTURE_SIZE / longer)) for s in image.size)
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = np.asarray(image)
    if not has_alpha:
        return np.ascontiguousarray(pixels), None
    rgb = pixels[..., :3].astype(np.float32)
    alpha = pixels[..., 3:].astype(np.float32) / 255.0
    weight = alpha.sum()
    background = (rgb * alpha).sum((0, 1)) / weight if weight > 0 else rgb.mean((0, 1))
    out = rgb * alpha + background * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), np.ascontiguousarray(pixels[..., 3])


def _classify_objects(scene: Scene) -> None:
    """Set each object's kind by the bounding-box rule of the module docstring."""
    boxes = scene.object_bounds()
    bottom = float(boxes[:, 0, 2].min())
    for obj, (lo, hi) in zip(scene.objects, boxes, strict=True):
        size = hi - lo
        across = max(size[0], size[1])
        slab = (across >= SLAB_MIN_SIDE and size[2] <= SLAB_MAX_THICKNESS_RATIO * across
                and lo[2] - bottom <= SLAB_MAX_LIFT)
        room = min(size[0], size[1]) >= ROOM_MIN_SIDE and size[2] >= ROOM_MIN_HEIGHT
        if len(scene.objects) == 1 or size.max() > STRUCTURE_MIN_SIDE or room or slab:
            obj.kind = "structure"


def _file_sha256(path: Path) -> str:
    """sha256 hex of the file's bytes (the main file only, not the buffers or images it references)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
