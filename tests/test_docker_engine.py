"""The tests' Docker engine beside another one: nothing of the other's is used or removed.

A developer's machine often runs its own Docker engine, with its ``docker0`` bridge. An engine
that used that bridge failed with "could not find bridge docker0" as soon as the bridge went away
with the engine that owned it (8 failures in one full run). Here another engine, started the way
a stock one is (on ``docker0``, in containerd's ``moby`` namespace), runs first; the tests'
engine starts beside it, publishes a container's port, and still does after the other engine
and its ``docker0`` are gone. Select with ``-m docker``.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, need
from tests.helpers.docker_engine import (
    DEBOOTSTRAP,
    DOCKER,
    DOCKERD,
    NETDEV,
    Engine,
    apt_mirror,
    import_base,
    start_engine,
    stop_engine,
)

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.slow]

DOCKER0 = NETDEV / "docker0"


def serves(engine: Engine, base: str, name: str) -> int:
    """Run a web server in ``engine`` published on a loopback port; the answer's status."""
    port = free_port()
    engine.run(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
        base, "python3", "-m", "http.server", "8000",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                return int(resp.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines the test starts, each stopped at the end; docker0 as the host had it."""
    need(os.geteuid() == 0, "starting a Docker engine needs root")
    for tool in (DOCKER, DOCKERD):
        need(Path(tool).is_file(), f"{tool} is not installed (Debian's docker.io)")
    need(Path(DEBOOTSTRAP).is_file(), f"{DEBOOTSTRAP} is not installed (Debian's debootstrap)")
    had_docker0 = DOCKER0.exists()
    started: list[Engine] = []
    try:
        yield started
    finally:
        for engine in reversed(started):
            stop_engine(engine)
        if not had_docker0 and DOCKER0.exists():
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True)


def test_the_tests_engine_runs_beside_another_and_outlives_its_bridge(
    engines: list[Engine],
) -> None:
    mirror = apt_mirror()
    need(mirror is not None, "apt has no Debian bookworm source to debootstrap a base image from")
    assert mirror is not None
    # Another engine first, as a stock one runs: docker0 is its bridge.
    other = start_engine(own_network=False)
    engines.append(other)
    assert DOCKER0.exists()
    ours = start_engine()
    engines.append(ours)
    assert ours.bridge is not None and ours.bridge != "docker0"
    assert (NETDEV / ours.bridge).exists()
    base = import_base(ours, mirror)
    assert serves(ours, base, "beside") == 200
    info = ours.run(
        "network", "inspect", "bridge", "-f", '{{index .Options "com.docker.network.bridge.name"}}'
    )
    assert info.stdout.strip() == ours.bridge
    # The other engine goes, and its bridge with it (as the engine that made it removes it).
    engines.remove(other)
    stop_engine(other)
    subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True)
    assert not DOCKER0.exists()
    assert serves(ours, base, "after") == 200
    # Stopped, ours takes its own bridge away and nothing else.
    bridge = ours.bridge
    engines.remove(ours)
    stop_engine(ours)
    assert not (NETDEV / bridge).exists()
