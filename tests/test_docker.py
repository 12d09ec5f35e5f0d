"""The image, without a Docker engine: hadolint on the Dockerfile, then what the image does.

The second test follows the Dockerfile: it builds the wheel from the files the Dockerfile copies,
installs it into a fresh virtual environment as an unprivileged user, starts the ENTRYPOINT as
that user and runs the HEALTHCHECK command against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pixcrawler_exporter import __version__, config
from tests.conftest import REPO, free_port, http_get, need, need_tool

DOCKERFILE = REPO / "Dockerfile"
UNPRIVILEGED = 65534  # nobody


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> dict[str, str]:
    stages: list[dict[str, str]] = []
    for word, rest in instructions():
        if word == "FROM":
            stages.append({})
        elif stages:
            stages[-1][word] = rest
    return stages[-1]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def test_hadolint_is_clean() -> None:
    hadolint = need_tool("hadolint")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_image_metadata() -> None:
    stage = final_stage()
    assert stage["EXPOSE"] == str(config.DEFAULT_PORT)
    user = stage["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, for Kubernetes' runAsNonRoot
    assert exec_form(stage["ENTRYPOINT"]) == ["pixcrawler-exporter"]
    assert "CMD" not in stage  # arguments to `docker run IMAGE ...` reach the exporter as they are
    labels = stage["LABEL"]
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    healthcheck = stage["HEALTHCHECK"]
    assert "--timeout=" in healthcheck and "--interval=" in healthcheck
    copied = [rest.split()[0] for word, rest in instructions() if word == "COPY"]
    assert copied == ["pyproject.toml", "pixcrawler_exporter", "--from=build"]
    assert '"${PYTHON_IMAGE}"' in labels  # the base it was really built on, not fixed text


def test_builds_with_the_classic_builder_and_pulls_only_its_base() -> None:
    # Debian's docker.io 20.10 builds without BuildKit, which rejects RUN --mount; a `# syntax=`
    # line would make BuildKit pull a frontend image from a registry for nothing.
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    for word, rest in instructions():
        assert not (word == "RUN" and rest.startswith("--")), rest
    bases = [rest.split()[0] for word, rest in instructions() if word == "FROM"]
    assert bases == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_version_label_is_the_packages_version() -> None:
    # The build stage fails when VERSION differs from __version__; this catches it without one.
    defaults = re.findall(r"^ARG VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert defaults and set(defaults) == {__version__}
    assert 'org.opencontainers.image.version="${VERSION}"' in final_stage()["LABEL"]


# --- what the image does -----------------------------------------------------------------------


def _as_user() -> dict[str, Any]:
    """subprocess arguments that drop to an unprivileged user when we are root."""
    return {"user": UNPRIVILEGED, "group": UNPRIVILEGED} if os.geteuid() == 0 else {}


def _python_for_user() -> str | None:
    """A Python >= 3.11 with venv that the unprivileged user may run (root's may be hidden)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if not candidate:
            continue
        try:
            ok = subprocess.run(
                [
                    candidate,
                    "-c",
                    "import sys, venv, ensurepip; assert sys.version_info >= (3, 11)",
                ],
                capture_output=True,
                cwd="/",
                timeout=30,
                **_as_user(),
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if ok.returncode == 0:
            return candidate
    return None


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not tmp_path: pytest's base directory is private to root, and the user must reach this.
    path = Path(tempfile.mkdtemp(prefix="pixcrawler-image-"))
    path.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(path, UNPRIVILEGED, UNPRIVILEGED)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(cmd: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, **_as_user()
    )
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout + done.stderr)


@pytest.mark.e2e
@pytest.mark.slow
def test_wheel_in_a_venv_serves_and_passes_its_healthcheck(scratch: Path) -> None:
    python = _python_for_user()
    need(python is not None, "no Python >= 3.11 with venv that an unprivileged user can run")
    assert python is not None
    stage = final_stage()
    entrypoint = exec_form(stage["ENTRYPOINT"])
    healthcheck = exec_form(stage["HEALTHCHECK"].split("CMD", 1)[1].strip())

    # Build stage: the files the Dockerfile copies, and nothing else.
    src = scratch / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "pixcrawler_exporter",
        src / "pixcrawler_exporter",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    wheels = scratch / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("pixcrawler_exporter-*.whl")
    if os.geteuid() == 0:
        for path in (wheels, wheel):
            os.chown(path, UNPRIVILEGED, UNPRIVILEGED)

    # Run stage, as the unprivileged user from here on.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXCRAWLER_", "PYTHON"))}
    env.update(HOME=str(scratch), PIP_NO_CACHE_DIR="1")
    venv = scratch / "venv"
    _run([python, "-m", "venv", str(venv)], env, scratch)
    _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)], env, scratch)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"

    # Basic auth in the web config needs bcrypt: the wheel must bring it along.
    hashed = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import bcrypt; print(bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode())",
        ],
        capture_output=True,
        text=True,
        env=env,
        **_as_user(),
    )
    assert hashed.returncode == 0, "bcrypt is not installed with the wheel:\n" + hashed.stderr
    web_yml = scratch / "web.yml"
    web_yml.write_text(f"basic_auth_users:\n  prometheus: '{hashed.stdout.strip()}'\n")
    web_yml.chmod(0o644)

    port = free_port()
    env.update(
        PIXCRAWLER_LISTEN=f"127.0.0.1:{port}",
        PIXCRAWLER_WEB_CONFIG_FILE=str(web_yml),
        PIXCRAWLER_TEMP_DIRS=str(scratch),
    )
    proc = subprocess.Popen(
        [shutil.which(entrypoint[0], path=env["PATH"]) or entrypoint[0], *entrypoint[1:]],
        env=env,
        cwd=scratch,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **_as_user(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            health = subprocess.run(
                healthcheck, env=env, cwd=scratch, capture_output=True, text=True, **_as_user()
            )
            if health.returncode == 0:
                break
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, health.stderr
            time.sleep(0.2)
        uid = _uid_of(proc.pid)
        assert uid != 0 and (os.geteuid() != 0 or uid == UNPRIVILEGED)
        url = f"http://127.0.0.1:{port}/metrics"
        assert http_get(url)[0] == 401
        status, _, body = http_get(url, {"Authorization": "Basic cHJvbWV0aGV1czpwdw=="})
        assert status == 200 and b"pixcrawler_exporter_build_info" in body
    finally:
        proc.terminate()
        proc.wait(10)
    # The same check fails once nothing serves: it can tell.
    dead = subprocess.run(healthcheck, env=env, cwd=scratch, capture_output=True, **_as_user())
    assert dead.returncode != 0


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")
