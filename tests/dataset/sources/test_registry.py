"""The scene-source prefix registry: entry-point prefixes, path routing, clear errors, and the layering of
``dataset.sources`` (no upward imports, no cycles)."""

from __future__ import annotations

import ast
import json
import math
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import trimesh

import dataset.sources as sources
from dataset.core.scene import Scene, SceneError
from dataset.sources import known_prefixes, load_scene, register_source

SOURCES_DIR = Path(sources.__file__).parent
SOURCES_PACKAGE = "dataset.sources"


def _box_glb(path: Path) -> Path:
    """A glTF (Y up) holding one inward 6 x 3 x 8 m room named ``Room`` and a 1 m crate named ``Crate``."""
    scene = trimesh.Scene()
    room = trimesh.creation.box(extents=[6, 3, 8])
    room.invert()
    scene.add_geometry(room, node_name="Room", geom_name="Room",
                       transform=trimesh.transformations.translation_matrix([0, 1.5, 0]))
    scene.add_geometry(trimesh.creation.box(extents=[1, 1, 1]), node_name="Crate", geom_name="Crate",
                       transform=trimesh.transformations.translation_matrix([1, 0.5, 0]))
    scene.export(path)
    return path


def _level_export(folder: Path) -> Path:
    """``level.json`` + ``level.glb`` as ``ue_plugin/editor/export_level.py`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    _box_glb(folder / "level.glb")
    meta = {"format": "matrix-pano-ue-level/1", "level": "/Game/Maps/Tiny", "mesh": "level.glb",
            "objects": [{"name": "Crate", "class": "Landscape", "kind": "structure",
                         "bounds_cm": [[50, -50, 0], [150, 50, 100]]}],
            "spawn_points": [{"location_cm": [100, -200, 10], "yaw_deg": 90.0}]}
    path = folder / "level.json"
    path.write_text(json.dumps(meta))
    return path


def test_unreal_prefix_loads_through_the_entry_point(tmp_path):
    assert "unreal" not in sources._PREFIXES, "unreal: must come from ue_plugin's entry point, not dataset.sources"
    ep = sources._entry_points()["unreal"]
    assert ep.value == "ue_plugin.level:load_unreal_level"
    path = _level_export(tmp_path / "export")
    scene = load_scene(f" unreal:{path} ")
    assert isinstance(scene, Scene) and scene.name == f"unreal:{path}"
    assert scene.provenance["unreal_level"] == "/Game/Maps/Tiny"
    x, y, z, heading = scene.spawn_points[0]
    assert (x, y, z) == pytest.approx((1.0, 2.0, 0.1)) and heading == pytest.approx(-math.pi / 2)
    lo, hi = scene.bounds()
    assert hi - lo == pytest.approx([6, 8, 3], abs=1e-6)
    assert {o.name: o.kind for o in scene.objects}["Crate"] == "structure", "kinds from level.json win"
    assert "unreal:" in known_prefixes()


def test_unreal_errors_keep_their_messages(tmp_path):
    with pytest.raises(SceneError, match="export the level with"):
        load_scene(f"unreal:{tmp_path / 'missing.json'}")


def test_unknown_prefix_names_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SceneError) as err:
        load_scene("nosuch:thing")
    message = str(err.value)
    assert "\n" not in message and "unknown source prefix 'nosuch:'" in message
    for prefix in ("openarena:", "procedural:", "unreal:"):
        assert prefix in message
    assert "matrix_pano.scene_sources" in message


def test_prefix_looking_files_are_still_paths(tmp_path, monkeypatch):
    """Only registered names are prefixes: drive letters, colons in file names and mesh suffixes stay paths."""
    monkeypatch.chdir(tmp_path)
    _box_glb(tmp_path / "C:room.glb")  # a drive-letter-like relative path (a valid file name on POSIX)
    assert load_scene("C:room.glb").num_faces == 24
    _box_glb(tmp_path / "scan:room.glb")
    assert load_scene("scan:room.glb").name == "scan:room.glb"
    with pytest.raises(SceneError, match=r"mesh file .*does not exist"):  # the mesh loader's own message
        load_scene(r"C:\scenes\missing.glb")
    with pytest.raises(SceneError, match=r"mesh file .*does not exist"):
        load_scene("scan:missing.obj?up=z")
    (tmp_path / "notes:todo.txt").write_text("not a scene")
    with pytest.raises(SceneError, match="is not a supported scene"):  # an existing file: the mesh loader says why
        load_scene("notes:todo.txt")
    with pytest.raises(SceneError, match="does not exist"):  # a Quake 3 path, not an unknown prefix
        load_scene(f"{tmp_path / 'foo.pk3'}:map")


def test_mesh_query_suffix_routes_to_the_mesh_loader(tmp_path):
    path = _box_glb(tmp_path / "box.glb")
    scene = load_scene(f"{path}?up=y&scale=0.5")
    lo, hi = scene.bounds()
    assert hi - lo == pytest.approx([3, 4, 1.5], abs=1e-6) and scene.name == f"{path}?up=y&scale=0.5"
    with pytest.raises(SceneError, match="up axis 'w'"):
        load_scene(f"{path}?up=w")


def test_register_source_and_broken_entry_points(monkeypatch):
    made = []

    def loader(source: str) -> Scene:
        made.append(source)
        return load_scene("procedural:room:4x5x2.5")

    monkeypatch.setattr(sources, "_PREFIXES", dict(sources._PREFIXES))
    register_source("mytest:", loader)
    scene = load_scene("mytest:anything")
    assert made == ["mytest:anything"] and scene.name == "mytest:anything"
    with pytest.raises(ValueError, match="prefix"):
        register_source("x", loader)

    broken = EntryPoint(name="broken", value="no_such_module_for_matrix_pano:load", group=sources.ENTRY_POINT_GROUP)
    monkeypatch.setattr(sources, "_entry_points", lambda: {"broken": broken})
    with pytest.raises(SceneError, match="no_such_module_for_matrix_pano:load .*cannot be loaded"):
        load_scene("broken:x")
    register_source("bad", lambda source: "not a scene")
    with pytest.raises(SceneError, match="returned str, not a Scene"):
        load_scene("bad:x")


def test_loader_errors_are_wrapped_in_one_line(monkeypatch):
    monkeypatch.setattr(sources, "_PREFIXES", dict(sources._PREFIXES))
    register_source("oops", lambda source: np.zeros(2)[5])
    with pytest.raises(SceneError, match=r"^cannot load scene 'oops:1': index 5 is out of bounds"):
        load_scene("oops:1")


# --------------------------------------------------------------------------- layering


def _module_name(path: Path) -> str:
    rel = path.relative_to(SOURCES_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([SOURCES_PACKAGE, *parts])


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports, at any depth (function-level imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; project imports are absolute"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


SOURCE_FILES = sorted(SOURCES_DIR.rglob("*.py"))
MODULES = {_module_name(p): p for p in SOURCE_FILES}
PROJECT_ROOTS = ("dataset", "sampling", "annotation", "training", "inference", "ue_plugin")


def test_sources_import_only_core_and_themselves():
    assert "dataset.sources.quake3.loader" in MODULES, "the quake3 subpackage is scanned"
    for path in SOURCE_FILES:
        for name in _imports(path):
            assert not name.startswith("ue_plugin"), f"{path} imports {name}: ue_plugin registers by entry point"
            if name.split(".")[0] in PROJECT_ROOTS:
                assert name.startswith(("dataset.core", "dataset.sources")), f"{path} imports {name} (layer 1)"


def test_sources_have_no_import_cycles():
    graph = {mod: {n for n in _imports(path) if n in MODULES and n != mod} for mod, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(mod: str, trail: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*trail, mod, dep])}"
            if dep not in state:
                visit(dep, [*trail, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    for mod in MODULES:  # a submodule importing its own package's __init__ while __init__ imports it
        if mod.startswith("dataset.sources.quake3."):
            assert "dataset.sources.quake3" not in graph[mod], f"{mod} imports the quake3 package __init__"
