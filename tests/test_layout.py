"""The package's seams, checked on the source: configuration names no source."""

from __future__ import annotations

import ast
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


def test_configuration_imports_no_source() -> None:
    # A source declares its own section and hands it over through its registration: a new
    # source touches no file in config/.
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path) if m.startswith("pixcrawler_exporter.collectors")
        )
        for path in sorted((PACKAGE / "config").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
