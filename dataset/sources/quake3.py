"""Quake 3 levels (IBSP version 46) from OpenArena ``.pk3`` archives, as Scenes.

Source strings:

- ``openarena:MAP``: the map from the installed OpenArena archives (``apt-get install openarena-data``);
- ``PATH.pk3:MAP``: the map from that archive (its textures first, then the installed ones);
- ``PATH.bsp``: a loose BSP file, textured from the installed archives;

each optionally followed by ``?subdivisions=N``, the Bézier patch tessellation level (default 8).

The BSP geometry is parsed with numpy structured dtypes; curved patches are tessellated as
biquadratic Bézier patches; surfaces that hide nothing (sky, tool brushes, fog, non-solid see-through
effects such as light beams and flames) are dropped, so sky rays miss (depth 0). World = Quake units
(inches) * 0.0254, Z up, as in DESIGN.md. Quake 3 faces are clockwise seen from the front; the Scene
gets them counter-clockwise. Light maps and vertex colours carry the baked lighting, brightened by
Quake 3's over-bright shift as the game shows it. Textures are resolved by shader name, then through
the ``scripts/*.shader`` files, and decoded once per process (cached per archive file and name).
"""

from __future__ import annotations

import difflib
import io
import math
import os
import re
import struct
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

from ..conventions import quake_to_world
from ..scene import Material, Scene, SceneError, SceneObject

STEP_SIZE = 18.0
"""Quake units a player steps up without jumping (stairs in Quake 3 levels are built for it)."""
PLAYER_MINS_Z = 24.0
"""Quake units from a spawn point's origin down to the player's feet (bounding box mins z)."""
DEFAULT_SUBDIVISIONS = 8
OVERBRIGHT_SHIFT = 2
"""Bits light maps and vertex colours are shifted by: Quake 3 maps are lit with r_mapOverBrightBits 2, which
the game shows as x4 (a x2 shift in the data plus x2 in the display gamma ramp, or x4 in the data when
windowed). A x2 shift alone renders the levels about half as bright as the game."""
MAX_TEXTURE_SIZE = 512
UNTEXTURED_COLOR = (0.5, 0.5, 0.5)
LICENCE = "GPL-2+ (OpenArena)"
OPENARENA_ENV = "MATRIX_PANO_OPENARENA_PATH"
OPENARENA_DIRS = (
    "/usr/share/games/openarena/baseoa",
    "/usr/share/games/openarena/missionpack",
    "~/.openarena/baseoa",
)
"""Installed archive folders, lowest priority first; folders in $MATRIX_PANO_OPENARENA_PATH override them."""

SPAWN_CLASSES = frozenset({
    "info_player_deathmatch", "info_player_start", "team_ctf_redspawn", "team_ctf_bluespawn",
    "team_ctf_redplayer", "team_ctf_blueplayer",
})
TOOL_SHADERS = frozenset(f"textures/common/{name}" for name in (
    "areaportal", "antiportal", "botclip", "caulk", "clip", "clusterportal", "donotenter", "full_clip",
    "hint", "invisible", "lightgrid", "metalclip", "missileclip", "nodraw", "nodrawnonsolid", "nodrop",
    "noimpact", "origin", "playerclip", "skip", "slick", "trigger", "weapclip",
))
SURF_SKY, SURF_NODRAW = 0x4, 0x80
CONTENTS_SOLID, CONTENTS_LIQUID, CONTENTS_FOG = 0x1, 0x8 | 0x10 | 0x20, 0x40
FACE_POLYGON, FACE_PATCH, FACE_MESH = 1, 2, 3
IMAGE_FORMATS = {".tga": "TGA", ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
"""Image extensions in Quake 3's lookup order and the Pillow decoder for each."""

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
_MAP_NAME = re.compile(r"^[\w.+-]+$")
_MAP_MEMBER = re.compile(r"^maps/([^/]+)\.bsp$", re.IGNORECASE)
_SHADER_TOKEN = re.compile(r'//[^\n]*|/\*.*?\*/|"([^"]*)"|([{}])|([^\s{}"]+)', re.DOTALL)
_ENTITY_TOKEN = re.compile(r'"([^"]*)"|([{}])')
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, zlib.error)
_TEXTURE_CACHE: OrderedDict[tuple, np.ndarray | None] = OrderedDict()
_TEXTURE_CACHE_BYTES = 256 << 20


