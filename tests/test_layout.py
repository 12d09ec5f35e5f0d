"""The package's seams, checked on the source: no import cycle, configuration names no source,
no source computes derived facts, no module grows past a few hundred lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "pixcrawler_exporter"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, TYPE_CHECKING blocks and function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def importers(folder: str, prefix: str) -> dict[str, list[str]]:
    """The files below ``folder`` of the package that import a module named ``prefix...``."""
    found = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path) if m.startswith(prefix)
        )
        for path in sorted((PACKAGE / folder).rglob("*.py"))
    }
    return {k: v for k, v in found.items() if v}


def test_configuration_imports_no_source() -> None:
    # A source declares its own section and hands it over through its registration: a new
    # source touches no file in config/.
    assert importers("config", "pixcrawler_exporter.collectors") == {}


def test_no_source_imports_derived_facts() -> None:
    # A collector reads its source into a reading; statuses, capacity and quotas are built
    # from readings in derive/, so a collector knows no threshold or quota.
    assert importers("collectors", "pixcrawler_exporter.derive") == {}


# Small modules with one job: past this a module holds more than one and is split at its seam.
MAX_MODULE_LINES = 450


def test_no_module_over_the_line_limit() -> None:
    over = {
        str(path.relative_to(REPO)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}; split each at its seam"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def runtime_imports(name: str, path: Path) -> Iterator[str]:
    """What a module imports when it runs: TYPE_CHECKING blocks left out, function bodies in
    (an import deferred to a call is still a dependency), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                yield from visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                yield from (f"{base}.{alias.name}" for alias in node.names)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from visit([child])

    yield from visit(ast.parse(path.read_text(), str(path)).body)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports. A name a package re-exports (config's, loaded
    on first use) counts as an import of the module that defines it."""
    mods = modules()
    reexported = {
        f"{name}.{alias.asname or alias.name}": node.module
        for name, path in mods.items()
        if path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(name + ".")
        for alias in node.names
    }

    def module_of(target: str) -> str | None:
        if target in reexported:
            return reexported[target]
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    return {
        name: {
            found
            for target in runtime_imports(name, path)
            if (found := module_of(target)) is not None and found != name
        }
        for name, path in mods.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_the_package() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
