"""IBSP version 46 files: header and lump parsing, entities, visible surfaces, and their triangles
(polygon and mesh faces from meshverts, curved patches tessellated as biquadratic Bézier patches)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from dataset.core.scene import SceneError
from dataset.sources.quake3.shaders import ShaderInfo

TOOL_SHADERS = frozenset(f"textures/common/{name}" for name in (
    "areaportal", "antiportal", "botclip", "caulk", "clip", "clusterportal", "donotenter", "full_clip",
    "hint", "invisible", "lightgrid", "metalclip", "missileclip", "nodraw", "nodrawnonsolid", "nodrop",
    "noimpact", "origin", "playerclip", "skip", "slick", "trigger", "weapclip",
))
SURF_SKY, SURF_NODRAW = 0x4, 0x80
CONTENTS_SOLID, CONTENTS_LIQUID, CONTENTS_FOG = 0x1, 0x8 | 0x10 | 0x20, 0x40
FACE_POLYGON, FACE_PATCH, FACE_MESH = 1, 2, 3
LUMP_ENTITIES, LUMP_TEXTURES, LUMP_MODELS, LUMP_VERTICES, LUMP_MESHVERTS, LUMP_FACES, LUMP_LIGHTMAPS = (
    0, 1, 7, 10, 11, 13, 14)
NUM_LUMPS = 17
HEADER_SIZE = 8 + NUM_LUMPS * 8
LIGHTMAP_SIZE = 128
TEXTURE_DTYPE = np.dtype([("name", "S64"), ("flags", "<i4"), ("contents", "<i4")])
MODEL_DTYPE = np.dtype([("mins", "<f4", 3), ("maxs", "<f4", 3), ("face", "<i4"), ("n_faces", "<i4"),
                        ("brush", "<i4"), ("n_brushes", "<i4")])
VERTEX_DTYPE = np.dtype([("position", "<f4", 3), ("texcoord", "<f4", 2), ("lmcoord", "<f4", 2),
                         ("normal", "<f4", 3), ("color", "u1", 4)])
FACE_DTYPE = np.dtype([
    ("texture", "<i4"), ("effect", "<i4"), ("type", "<i4"), ("vertex", "<i4"), ("n_vertexes", "<i4"),
    ("meshvert", "<i4"), ("n_meshverts", "<i4"), ("lm_index", "<i4"), ("lm_start", "<i4", 2),
    ("lm_size", "<i4", 2), ("lm_origin", "<f4", 3), ("lm_vecs", "<f4", (2, 3)), ("normal", "<f4", 3),
    ("size", "<i4", 2),
])
_LUMP_DTYPES = {LUMP_TEXTURES: TEXTURE_DTYPE, LUMP_MODELS: MODEL_DTYPE, LUMP_VERTICES: VERTEX_DTYPE,
                LUMP_MESHVERTS: np.dtype("<i4"), LUMP_FACES: FACE_DTYPE,
                LUMP_LIGHTMAPS: np.dtype((np.uint8, (LIGHTMAP_SIZE, LIGHTMAP_SIZE, 3)))}
_LUMP_NAMES = {LUMP_ENTITIES: "entities", LUMP_TEXTURES: "textures", LUMP_MODELS: "models", LUMP_VERTICES: "vertices",
               LUMP_MESHVERTS: "meshverts", LUMP_FACES: "faces", LUMP_LIGHTMAPS: "lightmaps"}
_ENTITY_TOKEN = re.compile(r'"([^"]*)"|([{}])')


# --------------------------------------------------------------------------- BSP parsing


@dataclass
class _Bsp:
    entities: list[dict[str, str]]
    textures: np.ndarray
    models: np.ndarray
    vertices: np.ndarray
    meshverts: np.ndarray
    faces: np.ndarray
    lightmaps: np.ndarray


def _parse_bsp(data: bytes, where: str) -> _Bsp:
    """Check the header and lumps of an IBSP v46 file and view its lumps as numpy arrays."""
    if len(data) < HEADER_SIZE:
        raise SceneError(f"{where}: truncated BSP ({len(data)} bytes, the header alone is {HEADER_SIZE})")
    magic, version = struct.unpack_from("<4si", data)
    if magic != b"IBSP":
        raise SceneError(f"{where}: not a Quake 3 BSP (magic {magic!r}, expected b'IBSP')")
    if version != 46:
        raise SceneError(f"{where}: IBSP version {version}; only version 46 (Quake 3 / OpenArena) is supported")
    lumps = np.frombuffer(data, "<i4", NUM_LUMPS * 2, 8).reshape(NUM_LUMPS, 2).astype(np.int64)
    arrays = {}
    for i in (LUMP_ENTITIES, *_LUMP_DTYPES):
        offset, length = lumps[i]
        name = _LUMP_NAMES[i]
        if offset < 0 or length < 0 or offset + length > len(data):
            raise SceneError(f"{where}: truncated or corrupt BSP: lump {i} ({name}) spans bytes "
                             f"{offset}..{offset + length} of a {len(data)}-byte file")
        if i == LUMP_ENTITIES:
            arrays[i] = data[offset:offset + length]
            continue
        dtype = _LUMP_DTYPES[i]
        if length % dtype.itemsize:
            raise SceneError(f"{where}: corrupt BSP: lump {i} ({name}) has {length} bytes, "
                             f"not a multiple of its {dtype.itemsize}-byte records")
        arrays[i] = np.frombuffer(data, dtype, length // dtype.itemsize, offset)
    return _Bsp(
        entities=_parse_entities(arrays[LUMP_ENTITIES].decode("latin-1")),
        textures=arrays[LUMP_TEXTURES], models=arrays[LUMP_MODELS], vertices=arrays[LUMP_VERTICES],
        meshverts=arrays[LUMP_MESHVERTS], faces=arrays[LUMP_FACES], lightmaps=arrays[LUMP_LIGHTMAPS],
    )


def _parse_entities(text: str) -> list[dict[str, str]]:
    """The entity lump's ``{ "key" "value" ... }`` blocks as dicts."""
    entities: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    key: str | None = None
    for m in _ENTITY_TOKEN.finditer(text):
        if m.group(2) == "{":
            current, key = {}, None
        elif m.group(2) == "}":
            if current is not None:
                entities.append(current)
            current = None
        elif current is not None:
            if key is None:
                key = m.group(1)
            else:
                current[key], key = m.group(1), None
    return entities


