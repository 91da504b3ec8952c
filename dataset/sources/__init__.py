"""Scene sources, each addressed by a plain string on every CLI.

- ``procedural:indoor:SEED``, ``procedural:outdoor:SEED``, ``procedural:room:WxDxH``: generated scenes;
- ``openarena:MAP``: a Quake 3 level from the installed OpenArena archives (``apt-get install
  openarena-data``), ``PATH.pk3:MAP`` or ``PATH.bsp`` for other archives and files;
- a mesh file path ``.gltf``/``.glb``/``.obj``/``.ply``, optionally with ``?up=y|z|x&scale=S``;
- ``unreal:PATH/level.json``: a level exported from Unreal by ``ue_plugin/editor/export_level.py``
  (registered by ``ue_plugin`` through the entry point below).

Sources sit behind a prefix registry. A string ``NAME:REST`` goes to the loader of prefix ``NAME`` when
``NAME`` is registered, either here (the built-ins, or ``register_source``) or by an installed package
through the entry-point group ``matrix_pano.scene_sources`` (entry point name = the prefix without its
colon, value = ``module:function``; the function takes the whole source string and returns a Scene)::

    [project.entry-points."matrix_pano.scene_sources"]
    unreal = "ue_plugin.level:load_unreal_level"

Only registered names count as prefixes, so ``C:\\scenes\\x.glb`` or ``maps.pk3:dm1`` stay paths. Any other
string is a file path: Quake 3 files (``*.bsp``, ``*.pk3[:MAP]``) go to the BSP loader, everything else to
the mesh loader (which names the supported suffixes when the path has none of them).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from dataset.core.scene import Scene, SceneError

ENTRY_POINT_GROUP = "matrix_pano.scene_sources"
Loader = Callable[[str], Scene]

_PREFIXES: dict[str, Loader | str] = {
    "procedural": "dataset.sources.procedural:load_procedural",
    "openarena": "dataset.sources.quake3:load_quake3",
}
"""Prefix (without colon) -> loader or its ``module:function``; resolved on first use, so imports stay lazy."""
_QUAKE3_LOADER = "dataset.sources.quake3:load_quake3"
_MESH_LOADER = "dataset.sources.meshfile:load_mesh_file"
_PREFIX_LIKE = re.compile(r"^([A-Za-z][\w+-]+):")
"""``NAME:`` that reads as a source prefix (two or more characters, so a drive letter ``C:`` does not)."""


def register_source(prefix: str, loader: Loader | str) -> None:
    """Route ``PREFIX:...`` strings to ``loader`` (a function of the whole string, or its ``module:function``).

    In-process registrations take precedence over entry points of the same name.
    """
    name = prefix.removesuffix(":")
    if not _PREFIX_LIKE.match(f"{name}:"):
        raise ValueError(f"scene source prefix {prefix!r} must be a name of two or more letters, digits, _ + -")
    _PREFIXES[name] = loader


def known_prefixes() -> list[str]:
    """Every prefix ``load_scene`` routes, with its colon: built-ins, registrations and entry points."""
    return sorted(f"{name}:" for name in {**_entry_points(), **_PREFIXES})


def load_scene(source: str) -> Scene:
    """Load the scene a source string names; raises SceneError with a one-line, actionable message."""
    if not isinstance(source, str) or not source.strip():
        raise SceneError("empty scene string: give procedural:indoor:SEED, openarena:MAP or a mesh file path")
    source = source.strip()
    try:
        scene = _loader_for(source)(source)
    except SceneError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise SceneError(f"cannot load scene {source!r}: {exc}") from exc
    if not isinstance(scene, Scene):
        raise SceneError(f"scene {source!r}: its loader returned {type(scene).__name__}, not a Scene")
    scene.name = source
    return scene


def _loader_for(source: str) -> Loader:
    """The loader of a registered prefix, else of the file path the string is."""
    prefix, sep, _ = source.partition(":")
    if sep and prefix in _PREFIXES:
        return _resolve(prefix, _PREFIXES[prefix])
    if sep and (ep := _entry_points().get(prefix)) is not None:
        return _resolve(prefix, ep)
    path = source.split("?", 1)[0]
    if path.lower().endswith(".bsp") or ".pk3" in path.lower():
        return _resolve("quake3", _QUAKE3_LOADER)
    if (m := _PREFIX_LIKE.match(source)) and not _is_mesh_path(path) and not Path(path).expanduser().exists():
        raise SceneError(f"scene {source!r}: unknown source prefix {m.group(1) + ':'!r}; known prefixes are "
                         f"{', '.join(known_prefixes())} (packages add more through the {ENTRY_POINT_GROUP!r} "
                         f"entry points), or give a mesh file path, PATH.pk3:MAP or PATH.bsp")
    return _resolve("mesh file", _MESH_LOADER)


def _is_mesh_path(path: str) -> bool:
    from dataset.sources.meshfile import MESH_SUFFIXES

    return path.lower().endswith(MESH_SUFFIXES)


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    """Entry points of the scene-source group by name, read once per process."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _resolve(prefix: str, loader: Loader | str | EntryPoint) -> Loader:
    """A loader function from a callable, a ``module:function`` string or an entry point."""
    if callable(loader):
        return loader
    if isinstance(loader, str):
        module, _, function = loader.partition(":")
        return getattr(importlib.import_module(module), function)
    try:
        return loader.load()
    except (ImportError, AttributeError) as exc:
        raise SceneError(f"scene source {prefix + ':'!r} is provided by {loader.value} (entry point of "
                         f"{ENTRY_POINT_GROUP!r}) but it cannot be loaded ({type(exc).__name__}: {exc}): "
                         f"reinstall the package that provides it") from exc


def list_scenes() -> list[tuple[str, str]]:
    """(scene string, description) for every built-in generator and every OpenArena map found."""
    from dataset.sources.procedural import GENERATORS
    from dataset.sources.quake3 import find_openarena_maps

    rows = [(f"procedural:{name}:{example}", doc) for name, (example, doc, _fn) in GENERATORS.items()]
    rows += [(f"openarena:{name}", f"OpenArena level in {archive}") for name, archive in find_openarena_maps()]
    return rows


def default_scenes(openarena: tuple[str, ...] = ("oa_dm1", "aggressor"), most: int | None = None) -> list[str]:
    """The demo and benchmark scenes: ``procedural:indoor:0``, ``procedural:outdoor:0`` and the installed OpenArena
    maps among ``openarena`` (at most ``most``; with ``most``, any installed map when none of those is)."""
    maps = [name for name, _ in list_scenes() if name.startswith("openarena:")]
    chosen = [f"openarena:{m}" for m in openarena if f"openarena:{m}" in maps][:most]
    if most and not chosen:
        chosen = maps[:most]
    return ["procedural:indoor:0", "procedural:outdoor:0", *chosen]