# --------------------------------------------------------------------------- public API


def load_quake3(source: str) -> Scene:
    """Load ``openarena:MAP``, ``PATH.pk3:MAP`` or ``PATH.bsp`` (optionally ``?subdivisions=N``) as a Scene."""
    kind, path, map_name, subdivisions = _parse_source(source)
    defaults = _default_archives()
    if kind == "openarena":
        if not defaults:
            raise SceneError(f"scene {source!r}: no OpenArena archives found in {', '.join(_archive_dirs())}: "
                             f"apt-get install openarena-data, or set {OPENARENA_ENV} to folders holding .pk3 files")
        archive_paths, map_archive = defaults, None
    elif kind == "pk3":
        if not Path(path).is_file():
            raise SceneError(f"scene {source!r}: archive {path} does not exist")
        own = str(Path(path).resolve())
        archive_paths, map_archive = [p for p in defaults if p != own] + [own], own
    else:
        archive_paths, map_archive = defaults, None
    with _Archives(archive_paths) as archives:
        if kind == "bsp":
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise SceneError(f"scene {source!r}: cannot read {path}: {exc.strerror or exc}") from exc
            where = path
            provenance = {"archive": None, "map": Path(path).stem, "bsp": str(path)}
        else:
            archive, member = _find_map(archives, map_archive, map_name, source)
            data = archives.read((archive, member))
            where = f"{archive}:{member}"
            provenance = {"archive": archive, "map": _MAP_MEMBER.match(member).group(1), "bsp": member}
        provenance.update({"loader": "quake3", "bsp_bytes": len(data), "subdivisions": subdivisions,
                           "step_height_m": float(quake_to_world(STEP_SIZE))})
        scene = _build_scene(_parse_bsp(data, where), archives, subdivisions, where, provenance)
    scene.name = source
    return scene


def find_openarena_maps() -> list[tuple[str, str]]:
    """(map name, archive path) of every map in the installed OpenArena archives, later archives winning."""
    found: dict[str, tuple[str, str]] = {}
    for path in _default_archives():
        for member in _member_names(_stamp(path)):
            m = _MAP_MEMBER.match(member)
            if m:
                found[m.group(1).lower()] = (m.group(1), path)
    return sorted(found.values())


# --------------------------------------------------------------------------- sources and archives


def _parse_source(source: str) -> tuple[str, str | None, str | None, int]:
    """Split a source string into (kind, file path, map name, subdivisions); kind is openarena, pk3 or bsp."""
    base, _, query = source.partition("?")
    subdivisions = DEFAULT_SUBDIVISIONS
    if query:
        try:
            params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
        except ValueError as exc:
            raise SceneError(f"scene {source!r}: malformed options {query!r}: use ?subdivisions=N") from exc
        unknown = set(params) - {"subdivisions"}
        if unknown:
            raise SceneError(f"scene {source!r}: unknown option(s) {', '.join(sorted(unknown))}: "
                             f"only ?subdivisions=N is supported")
        if "subdivisions" in params:
            value = params["subdivisions"]
            if not value.isdigit() or not 1 <= int(value) <= 64:
                raise SceneError(f"scene {source!r}: subdivisions must be an integer from 1 to 64, got {value!r}")
            subdivisions = int(value)
    if base.startswith("openarena:"):
        return "openarena", None, _check_map_name(base[len("openarena:"):], source), subdivisions
    lower = base.lower()
    at = lower.rfind(".pk3:")
    if at >= 0 and base[at + 5:]:
        return "pk3", base[:at + 4], _check_map_name(base[at + 5:], source), subdivisions
    if lower.endswith((".pk3", ".pk3:")):
        return "pk3", base[:lower.rindex(".pk3") + 4], None, subdivisions
    if lower.endswith(".bsp"):
        return "bsp", base, None, subdivisions
    raise SceneError(f"scene {source!r}: expected openarena:MAP, PATH.pk3:MAP or PATH.bsp")