def _visible_faces(bsp: _Bsp, shaders: dict[str, ShaderInfo], where: str) -> np.ndarray:
    """Bool mask of the faces that are opaque drawn geometry.

    Kept: polygons, patches and meshes. Dropped: sky, nodraw and fog surfaces, tool shaders, and
    non-solid shaders that only blend over what is behind them (light beams, flames, smoke, glows, decals),
    which hide nothing in Quake 3.
    """
    faces, textures = bsp.faces, bsp.textures
    tex = faces["texture"]
    if len(faces) and (tex.min() < 0 or tex.max() >= len(textures)):
        bad = int(np.flatnonzero((tex < 0) | (tex >= len(textures)))[0])
        raise SceneError(f"{where}: corrupt BSP: face {bad} uses texture {tex[bad]} of {len(textures)}")
    names = [_c_string(n).lower() for n in textures["name"]]
    flags, contents = textures["flags"], textures["contents"]
    blended = np.array([n in shaders and shaders[n].blended for n in names], bool)
    hidden = ((flags & (SURF_SKY | SURF_NODRAW)) != 0) | ((contents & CONTENTS_FOG) != 0)
    hidden |= blended & ((contents & (CONTENTS_SOLID | CONTENTS_LIQUID)) == 0)
    hidden |= np.array([n.startswith("textures/skies/") or n in TOOL_SHADERS for n in names], bool)
    return np.isin(faces["type"], (FACE_POLYGON, FACE_PATCH, FACE_MESH)) & ~hidden[tex]


