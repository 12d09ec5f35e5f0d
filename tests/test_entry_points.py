"""Every entry point the docs name exists and runs: module paths, the console script and its
commands. A module that moves keeps its documented path (issue 20, item 6)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, test_env

DOCUMENTS = [
    REPO / "README.md",
    REPO / "Dockerfile",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted((REPO / "deploy").rglob("*.y*ml")),
    *sorted((REPO / "bench").glob("*.md")),
]
# The paths of the first READMEs, which compose files and --health-cmds were written against.
FORMER = ["pixcrawler_exporter.healthcheck"]


def documented_modules() -> list[str]:
    found: set[str] = set(FORMER)
    for path in DOCUMENTS:
        found |= set(re.findall(r"python3? -m (pixcrawler_exporter(?:\.\w+)*)", path.read_text()))
    return sorted(found)


def console_script() -> str:
    # The venv's script beside its interpreter, as the Quick start installs it.
    script = Path(sys.executable).with_name("pixcrawler-exporter")
    assert script.exists(), f"{script}: install the package (pip install -e '.[test]')"
    return str(script)


@pytest.mark.parametrize("module", documented_modules())
def test_each_documented_module_path_runs(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} is documented but gone"
    source = Path(spec.origin)
    if source.name == "__init__.py":
        source = source.with_name("__main__.py")
    assert 'if __name__ == "__main__":' in source.read_text() or source.name == "__main__.py"


def test_the_former_health_check_path_still_checks(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pixcrawler_exporter.healthcheck", "http://127.0.0.1:1/-/healthy"],
        env=test_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Runs the check (no exporter is running here): unhealthy, exit 1, no ModuleNotFoundError.
    assert run.returncode == 1 and run.stderr.startswith("unhealthy: "), run.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--version"], "pixcrawler-exporter 0.1.0"),
        (["--help"], "--web.listen-address"),
        (["healthcheck", "--help"], "exit 0 when *this* exporter is live"),
        (["rules", "--help"], "--config"),
    ],
)
def test_the_console_script_and_its_commands(tmp_path: Path, args: list[str], says: str) -> None:
    run = subprocess.run(
        [console_script(), *args],
        env=test_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert says in run.stdout + run.stderr