def _check_map_name(name: str, source: str) -> str:
    name = name.strip()
    if name.lower().startswith("maps/"):
        name = name[5:]
    if name.lower().endswith(".bsp"):
        name = name[:-4]
    if not _MAP_NAME.match(name) or name.startswith("."):
        raise SceneError(f"scene {source!r}: {name!r} is not a map name (letters, digits, _ - . +), "
                         f"e.g. openarena:oa_dm1")
    return name


def _archive_dirs() -> list[str]:
    """Folders searched for .pk3 archives, lowest priority first."""
    env = [d for d in os.environ.get(OPENARENA_ENV, "").split(os.pathsep) if d.strip()]
    return [os.path.expanduser(d) for d in (*OPENARENA_DIRS, *env)]


def _default_archives() -> list[str]:
    """All .pk3 archives of the archive folders in Quake 3 order: later folders and later names override."""
    out: list[str] = []
    for folder in _archive_dirs():
        if not os.path.isdir(folder):
            continue
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".pk3"))
        for name in names:
            path = str(Path(folder, name).resolve())
            if path in out:
                out.remove(path)
            out.append(path)
    return out


def _stamp(path: str) -> tuple[str, int, int]:
    """(path, mtime, size): a cache key that changes when the file does."""
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


def _safe_member(name: str) -> bool:
    """Archive member names we read: relative POSIX paths without '..', drive letters or backslashes."""
    if not name or name.startswith("/") or "\\" in name or ":" in name:
        return False
    return ".." not in PurePosixPath(name).parts


@lru_cache(maxsize=64)
def _member_names(stamp: tuple[str, int, int]) -> tuple[str, ...]:
    """Safe file names inside one archive."""
    path = stamp[0]
    try:
        with zipfile.ZipFile(path) as zf:
            return tuple(n for n in zf.namelist() if not n.endswith("/") and _safe_member(n))
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise SceneError(f"{path} is not a readable .pk3 (zip) archive ({exc}): replace or remove it") from exc
    except OSError as exc:
        raise SceneError(f"cannot read archive {path}: {exc.strerror or exc}") from exc


@lru_cache(maxsize=8)
def _merged_index(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, tuple[str, str]]:
    """Lower-case file name -> (archive, member) over several archives, later archives overriding."""
    index: dict[str, tuple[str, str]] = {}
    for stamp in stamps:
        for name in _member_names(stamp):
            index[name.lower()] = (stamp[0], name)
    return index


class _Archives:
    """Read-only view of several .pk3 archives with Quake 3 precedence (later archives override earlier)."""

    def __init__(self, paths: list[str]) -> None:
        self.stamps = tuple(_stamp(p) for p in paths)
        self.index = _merged_index(self.stamps)
        self._open: dict[str, zipfile.ZipFile] = {}

    def __enter__(self) -> _Archives:
        return self

    def __exit__(self, *exc: object) -> None:
        for zf in self._open.values():
            zf.close()
        self._open.clear()

    def find(self, name: str) -> tuple[str, str] | None:
        """(archive, member) of a file name, case-insensitive, or None."""
        return self.index.get(name.replace("\\", "/").lower())

    def stamp(self, archive: str) -> tuple[str, int, int]:
        return next(s for s in self.stamps if s[0] == archive)

    def read(self, member: tuple[str, str]) -> bytes:
        archive, name = member
        try:
            if archive not in self._open:
                self._open[archive] = zipfile.ZipFile(archive)
            return self._open[archive].read(name)
        except _ZIP_ERRORS as exc:
            raise SceneError(f"cannot read {name} from {archive} ({exc}): the archive is damaged, replace it") from exc


