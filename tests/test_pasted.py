"""Every shell block of README.md and docs/*.md works as pasted after the Quick start (issue 20,
item 2).

The blocks run as a reader runs them: in a fresh copy of the repository's tracked files whose
``.venv`` the Quick start's first command made (the block itself, run by the test, pip's cache
shared), each block with ``bash -euo pipefail`` from the copy's root, without the test's
``PIXCRAWLER_*`` variables or its virtual environment on ``PATH``. Between blocks the copy goes
back to that state: files a block wrote are removed, files it changed restored, and a ``.venv``
it installed into is put back, so no block passes on what another left behind.

A block without a marker must run and exit 0. A marker is an HTML comment on the last non-blank
line before the block's fence (invisible on GitHub and in the site):

- ``<!-- not run: REASON -->``: it cannot run here (a Kubernetes cluster, Azure, Docker Hub) or
  must not (the whole test suite, a benchmark of minutes); the reason is the skip's.
- ``<!-- run by tests/FILE.py::NAME -->``: another test runs it (the Docker recipes run under a
  real engine in tests/test_container.py); NAME must be defined in FILE. ``run by FILE`` without
  ``::`` means FILE holds each of the block's command lines verbatim (CI's script).
- ``<!-- serves: the test waits for URL/-/healthy, then stops it -->``: a command that serves
  until stopped (the Quick start's first among them). It runs in the background, in a process
  group of its own, until URL answers 200 (the port must be free before), and must still be
  running then; the group gets SIGTERM afterwards.
- ``<!-- run while the block above serves -->``: runs once the serving block before it answers
  (a reload signal, say), which must still serve afterwards.
- ``<!-- file: NAME -->`` before a block of another language (YAML): the page's file of that
  name; a reader who follows the page has saved it, so it is written into the copy before each
  shell block below it in the same document.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, http_get, need

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = frozenset({"sh", "bash", "shell", "console"})
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
HEALTHY = re.compile(r"https?://\S+/-/healthy")

INSTALL_TIMEOUT = 900  # the Quick start: a venv and pip install, from pip's cache or the index
BLOCK_TIMEOUT = 300
SERVE_TIMEOUT = 60
HOLD = 2.0  # how long a serving block must go on serving


@dataclass(frozen=True)
class Block:
    document: str  # relative to the repository
    line: int  # the opening fence's, 1-based
    lang: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    def script(self) -> str:
        """The commands: a console block's ``$ `` lines and their continuations, else all of it."""
        if self.lang != "console":
            return self.text
        commands: list[str] = []
        continued = False
        for line in self.text.splitlines():
            if continued or line.startswith("$ "):
                commands.append(line[2:] if not continued else line)
                continued = line.endswith("\\")
        return "\n".join(commands) + "\n"


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        end = i + 1
        while end < len(lines) and not re.match(
            rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]
        ):
            end += 1
        pad = " " * indent
        body = "\n".join(
            line[indent:] if line.startswith(pad) else line.lstrip() for line in lines[i + 1 : end]
        )
        above = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = MARKER.match(above)
        found.append(
            Block(
                document=str(path.relative_to(REPO)),
                line=i + 1,
                lang=(opened["info"].split() or [""])[0],
                text=textwrap.dedent(body) + "\n",
                marker=marker["text"] if marker else None,
            )
        )
        i = end + 1
    return found


ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks_of(path)]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.lang in SHELLS]


def kind(block: Block) -> str:
    """What the marker says to do: run, not run, run by, serves, while, file."""
    marker = block.marker or ""
    if not marker:
        return "run"
    for name, pattern in (
        ("not run", r"not run: \S"),
        ("run by", r"run by \S"),
        ("serves", r"serves: "),
        ("while", r"run while the block above serves$"),
        ("file", r"file: \S+$"),
    ):
        if re.match(pattern, marker):
            return name
    return "other"


def quick_start() -> Block:
    """README's Quick start's first command, which makes the .venv every later command uses."""
    lines = (REPO / "README.md").read_text().splitlines()
    heading = lines.index("## Quick start") + 1
    return next(b for b in SHELL_BLOCKS if b.document == "README.md" and b.line > heading)


def dependents(server: Block) -> list[Block]:
    """The blocks marked to run while ``server`` serves: those right after it in its document."""
    same = [b for b in SHELL_BLOCKS if b.document == server.document]
    after = same[same.index(server) + 1 :]
    found = []
    for block in after:
        if kind(block) != "while":
            break
        found.append(block)
    return found


# Blocks that are run as units: the serving ones take their dependents with them.
UNITS = [block for block in SHELL_BLOCKS if kind(block) != "while"]


# --- the markers themselves, without running anything -------------------------------------------


