"""README is the user's manual: its references are generated, its test command is CI's."""

from __future__ import annotations

import re
import subprocess
import sys

from pixcrawler_exporter.artifacts import reference
from tests.conftest import REPO, need_tool


def test_reference_tables_are_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert reference.render_readme(readme) == readme, (
        "README's config or metric reference is stale: run "
        "`python -m pixcrawler_exporter.artifacts.reference README.md`"
    )


def test_ci_runs_readmes_test_command_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme.split("## Quick start", 1)[1], re.S)
    run_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert "pixcrawler-exporter" in run_cmd
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert test_cmd in ci


def test_every_metric_in_the_code_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for path in (REPO / "pixcrawler_exporter").rglob("*.py"):
        for name in re.findall(r'"(pixcrawler_[a-z0-9_]+)"', path.read_text()):
            if name == "pixcrawler_exporter":
                continue  # the package's logger, not a metric
            assert f"`{name}`" in readme, f"{name} ({path.name}) is not in README"


def test_ruff_and_mypy_are_clean() -> None:
    ruff = subprocess.run(
        [need_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert ruff.returncode == 0, ruff.stdout
    mypy = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert mypy.returncode == 0, mypy.stdout