def _find_map(archives: _Archives, archive: str | None, map_name: str | None, source: str) -> tuple[str, str]:
    """(archive, member) of a map's BSP, or a SceneError listing the maps there are."""
    if archive is None:
        available = [name for name, _ in find_openarena_maps()]
        hint = "`matrix-pano scenes` lists them all"
        if not available:
            raise SceneError(f"scene {source!r}: the OpenArena archives hold no maps/*.bsp: "
                             f"apt-get install openarena-data, or set {OPENARENA_ENV}")
    else:
        available = sorted(m.group(1) for n in _member_names(archives.stamp(archive))
                           if (m := _MAP_MEMBER.match(n)))
        hint = f"{archive} holds {len(available)}"
        if not available:
            raise SceneError(f"scene {source!r}: {archive} holds no maps/*.bsp")
        if map_name is None and len(available) == 1:
            map_name = available[0]
    if map_name is not None:
        member = archives.find(f"maps/{map_name}.bsp")
        if member and (archive is None or member[0] == archive):
            return member
    close = difflib.get_close_matches(map_name or "", available, n=6, cutoff=0.5)
    shown = close + [n for n in available if n not in close][:max(0, 6 - len(close))]
    what = f"unknown map {map_name!r}" if map_name else "no map named (use PATH.pk3:MAP)"
    raise SceneError(f"scene {source!r}: {what}; available: {', '.join(shown)}, ... ({hint})")


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


def color_shift(rgb: np.ndarray, shift: int = OVERBRIGHT_SHIFT) -> np.ndarray:
    """Quake 3's over-bright shift (R_ColorShiftLightingBytes): x 2**shift, keeping the hue of what saturates.

    A colour whose brightest channel would pass 255 is scaled so that channel is 255 instead of clamping
    each channel, so bright coloured light keeps its colour.
    """
    c = np.asarray(rgb).astype(np.int32) << shift
    peak = c.max(axis=-1, keepdims=True)
    return np.where(peak > 255, c * 255 // np.maximum(peak, 1), c).astype(np.uint8)


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
    materials, textures, stats = _load_materials(archives, shaders, shader_names)

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
        uvs=corner[:, :, 3:5],
        colors=colors,
        lightmap_uvs=np.where(lit[:, None, None], corner[:, :, 5:7], 0.0),
        face_lightmap=face_lightmap,
        baked_lighting=True,
        spawn_points=_spawn_points(bsp.entities),
        source_units="inch",
        provenance={**provenance, **stats, "licence": LICENCE},
    )


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


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


# --------------------------------------------------------------------------- textures


def _load_materials(archives: _Archives, shaders: dict[str, ShaderInfo], shader_names: list[str]
                    ) -> tuple[list[Material], list[np.ndarray], dict]:
    """One Material per shader, textured when its image resolves; statistics for the provenance."""
    materials, textures = [], []
    texture_index: dict[tuple[str, str], int] = {}
    unresolved = []
    for name in shader_names:
        member = _resolve_image(archives, shaders, name)
        image = _texture(archives, member) if member else None
        if image is None:
            unresolved.append(name)
            materials.append(Material(name, UNTEXTURED_COLOR, -1))
            continue
        if member not in texture_index:
            texture_index[member] = len(textures)
            textures.append(image)
        materials.append(Material(name, (1.0, 1.0, 1.0), texture_index[member]))
    stats = {"shaders_resolved": len(shader_names) - len(unresolved), "shaders_unresolved": len(unresolved),
             "unresolved_shaders": sorted(unresolved)}
    return materials, textures, stats


def _resolve_image(archives: _Archives, shaders: dict[str, ShaderInfo], shader: str) -> tuple[str, str] | None:
    """(archive, member) of the image a shader draws: a same-named image, else its script's image."""
    info = shaders.get(shader.lower())
    for candidate in (shader, info.image if info else None):
        if not candidate:
            continue
        stem = candidate.replace("\\", "/")
        ext = os.path.splitext(stem)[1].lower()
        if ext in IMAGE_FORMATS:
            stem = stem[:-len(ext)]
        for suffix in IMAGE_FORMATS:
            member = archives.find(stem + suffix)
            if member:
                return member
    return None


def _texture(archives: _Archives, member: tuple[str, str]) -> np.ndarray | None:
    """Decoded RGB texture (read-only, longer side at most MAX_TEXTURE_SIZE), cached per archive file + name."""
    key = (archives.stamp(member[0]), member[1])
    if key in _TEXTURE_CACHE:
        _TEXTURE_CACHE.move_to_end(key)
        return _TEXTURE_CACHE[key]
    image = _decode_image(archives.read(member), member[1])
    _TEXTURE_CACHE[key] = image
    while sum(t.nbytes for t in _TEXTURE_CACHE.values() if t is not None) > _TEXTURE_CACHE_BYTES:
        _TEXTURE_CACHE.popitem(last=False)
    return image