def test_the_documents_have_shell_blocks() -> None:
    documents = {block.document for block in SHELL_BLOCKS}
    assert {"README.md", "docs/deployment.md", "docs/alerting.md"} <= documents
    assert "python3 -m venv .venv" in quick_start().text


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.where)
def test_each_marker_is_one_the_convention_knows(block: Block) -> None:
    what = kind(block)
    assert what not in ("other", "file"), f"{block.where}: unknown marker <!-- {block.marker} -->"
    if what == "serves":
        assert HEALTHY.search(block.marker or ""), f"{block.where}: a serving block names its URL"
    if what == "while":
        same = [b for b in SHELL_BLOCKS if b.document == block.document]
        before = same[: same.index(block)]
        servers = [b for b in before if kind(b) != "while"]
        assert servers and kind(servers[-1]) == "serves", (
            f"{block.where} runs while the block above serves, and that block serves nothing"
        )


def test_file_markers_name_blocks_of_files() -> None:
    for block in ALL_BLOCKS:
        if kind(block) == "file":
            assert block.lang not in SHELLS, f"{block.where}: a shell block is not a file"
            name = Path((block.marker or "").removeprefix("file: "))
            assert not name.is_absolute() and ".." not in name.parts, f"{block.where}: {name}"


def test_quick_starts_first_command_serves() -> None:
    assert kind(quick_start()) == "serves", quick_start().marker


def defines(source: Path, name: str) -> bool:
    tree = ast.parse(source.read_text())
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        for node in tree.body
    )


def command_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def check_run_by(block: Block) -> None:
    target = (block.marker or "").removeprefix("run by ").split()[0]
    path, _, name = target.partition("::")
    source = REPO / path
    assert source.is_file(), f"{block.where} is run by {target}: there is no {path}"
    if name:
        assert defines(source, name), f"{block.where} is run by {target}: {path} has no {name}"
    else:
        lines = {line.strip() for line in source.read_text().splitlines()}
        missing = [line for line in command_lines(block.script()) if line not in lines]
        assert missing == [], f"{block.where} is run by {path}, which does not hold {missing}"


# --- the copy after the Quick start -------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The test's environment as a fresh shell's: no PIXCRAWLER_*, no virtual environment."""
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PIXCRAWLER_") and k not in dropped
    }
    ours = Path(sys.prefix, "bin").resolve() if sys.prefix != sys.base_prefix else None
    env["PATH"] = os.pathsep.join(
        part
        for part in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if part and Path(part).resolve() != ours
    )
    return env


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "core.autocrlf=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Checkout:
    """The fresh copy, its .venv made by the Quick start, and how to run a block in it."""

    root: Path
    scripts: Path
    pristine_venv: Path
    env: dict[str, str] = field(default_factory=clean_env)
    installed: list[str] = field(default_factory=list)  # what the Quick start installed

    def packages(self) -> list[str]:
        venv = self.root / ".venv"
        return sorted(str(p.relative_to(venv)) for p in venv.glob("lib/python*/site-packages/*"))

    def keep_venv(self) -> None:
        """This .venv is the one every block starts from."""
        shutil.copytree(self.root / ".venv", self.pristine_venv, symlinks=True)
        self.installed = self.packages()

    def reset(self) -> None:
        """Back to the state after the Quick start."""
        git("checkout", "-q", "--", ".", cwd=self.root)
        git("clean", "-fdxq", "-e", "/.venv", cwd=self.root)
        if self.packages() != self.installed:
            shutil.rmtree(self.root / ".venv")
            shutil.copytree(self.pristine_venv, self.root / ".venv", symlinks=True)

    def prepare(self, block: Block) -> Path:
        """The block's script, and the page's files above it written into the copy."""
        for earlier in ALL_BLOCKS:
            above = earlier.document == block.document and earlier.line < block.line
            if above and kind(earlier) == "file":
                name = (earlier.marker or "").removeprefix("file: ")
                (self.root / name).write_text(earlier.text)
        # Named for where it is, not for what it runs: `pidof -x` matches scripts by name.
        script = self.scripts / (block.where.replace("/", "-").replace(":", "-line") + ".sh")
        script.write_text(block.script())
        return script

    def start(self, block: Block) -> Served:
        script = self.prepare(block)
        log = script.with_suffix(".log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-euo", "pipefail", str(script)],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        return Served(proc, log)

    def run(self, block: Block, timeout: float = BLOCK_TIMEOUT) -> None:
        served = self.start(block)
        try:
            served.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{block.where} did not finish within {timeout}s:\n{report(block, served)}"
            ) from None
        finally:
            stop_group(served.proc)  # whatever it left running in the background
        missing = re.search(r": ([^:\s]+): command not found", served.output())
        if served.proc.returncode == 127 and missing:
            # The project's own commands are in .venv/bin, not on PATH: a document's error.
            # Another tool (promtool, redis-server) is one this machine lacks.
            ours = (self.root / ".venv/bin" / missing[1]).exists()
            assert not ours, f"{block.where} runs {missing[1]}: write .venv/bin/{missing[1]}"
            need(False, f"{missing[1]} is not installed ({block.where} runs it)")
        assert served.proc.returncode == 0, (
            f"{block.where} exited with {served.proc.returncode}:\n{report(block, served)}"
        )

    def serve(self, block: Block, timeout: float = SERVE_TIMEOUT) -> None:
        """Run a serving block with its dependents."""
        found = HEALTHY.search(block.marker or "")
        assert found, block.marker
        url = found[0]
        port = urllib.parse.urlsplit(url).port or 80
        need(port_is_free(port), f"port {port} is taken here: {block.where} serves there")
        served = self.start(block)
        try:
            wait_healthy(block, served, url, timeout)
            # Serving means going on serving: a while later it still answers, and nothing it
            # started (the Celery event listener, say) found a module the install lacks.
            time.sleep(HOLD)
            wait_healthy(block, served, url, 10)
            assert "No module named" not in served.output(), (
                f"{block.where} serves without a module its install should have brought:\n"
                + report(block, served)
            )
            for dependent in dependents(block):
                self.run(dependent)
                assert served.proc.poll() is None, (
                    f"{block.where} stopped after {dependent.where} ran:\n{report(block, served)}"
                )
                wait_healthy(block, served, url, 10)
        finally:
            stop_group(served.proc)


