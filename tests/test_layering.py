"""The layer rules of docs/architecture.md, enforced on every import of the project's packages.

Every import counts: module level, inside functions, under ``if TYPE_CHECKING:``, in try/except, and
``importlib.import_module("literal")`` calls. The checks are functions of a root folder so that the
self-tests at the bottom can run them on a small fake tree.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("dataset", "sampling", "annotation", "ue_plugin", "inference", "training")
"""Top-level project packages whose modules are checked."""
ROOT_ALIASES = {"dataset": "dataset.core"}
"""Bare root packages that follow another row's rules (``dataset/__init__.py`` is layer 0)."""
CLI = "dataset.cli"
DOC = "docs/architecture.md"
HEADER = ["layer", "package", "owns", "may import"]
SKIP_DIRS = {".venv", "__pycache__"}
_BACKTICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`")


@dataclass(frozen=True)
class Import:
    """One resolved import of a project module: who imports what, where."""

    source: str
    target: str
    path: str
    line: int


@dataclass
class Tree:
    """The project's modules (name -> path relative to the root), their imports and parse errors."""

    modules: dict[str, str]
    imports: list[Import]
    errors: list[str]


# --------------------------------------------------------------------------- the layer table


def parse_layer_table(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """{package: packages it may import} from the layer table of docs/architecture.md, and problems found."""
    doc = root / DOC
    if not doc.is_file():
        return {}, [f"{DOC} is missing: it must hold the layer table ({' | '.join(HEADER)})"]
    table: dict[str, set[str]] = {}
    problems: list[str] = []
    columns: list[str] | None = None
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if not line.lstrip().startswith("|"):
            if table:
                break  # the first layer table ended
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if columns is None:
            if [cell.lower() for cell in cells] == HEADER:
                columns = cells
            continue
        if len(cells) != len(HEADER):
            problems.append(f"{DOC}:{number}: a layer-table row needs {len(HEADER)} cells, got {len(cells)}")
            continue
        package = _BACKTICKED.fullmatch(cells[1])
        if package is None:
            continue  # the |---| separator, or a row without a package
        if package.group(1) in table:
            problems.append(f"{DOC}:{number}: package {package.group(1)} has two rows")
        table[package.group(1)] = set(_BACKTICKED.findall(cells[3]))
    if not table:
        problems.append(f"{DOC} has no layer table with the columns | {' | '.join(HEADER)} |")
    for package, allowed in sorted(table.items()):
        for name in sorted(allowed - table.keys()):
            problems.append(f"{DOC}: {package} may import {name}, which has no row of its own")
    return table, problems


def layer_of(module: str, table: dict[str, set[str]]) -> str | None:
    """The table row a module belongs to: the longest matching package (root aliases apply)."""
    module = ROOT_ALIASES.get(module, module)
    matches = [package for package in table if module == package or module.startswith(package + ".")]
    return max(matches, key=len) if matches else None


# --------------------------------------------------------------------------- collecting imports


def module_name(relative: Path) -> str:
    """Dotted module name of a .py file path relative to the root (``a/b/__init__.py`` -> ``a.b``)."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path) -> dict[str, Path]:
    """{module name: file} of every .py file of the project packages under ``root``."""
    files: dict[str, Path] = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if not SKIP_DIRS.intersection(relative.parts):
                files[module_name(relative)] = path
    return files


def _is_project(name: str) -> bool:
    """Whether a dotted name belongs to one of the project packages."""
    return name.split(".")[0] in PROJECT_PACKAGES


def _existing(name: str, modules: dict[str, str]) -> str:
    """The longest prefix of ``name`` that is a project module (the name itself when none is)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return name


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, str]) -> list[str]:
    """Project modules that one AST node imports, resolved to module names."""
    if isinstance(node, ast.Import):
        return [_existing(alias.name, modules) for alias in node.names if _is_project(alias.name)]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        if not _is_project(prefix):
            return []
        found = [f"{prefix}.{alias.name}" for alias in node.names if f"{prefix}.{alias.name}" in modules]
        if len(found) < len(node.names):
            found.append(_existing(prefix, modules))  # names that are not submodules come from the package
        return found
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        arg = node.args[0].value
        if name in ("import_module", "__import__") and isinstance(arg, str) and _is_project(arg):
            return [_existing(arg, modules)]
    return []


def collect(root: Path) -> Tree:
    """Every project module under ``root`` and every import of a project module it makes."""
    files = project_files(root)
    modules = {name: path.relative_to(root).as_posix() for name, path in files.items()}
    imports: list[Import] = []
    errors: list[str] = []
    for name, path in files.items():
        relative = modules[name]
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        except (SyntaxError, UnicodeDecodeError) as exc:
            errors.append(f"{relative}: cannot be parsed ({exc})")
            continue
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            for target in _targets(node, name, is_package, modules):
                imports.append(Import(name, target, relative, getattr(node, "lineno", 0)))
    imports.sort(key=lambda i: (i.path, i.line, i.target))
    return Tree(modules, imports, errors)


# --------------------------------------------------------------------------- checks


def check_layers(root: Path) -> list[str]:
    """Failures of the layer rules: modules in no layer, and imports the table does not allow."""
    table, failures = parse_layer_table(root)
    tree = collect(root)
    failures += tree.errors
    if not table:
        return failures
    for module, path in sorted(tree.modules.items()):
        if layer_of(module, table) is None:
            failures.append(f"module {module} ({path}) is in no layer of {DOC}: add its package to the table")
    for imp in tree.imports:
        source, target = layer_of(imp.source, table), layer_of(imp.target, table)
        if source is None:
            continue  # reported above
        where = f"{imp.path}:{imp.line} imports {imp.target}"
        if target is None:
            failures.append(f"{where}, which is in no layer of {DOC}")
        elif target != source and target not in table[source]:
            allowed = ", ".join(sorted(table[source])) or "nothing"
            failures.append(f"{where} ({source} may import only: {allowed}) — see {DOC}")
    return failures


def check_cli_imports(root: Path) -> list[str]:
    """Imports of ``dataset.cli`` from modules outside it."""
    failures = []
    for imp in collect(root).imports:
        inside = imp.source == CLI or imp.source.startswith(CLI + ".")
        if not inside and (imp.target == CLI or imp.target.startswith(CLI + ".")):
            failures.append(f"{imp.path}:{imp.line} imports {imp.target}: nothing outside {CLI} may import {CLI}")
    return failures


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of a directed graph (iterative Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _shortest_cycle(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """Shortest cycle start -> ... -> start inside one component (breadth-first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node] & members):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if succ not in parent:
                parent[succ] = node
                queue.append(succ)
    return [start, start]  # unreachable for a member of a non-trivial component


def find_cycles(root: Path) -> list[str]:
    """Import cycles between project modules: for each module on one, the shortest cycle through it."""
    tree = collect(root)
    graph: dict[str, set[str]] = {name: set() for name in tree.modules}
    first: dict[tuple[str, str], Import] = {}
    for imp in tree.imports:
        if imp.target in graph and imp.target != imp.source:
            graph[imp.source].add(imp.target)
            first.setdefault((imp.source, imp.target), imp)
    failures = list(tree.errors)
    seen: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        for start in component:
            cycle = _shortest_cycle(start, graph, set(component))
            ring = cycle[:-1]
            key = tuple(ring[ring.index(min(ring)):] + ring[: ring.index(min(ring))])
            if key in seen:
                continue
            seen.add(key)
            edges = [first[edge] for edge in zip(cycle[:-1], cycle[1:], strict=True)]
            where = "; ".join(f"{e.path}:{e.line} imports {e.target}" for e in edges)
            failures.append(f"import cycle {' -> '.join(cycle)} ({where})")
    return failures


def _report(failures: list[str], what: str) -> str:
    """One assertion message listing every failure."""
    return f"{len(failures)} {what}:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- the real tree


def test_layer_rules() -> None:
    failures = check_layers(REPO)
    assert not failures, _report(failures, f"layer violations (rules: {DOC})")


def test_nothing_outside_cli_imports_cli() -> None:
    failures = check_cli_imports(REPO)
    assert not failures, _report(failures, f"imports of {CLI} from outside it")


def test_no_import_cycles() -> None:
    failures = find_cycles(REPO)
    assert not failures, _report(failures, "import cycles (function-level imports count)")


# --------------------------------------------------------------------------- the checks can fail

FAKE_TABLE = """# Architecture

| layer | package | owns | may import |
|---|---|---|---|
| 0 | `dataset.core` | foundations (`a.py`) | — |
| 5 | `dataset.cli` | the command | `dataset.core` |
"""


def _write(root: Path, files: dict[str, str]) -> None:
    """Write a fake tree: {relative path: text}."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A clean two-layer tree: the CLI imports the core, the core imports only itself."""
    _write(tmp_path, {
        "docs/architecture.md": FAKE_TABLE,
        "dataset/__init__.py": "",
        "dataset/core/__init__.py": "from .a import f\n",
        "dataset/core/a.py": "from __future__ import annotations\n\nimport os\n\nfrom . import b\n\n\ndef f():\n"
                             "    return os, b\n",
        "dataset/core/b.py": "X = 1\n",
        "dataset/cli/__init__.py": "from dataset.core import a\nfrom ..core.b import X\n",
    })
    return tmp_path


def test_clean_fake_tree_passes(fake: Path) -> None:
    assert check_layers(fake) == []
    assert check_cli_imports(fake) == []
    assert find_cycles(fake) == []


def test_function_level_upward_import_is_reported(fake: Path) -> None:
    _write(fake, {"dataset/core/b.py": "X = 1\n\n\ndef g():\n    import dataset.cli\n\n    return dataset.cli\n"})
    rule = "dataset/core/b.py:5 imports dataset.cli (dataset.core may import only: nothing) — see docs/architecture.md"
    assert check_layers(fake) == [rule]
    assert check_cli_imports(fake) == [
        "dataset/core/b.py:5 imports dataset.cli: nothing outside dataset.cli may import dataset.cli"]


def test_type_checking_and_relative_imports_count(fake: Path) -> None:
    _write(fake, {"dataset/core/b.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                       "    from .. import cli\n"})
    assert check_layers(fake) == [
        "dataset/core/b.py:4 imports dataset.cli (dataset.core may import only: nothing) — see docs/architecture.md"]


def test_module_in_no_layer_is_reported(fake: Path) -> None:
    _write(fake, {"dataset/jobs/__init__.py": "", "sampling/paths.py": "import dataset.core.a\n"})
    failures = check_layers(fake)
    assert "module dataset.jobs (dataset/jobs/__init__.py) is in no layer of docs/architecture.md: " \
           "add its package to the table" in failures
    assert any(f.startswith("module sampling.paths (sampling/paths.py) is in no layer") for f in failures)


def test_function_level_cycle_is_reported(fake: Path) -> None:
    _write(fake, {"dataset/core/b.py": "def g():\n    from dataset.core import a\n\n    return a\n"})
    assert find_cycles(fake) == [
        "import cycle dataset.core.a -> dataset.core.b -> dataset.core.a "
        "(dataset/core/a.py:5 imports dataset.core.b; dataset/core/b.py:2 imports dataset.core.a)"]


def test_missing_table_is_reported(fake: Path) -> None:
    (fake / "docs/architecture.md").write_text("# Architecture\n\nNo table.\n", encoding="utf-8")
    assert check_layers(fake) == ["docs/architecture.md has no layer table with the columns "
                                  "| layer | package | owns | may import |"]