def _decode_image(data: bytes, name: str) -> np.ndarray | None:
    """TGA/JPEG/PNG bytes to RGB uint8 (alpha ignored), downscaled to MAX_TEXTURE_SIZE; None if undecodable."""
    fmt = IMAGE_FORMATS.get(os.path.splitext(name)[1].lower())
    try:
        with Image.open(io.BytesIO(data), formats=[fmt] if fmt else None) as im:
            rgb = im.convert("RGB")
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return None
    if max(rgb.size) > MAX_TEXTURE_SIZE:
        rgb.thumbnail((MAX_TEXTURE_SIZE, MAX_TEXTURE_SIZE), Image.Resampling.LANCZOS)
    image = np.array(rgb, np.uint8)
    image.setflags(write=False)
    return image


@dataclass(frozen=True)
class ShaderInfo:
    """What the loader needs from a shader script."""

    image: str | None
    """Image of its first colour stage: the first ``map``/``clampMap``/``animMap`` (first frame) that is
    neither ``$lightmap``/``$whiteimage`` nor an environment map, else any stage image, else ``qer_editorimage``."""
    blended: bool
    """All its stages (besides ``$lightmap``) blend over what is behind (``blendFunc``): see-through."""


@lru_cache(maxsize=8)
def _shader_table(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, ShaderInfo]:
    """Shader name (lower case) -> ShaderInfo over all scripts/*.shader of the archives, later ones overriding."""
    table: dict[str, ShaderInfo] = {}
    for stamp in stamps:
        scripts = sorted(n for n in _member_names(stamp)
                         if n.lower().startswith("scripts/") and n.lower().endswith(".shader"))
        if not scripts:
            continue
        try:
            with zipfile.ZipFile(stamp[0]) as zf:
                for name in scripts:
                    table.update(parse_shader_script(zf.read(name).decode("latin-1")))
        except _ZIP_ERRORS as exc:
            raise SceneError(f"cannot read the shader scripts of {stamp[0]} ({exc}): the archive is damaged, "
                             f"replace it") from exc
    return table


def parse_shader_script(text: str) -> dict[str, ShaderInfo]:
    """Shader name (lower case) -> ShaderInfo for each shader of a Quake 3 shader script's text."""
    table: dict[str, ShaderInfo] = {}
    depth = 0
    name = editor = None
    stages: list[list[str]] = []
    tokens = [m.group(1) if m.group(1) is not None else (m.group(2) or m.group(3))
              for m in _SHADER_TOKEN.finditer(text) if not m.group(0).startswith(("//", "/*"))]
    for i, tok in enumerate(tokens):
        if tok == "{":
            depth += 1
            if depth == 2:
                stages.append([])
        elif tok == "}":
            depth = max(depth - 1, 0)
            if depth == 0 and name is not None:
                table[name.lower()] = _shader_info(stages, editor)
                name, editor, stages = None, None, []
        elif depth == 0:
            name, editor, stages = tok, None, []
        elif depth == 1 and tok.lower() == "qer_editorimage" and i + 1 < len(tokens):
            editor = tokens[i + 1]
        elif depth >= 2 and stages:
            stages[-1].append(tok)
    return table


def _shader_info(stages: list[list[str]], editor: str | None) -> ShaderInfo:
    image = fallback = None
    blends = []
    for stage in stages:
        low = " ".join(stage).lower().split()
        if "$lightmap" in low:
            continue
        blend = low.index("blendfunc") if "blendfunc" in low else -1
        blends.append(blend >= 0 and low[blend + 1:blend + 3] != ["gl_one", "gl_zero"])
        stage_image = None
        for k, t in enumerate(low):
            if t in ("map", "clampmap") and k + 1 < len(stage):
                stage_image = stage[k + 1]
            elif t == "animmap" and k + 2 < len(stage):
                stage_image = stage[k + 2]
            if stage_image:
                break
        if not stage_image or stage_image.startswith("$") or image:
            continue
        if any(low[k:k + 2] == ["tcgen", "environment"] for k in range(len(low))):
            fallback = fallback or stage_image
        else:
            image = stage_image
    return ShaderInfo(image or fallback or editor, bool(blends) and all(blends))