def report(block: Block, served: Served) -> str:
    return f"--- {block.where} ---\n{block.script()}--- its output ---\n{served.output()}"


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def wait_healthy(block: Block, served: Served, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = served.proc.poll()
        assert code is None, f"{block.where} exited with {code}:\n{report(block, served)}"
        try:
            if http_get(url, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, (
            f"{url} did not answer within {timeout}s:\n{report(block, served)}"
        )
        time.sleep(0.2)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the block's process group, SIGKILL to what is left of it after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 10
        while group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reaps the leader: a zombie would keep the group alive
            time.sleep(0.1)
        if not group_alive(proc.pid):
            break
    proc.wait(5)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def copy_tracked_files(dest: Path) -> None:
    """The repository's tracked files as they are in the work tree (changes not yet committed
    included), as a git repository of its own so that it can be put back after each block."""
    listed = git("ls-files", "-z", cwd=REPO).split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)


@pytest.fixture(scope="module")
def after_quick_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    need(shutil.which("git") is not None, "git is not installed")
    need((REPO / ".git").exists(), "the repository is not a git checkout")
    base = tmp_path_factory.mktemp("pasted")
    checkout = Checkout(base / "checkout", base / "scripts", base / "venv-after-quick-start")
    checkout.root.mkdir()
    checkout.scripts.mkdir()
    copy_tracked_files(checkout.root)
    checkout.serve(quick_start(), timeout=INSTALL_TIMEOUT)
    checkout.keep_venv()
    yield checkout


# --- the blocks, run ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", UNITS, ids=lambda b: b.where)
def test_block_works_as_pasted(block: Block, request: pytest.FixtureRequest) -> None:
    what = kind(block)
    if what == "not run":
        pytest.skip(f"{block.where}: {block.marker}")
    if what == "run by":
        check_run_by(block)
        return
    assert what in ("run", "serves"), f"{block.where}: <!-- {block.marker} -->"
    checkout: Checkout = request.getfixturevalue("after_quick_start")
    if block == quick_start():
        # The fixture ran it: this is the .venv every other block uses.
        assert (checkout.root / ".venv/bin/pixcrawler-exporter").exists()
        return
    try:
        if what == "serves":
            checkout.serve(block)
        else:
            checkout.run(block)
    finally:
        checkout.reset()


def test_a_failing_command_fails_its_block(after_quick_start: Checkout) -> None:
    # Not only the last command counts, nor only the last stage of a pipeline: bash -euo pipefail.
    for text in ("false\ntrue\n", "false | true\n", "echo $UNSET_NAME\n"):
        block = Block("README.md", 0, "sh", text, None)
        with pytest.raises(AssertionError, match=r"README\.md:0 exited with 1"):
            after_quick_start.run(block)


def test_the_projects_commands_are_not_on_path(after_quick_start: Checkout) -> None:
    # After the Quick start nothing is activated: a bare console script is the document's error.
    block = Block("README.md", 0, "sh", "pixcrawler-exporter --version\n", None)
    with pytest.raises(AssertionError, match=r"write \.venv/bin/pixcrawler-exporter"):
        after_quick_start.run(block)


def test_each_block_starts_from_the_quick_start(after_quick_start: Checkout) -> None:
    checkout = after_quick_start
    readme = (checkout.root / "README.md").read_text()
    leaves = "touch left.yml && echo changed >> README.md && .venv/bin/pip uninstall -qy bcrypt\n"
    checkout.run(Block("README.md", 0, "sh", leaves, None))
    checkout.reset()
    assert not (checkout.root / "left.yml").exists()
    assert (checkout.root / "README.md").read_text() == readme
    checkout.run(Block("README.md", 0, "sh", ".venv/bin/python -c 'import bcrypt'\n", None))
