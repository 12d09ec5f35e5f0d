"""The image, run for real: a private Docker engine builds it and runs it as operators would.

Every `docker run` in README's Docker section is executed as written, and the Kubernetes
manifests' securityContext, mounts and memory limits are reproduced as docker flags, so a recipe
that fails or a manifest that would crash-loop fails here. Select these with ``-m docker``.
Traffic goes to loopback only: ports are published on 127.0.0.1 or the container shares the
host's network.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme
import yaml

from pixcrawler_exporter import __version__
from tests.conftest import (
    Exporter,
    Samples,
    foreign_server,
    free_port,
    need,
    parse_samples,
    sample,
)
from tests.docker_engine import (
    DEBOOTSTRAP,
    DOCKER,
    DOCKERD,
    IMAGE,
    Engine,
    apt_mirror,
    build_image,
    import_base,
    start_engine,
    stop_engine,
)

pytestmark = pytest.mark.docker

UID = 65532
# What both Kubernetes manifests promise: readOnlyRootFilesystem, capabilities drop ALL,
# allowPrivilegeEscalation false.
HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


# --- the engine and the image -------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    need(os.geteuid() == 0, "starting a Docker engine needs root")
    for tool in (DOCKER, DOCKERD):
        need(Path(tool).is_file(), f"{tool} is not installed (Debian's docker.io)")
    started = start_engine()
    try:
        yield started
    finally:
        stop_engine(started)


@dataclass(frozen=True)
class Image:
    tag: str
    base: str


@pytest.fixture(scope="session")
def image(engine: Engine) -> Image:
    need(Path(DEBOOTSTRAP).is_file(), f"{DEBOOTSTRAP} is not installed (Debian's debootstrap)")
    mirror = apt_mirror()
    need(mirror is not None, "apt has no Debian bookworm source to debootstrap a base image from")
    assert mirror is not None
    base = import_base(engine, mirror)
    build_image(engine, base)
    return Image(IMAGE, base)


# --- containers ---------------------------------------------------------------------------------


@dataclass
class Container:
    engine: Engine
    name: str
    url: str | None  # where the test reaches the exporter; None when it is not reachable

    def inspect(self, template: str) -> str:
        return self.engine.run("inspect", "-f", template, self.name).stdout.strip()

    def health(self) -> str:
        return self.inspect("{{if .State.Health}}{{.State.Health.Status}}{{end}}")

    def health_log(self) -> str:
        return self.inspect("{{if .State.Health}}{{json .State.Health.Log}}{{end}}")

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.run("exec", self.name, *cmd, check=check)

    def status(self) -> dict[str, str]:
        """/proc/1/status of the container's main process, as the container sees it."""
        lines = self.exec("cat", "/proc/1/status").stdout.splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def wait_health(self, want: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.health()) != want:
            assert self.running(), f"{self.name} exited:\n{self.logs()}"
            assert time.monotonic() < deadline, (
                f"{self.name} is {state!r}, not {want!r} after {timeout}s\n"
                f"health log: {self.health_log()}\n{self.logs()}"
            )
            time.sleep(0.25)

    def wait_serving(self, timeout: float = 60, context: ssl.SSLContext | None = None) -> None:
        assert self.url is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if get(self.url + "/-/healthy", context=context)[0] == 200:
                    return
            except OSError:
                pass
            assert self.running(), f"{self.name} exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"{self.name} does not serve:\n{self.logs()}"
            time.sleep(0.1)

    def scrape(self, headers: dict[str, str] | None = None, **kw: Any) -> Samples:
        assert self.url is not None
        status, body = get(self.url + "/metrics", headers, **kw)
        assert status == 200, body
        return parse_samples(body.decode())


def get(
    url: str,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# Health checks every second, so that healthy and unhealthy are reached in seconds; the image's
# own command and timeout are kept.
FAST_HEALTH = ("--health-interval=1s", "--health-start-period=5s", "--health-retries=3")

RunContainer = Callable[..., Container]


@pytest.fixture
def run_container(engine: Engine, image: Image) -> Iterator[RunContainer]:
    """``docker run -d`` of the image: published on a loopback port unless the test networks it."""
    names: list[str] = []

    def run(
        *flags: str,
        args: Sequence[str] = (),
        url: str | None = "publish",
        health: Sequence[str] = FAST_HEALTH,
        serve: bool = True,
    ) -> Container:
        name = f"pixtest-{len(names)}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        publish: list[str] = []
        if url == "publish":
            port = free_port()
            publish = ["-p", f"127.0.0.1:{port}:8395"]
            url = f"http://127.0.0.1:{port}"
        engine.run("run", "-d", "--name", name, *health, *publish, *flags, image.tag, *args)
        names.append(name)
        container = Container(engine, name, url)
        if serve and url is not None and url.startswith("http:"):
            container.wait_serving()
        return container

    yield run
    if names:
        engine.run("rm", "-f", *names, check=False)


def labels_of(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels), _ in samples.items() if n == name]


# --- limits, user, hardening --------------------------------------------------------------------


def test_memory_and_cpu_limits_are_the_containers(run_container: RunContainer) -> None:
    c = run_container("--memory", "300m", "--cpus", "0.5")
    samples = c.scrape()
    assert sample(samples, "pixcrawler_memory_limit_bytes") == 314572800
    assert sample(samples, "pixcrawler_cpu_limit_cores") == 0.5
    (info,) = labels_of(samples, "pixcrawler_environment_info")
    assert info["environment"] == "docker"