def _check_ranges(bsp: _Bsp, faces: np.ndarray, where: str) -> None:
    """Raise SceneError when a visible face points outside the vertex or meshvert lumps."""
    n_vert, n_mv = len(bsp.vertices), len(bsp.meshverts)
    is_patch = faces["type"] == FACE_PATCH
    w, h = faces["size"][:, 0].astype(np.int64), faces["size"][:, 1].astype(np.int64)
    bad_patch = is_patch & ((w < 3) | (h < 3) | (w % 2 == 0) | (h % 2 == 0) | (w * h > faces["n_vertexes"]))
    first = faces["vertex"].astype(np.int64)
    bad = bad_patch | (first < 0) | (faces["n_vertexes"] < 0) | (first + faces["n_vertexes"] > n_vert)
    bad |= ~is_patch & ((faces["meshvert"] < 0) | (faces["n_meshverts"] < 0) | (faces["n_meshverts"] % 3 != 0)
                        | (faces["meshvert"].astype(np.int64) + faces["n_meshverts"] > n_mv))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        f = faces[i]
        raise SceneError(f"{where}: corrupt BSP: a face of type {f['type']} has vertices {f['vertex']}+"
                         f"{f['n_vertexes']}, meshverts {f['meshvert']}+{f['n_meshverts']}, size {tuple(f['size'])} "
                         f"outside its {n_vert} vertices / {n_mv} meshverts")


# --------------------------------------------------------------------------- geometry


def _concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), without a Python loop."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts.astype(np.int64), counts) + np.arange(total) - offsets


def _soup_triangles(bsp: _Bsp, face_ids: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Triangles (T, 3) of polygon/mesh faces from their meshverts, wound counter-clockwise, and their face ids."""
    faces = bsp.faces[face_ids]
    n_tris = faces["n_meshverts"] // 3
    mv = _concat_ranges(faces["meshvert"], faces["n_meshverts"])
    corner_face = np.repeat(np.arange(len(faces)), faces["n_meshverts"])
    idx = bsp.meshverts[mv].astype(np.int64) + faces["vertex"][corner_face]
    local = idx - faces["vertex"][corner_face]
    if len(idx) and ((local < 0) | (local >= faces["n_vertexes"][corner_face])).any():
        raise SceneError(f"{where}: corrupt BSP: meshverts point outside their face's vertices")
    tris = idx.reshape(-1, 3)[:, ::-1]
    return tris, np.repeat(face_ids, n_tris)


def _bezier_basis(level: int) -> np.ndarray:
    """(level + 1, 3) quadratic Bernstein weights at evenly spaced parameters."""
    t = np.linspace(0.0, 1.0, level + 1)
    return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t ** 2], axis=1)


def _patch_triangles(bsp: _Bsp, face_ids: np.ndarray, attrs: np.ndarray, level: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tessellate patch faces: new vertex attributes (N, K), triangles (T, 3) into them and their face ids.

    A w x h control grid holds ((w-1)/2) x ((h-1)/2) biquadratic patches of 3x3 points; each becomes a
    (level+1)^2 vertex grid. With rows along the grid's height, triangles (r,c),(r,c+1),(r+1,c) face the
    side the stored vertex normals point to, i.e. they are counter-clockwise seen from the front.
    """
    faces = bsp.faces[face_ids]
    w, h = faces["size"][:, 0].astype(np.int64), faces["size"][:, 1].astype(np.int64)
    nx, ny = (w - 1) // 2, (h - 1) // 2
    counts = nx * ny
    owner = np.repeat(np.arange(len(faces)), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    px, py = k % nx[owner], k // nx[owner]
    rows = 2 * py[:, None, None] + np.arange(3)[None, :, None]
    cols = 2 * px[:, None, None] + np.arange(3)[None, None, :]
    ctrl = attrs[faces["vertex"][owner][:, None, None] + rows * w[owner][:, None, None] + cols]  # (P, 3, 3, K)
    basis = _bezier_basis(level)
    grid = np.einsum("ai,pijk->pajk", basis, ctrl)
    grid = np.einsum("bj,pajk->pabk", basis, grid)  # (P, L+1, L+1, K)
    n = level + 1
    q = (np.arange(level)[:, None] * n + np.arange(level)[None, :]).reshape(-1)
    cell = np.concatenate([np.stack([q, q + 1, q + n], 1), np.stack([q + 1, q + n + 1, q + n], 1)])
    tris = (np.arange(len(owner))[:, None, None] * n * n + cell[None]).reshape(-1, 3)
    return grid.reshape(-1, attrs.shape[1]), tris, np.repeat(face_ids[owner], len(cell))

def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")
