"""Source strings (``openarena:MAP``, ``PATH.pk3:MAP``, ``PATH.bsp``, ``?subdivisions=N``) to Scenes."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl

from dataset.core.conventions import quake_to_world
from dataset.core.scene import Scene, SceneError
from dataset.sources.quake3.archives import (
    _MAP_MEMBER,
    OPENARENA_ENV,
    _archive_dirs,
    _Archives,
    _default_archives,
    _find_map,
)
from dataset.sources.quake3.bsp import _parse_bsp
from dataset.sources.quake3.level import STEP_SIZE, _build_scene

DEFAULT_SUBDIVISIONS = 8
_MAP_NAME = re.compile(r"^[\w.+-]+$")


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
