"""Scene sources, each addressed by a plain string on every CLI.

- ``procedural:indoor:SEED``, ``procedural:outdoor:SEED``, ``procedural:room:WxDxH``: generated scenes;
- ``openarena:MAP``: a Quake 3 level from the installed OpenArena archives (``apt-get install
  openarena-data``), ``PATH.pk3:MAP`` or ``PATH.bsp`` for other archives and files;
- a mesh file path ``.gltf``/``.glb``/``.obj``/``.ply``, optionally with ``?up=y|z|x&scale=S``;
- ``unreal:PATH/level.json``: a level exported from Unreal by ``ue_plugin/editor/export_level.py``.
"""

from __future__ import annotations

from ..scene import Scene, SceneError

MESH_SUFFIXES = (".gltf", ".glb", ".obj", ".ply")


def load_scene(source: str) -> Scene:
    """Load the scene a source string names; raises SceneError with a one-line, actionable message."""
    if not isinstance(source, str) or not source.strip():
        raise SceneError("empty scene string: give procedural:indoor:SEED, openarena:MAP or a mesh file path")
    source = source.strip()
    try:
        if source.startswith("procedural:"):
            from .procedural import load_procedural

            scene = load_procedural(source)
        elif source.startswith("unreal:"):
            from ue_plugin.level import load_unreal_level

            scene = load_unreal_level(source)
        elif source.startswith("openarena:") or _is_quake3_path(source):
            from .quake3 import load_quake3

            scene = load_quake3(source)
        else:
            from .meshfile import load_mesh_file

            scene = load_mesh_file(source)
    except SceneError:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise SceneError(f"cannot load scene {source!r}: {exc}") from exc
    scene.name = source
    return scene


def _is_quake3_path(source: str) -> bool:
    path = source.split("?", 1)[0]
    return path.lower().endswith(".bsp") or ".pk3" in path.lower()


def list_scenes() -> list[tuple[str, str]]:
    """(scene string, description) for every built-in generator and every OpenArena map found."""
    from .procedural import GENERATORS
    from .quake3 import find_openarena_maps

    rows = [(f"procedural:{name}:{example}", doc) for name, (example, doc, _fn) in GENERATORS.items()]
    rows += [(f"openarena:{name}", f"OpenArena level in {archive}") for name, archive in find_openarena_maps()]
    return rows
