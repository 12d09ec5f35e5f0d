"""The documentation builds as a site in strict mode, and no internal link is broken: the site's
own (Sphinx with MyST refuses a missing page or heading) and README's into the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need

LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.slow
def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    need(_has("sphinx") and _has("myst_parser"), "sphinx and myst-parser are not installed")
    strict = ["-W", "--keep-going", "-n", "-q", "-b", "html"]
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", *strict, str(REPO / "docs"), str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "index.html").exists()


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub (and MyST, as configured) gives a document's headings."""
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, re.M):
        text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading).lower()
        found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def test_readmes_links_into_the_repository_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    broken = []
    for target in LINK.findall(readme):
        if re.match(r"[a-z]+:", target):
            continue  # a URL: not checked, the tests have no network
        path, _, anchor = target.partition("#")
        file = REPO / path if path else REPO / "README.md"
        missing_anchor = (
            file.exists()
            and bool(anchor)
            and file.suffix == ".md"
            and anchor not in github_anchors(file.read_text())
        )
        if not file.exists() or missing_anchor:
            broken.append(target)
    assert broken == []


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_readmes_docker_commands_are_the_ones_the_container_tests_run() -> None:
    # tests/test_container.py runs every docker command of docs/deployment.md's Docker section;
    # README shows some of them, which must be exactly those.
    from tests.helpers.docker_engine import readme_docker_commands

    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Run it in Docker\n", 1)[1].split("\n## ", 1)[0]
    shown = [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]
    assert shown and set(shown) <= set(readme_docker_commands())