def test_runs_as_65532_with_a_named_group_and_no_capabilities(run_container: RunContainer) -> None:
    c = run_container()
    status = c.status()
    assert status["Uid"].split() == [str(UID)] * 4
    assert status["Gid"].split() == [str(UID)] * 4
    assert status["CapEff"] == "0000000000000000"
    assert status["CapPrm"] == "0000000000000000"
    assert (
        c.exec("id").stdout.strip()
        == f"uid={UID}(exporter) gid={UID}(exporter) groups={UID}(exporter)"
    )


def test_labels_follow_the_package_and_the_base(engine: Engine, image: Image) -> None:
    labels = json.loads(
        engine.run("image", "inspect", "-f", "{{json .Config.Labels}}", image.tag).stdout
    )
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.base.name"] == image.base
    assert labels["org.opencontainers.image.title"] == "pixcrawler-exporter"


def test_read_only_without_capabilities_or_privileges(run_container: RunContainer) -> None:
    # What both manifests promise (readOnlyRootFilesystem, drop ALL, no privilege escalation),
    # with nothing writable mounted: not even /tmp.
    c = run_container(*HARDENED)
    samples = c.scrape()
    (build,) = labels_of(samples, "pixcrawler_exporter_build_info")
    assert build["version"] == __version__
    c.wait_health("healthy")
    status = c.status()
    assert status["NoNewPrivs"] == "1"
    assert status["CapBnd"] == "0000000000000000"
    assert c.exec("touch", "/tmp/x", check=False).returncode != 0  # really read-only


# --- the HEALTHCHECK ----------------------------------------------------------------------------


def test_healthy_on_the_images_defaults(run_container: RunContainer) -> None:
    run_container().wait_health("healthy")


def test_health_follows_listen_given_as_an_argument(
    run_container: RunContainer, exporter_factory: Callable[..., Exporter]
) -> None:
    # The issue's case: on the host's network with --listen elsewhere, while another exporter
    # answers at the address the environment names. Only the container's own exporter counts.
    decoy = exporter_factory()
    port = free_port()
    c = run_container(
        "--network",
        "host",
        "-e",
        f"PIXCRAWLER_LISTEN={decoy.url.removeprefix('http://')}",
        args=["--listen", f"127.0.0.1:{port}"],
        url=f"http://127.0.0.1:{port}",
    )
    c.wait_health("healthy")
    # Stopped (as a hung process is), the exporter no longer answers; the decoy still does.
    c.engine.run("kill", "--signal", "SIGSTOP", c.name)
    c.wait_health("unhealthy", timeout=90)
    assert decoy.get("/-/healthy")[0] == 200


def test_health_refuses_another_exporter_at_a_given_url(
    run_container: RunContainer, exporter_factory: Callable[..., Exporter]
) -> None:
    other = exporter_factory()
    command = "python -m pixcrawler_exporter.web.healthcheck {}/-/healthy"
    mine = run_container(
        "--network",
        "host",
        "--health-cmd",
        command.format(other.url),
        args=["--listen", f"127.0.0.1:{free_port()}"],
        url=None,
    )
    mine.wait_health("unhealthy", timeout=90)
    assert "not by this container's exporter" in mine.health_log()


def test_unhealthy_once_the_exporter_is_gone_and_another_server_answers(
    run_container: RunContainer, tmp_path: Path
) -> None:
    port = free_port()
    # The exporter as a child of a shell that outlives it, so the container keeps running.
    script = (
        f"pixcrawler-exporter --listen 127.0.0.1:{port} & echo $! > /dev/shm/exporter.pid; "
        "wait; exec sleep 3600"
    )
    c = run_container(
        "--network",
        "host",
        "--entrypoint",
        "sh",
        args=["-c", script],
        url=f"http://127.0.0.1:{port}",
    )
    c.wait_health("healthy")
    c.exec("sh", "-c", "kill $(cat /dev/shm/exporter.pid)")
    with foreign_server(port):
        assert get(f"http://127.0.0.1:{port}/-/healthy")[0] == 200
        c.wait_health("unhealthy", timeout=90)
    assert c.running()


def test_tls_and_basic_auth_read_only(run_container: RunContainer, tmp_path: Path) -> None:
    ca = trustme.CA()
    web = tmp_path / "web"
    web.mkdir()
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(web / "server.pem")
    )
    hashed = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(4)).decode()
    (web / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "/etc/pixcrawler/server.pem",
                    "key_file": "/etc/pixcrawler/server.pem",
                },
                "basic_auth_users": {"prometheus": hashed},
            }
        )
    )
    # The container's user reads them through the bind mount; the test directory stays private.
    web.chmod(0o755)
    for f in web.iterdir():
        f.chmod(0o644)
    port = free_port()
    c = run_container(
        *HARDENED,
        "-v",
        f"{web}:/etc/pixcrawler:ro",
        "-p",
        f"127.0.0.1:{port}:8395",
        args=["--web.config.file=/etc/pixcrawler/web.yml"],
        url=None,
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    base = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if get(base + "/-/healthy", context=context)[0] == 200:
                break
        except OSError:
            pass
        assert c.running() and time.monotonic() < deadline, c.logs()
        time.sleep(0.1)
    assert get(base + "/metrics", context=context)[0] == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-pw").decode()}
    status, body = get(base + "/metrics", auth, context=context)
    assert status == 200 and b"pixcrawler_exporter_build_info" in body
    c.wait_health("healthy")
