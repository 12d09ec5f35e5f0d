"""The image, run for real: a private Docker engine builds it and runs it as operators would.

Every `docker run` in the Docker section of docs/deployment.md (README's among them) is
executed as written, and the Kubernetes
manifests' securityContext, mounts and memory limits are reproduced as docker flags, so a recipe
that fails or a manifest that would crash-loop fails here. Select these with ``-m docker``.
Traffic goes to loopback only: ports are published on 127.0.0.1 or the container shares the
host's network.
"""

from __future__ import annotations

import base64
import json
import os
import socket
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

from pixcrawler_exporter import __version__, environment
from tests.conftest import (
    REPO,
    Exporter,
    Samples,
    foreign_server,
    free_port,
    need,
    parse_samples,
    sample,
)
from tests.helpers.docker_engine import (
    DEBOOTSTRAP,
    DOCKER,
    DOCKERD,
    IMAGE,
    Engine,
    apt_mirror,
    build_image,
    import_base,
    readme_docker_commands,
    start_engine,
    stop_engine,
)

# e2e and slow too, so the fast inner loop (-m "not e2e and not slow") leaves them out.
pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.slow]

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
    named, _ = build_image(engine, import_base(engine, mirror))
    return Image(IMAGE, named)


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
        """/proc/PID/status of the container's main process (read on the host: in a PID
        namespace it shares with another container, it is not PID 1)."""
        pid = self.inspect("{{.State.Pid}}")
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
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


# --- README's recipes, run as written -----------------------------------------------------------


def readme_runs() -> list[str]:
    return [c for c in readme_docker_commands() if c.startswith("docker run")]


def sidecar(command: str) -> bool:
    return "--network container:" in command


def on_host_rslave(command: str) -> bool:
    return "--pid=host" in command and ":ro,rslave" in command


def on_host_private(command: str) -> bool:
    return "--pid=host" in command and ":ro,rslave" not in command


def recipe(kind: Callable[[str], bool]) -> str:
    (command,) = [c for c in readme_runs() if kind(c)]
    return command


def test_every_docker_run_in_readme_has_its_test() -> None:
    runs = readme_runs()
    assert len(runs) == 3, runs
    for command in runs:
        assert [kind(command) for kind in (sidecar, on_host_rslave, on_host_private)].count(
            True
        ) == 1, command


@pytest.fixture
def readme_names(engine: Engine) -> Iterator[None]:
    """README's commands name their containers; a test's leftovers must not block the next."""
    names = ("pixcrawler-exporter", "pixcrawler-worker")
    engine.run("rm", "-f", *names, check=False)
    yield
    engine.run("rm", "-f", *names, check=False)


def run_readme(engine: Engine, command: str) -> None:
    done = engine.shell(command)
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"


def health_command(c: Container) -> list[str]:
    """The image's HEALTHCHECK command, run now rather than every 30 s."""
    test = json.loads(c.inspect("{{json .Config.Healthcheck.Test}}"))
    assert test[0] == "CMD", test
    return list(test[1:])


def interfaces(proc_net_dev: str) -> set[str]:
    lines = proc_net_dev.splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines} - {"lo"}


def wait_for(c: Container, name: str, timeout: float = 60, **labels: str) -> Samples:
    """Scrape until the sample is there (the temp storage scan runs in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = c.scrape()
        if sample(samples, name, **labels) is not None:
            return samples
        assert time.monotonic() < deadline, f"no {name} {labels}:\n{c.logs()}"
        time.sleep(0.5)


# A stand-in for the crawler's worker (`celery -A app.worker worker`, as seed 004 runs it):
# holds MODE's bytes, says "ready", sleeps. anon: memory of its own; cache: a file written and
# read back (as the crawler does with its images), which stays in the page cache.
WORKER = """
import sys, time
mode, mib = sys.argv[1], int(sys.argv[2])
if mode == "anon":
    held = b"x" * (mib << 20)
elif mode == "cache":
    with open("/tmp/chunk.bin", "wb") as f:
        for _ in range(mib):
            f.write(b"x" * (1 << 20))
    with open("/tmp/chunk.bin", "rb") as f:
        while f.read(1 << 20):
            pass
print("ready", flush=True)
time.sleep(3600)
"""
WORKER_USER = "65532:65532"  # the exporter image's: README's recipe runs the exporter as it


def start_worker(
    engine: Engine,
    image: Image,
    port: int,
    *flags: str,
    mode: str = "none",
    user: str = WORKER_USER,
) -> None:
    """README's pixcrawler-worker: its port published, a temp volume, its user; ``mode`` and
    the 250 MiB it holds as in WORKER."""
    engine.run(
        "run", "-d", "--name", "pixcrawler-worker", "-p", f"127.0.0.1:{port}:8395",
        "-v", "/tmp/pixcrawler", "--user", user, *flags,
        "--entrypoint", "python3", image.base, "-c", WORKER,
        mode, "250", "celery", "-A", "app.worker", "worker",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while "ready" not in (logs := engine.run("logs", "pixcrawler-worker").stdout):
        state = engine.run("inspect", "-f", "{{.State.Status}}", "pixcrawler-worker").stdout
        assert state.strip() == "running", f"the worker {state}:{logs}"
        assert time.monotonic() < deadline, "the worker is not ready after 120 s"
        time.sleep(0.5)


def test_readme_sidecar(engine: Engine, image: Image, readme_names: None) -> None:
    # The crawler container the sidecar joins: its network and PID namespaces and a temp volume
    # with the crawler's files in it (three images of 3445 bytes together, and a file of
    # another kind).
    port = free_port()
    start_worker(engine, image, port, "--memory", "300m", "--cpus", "0.5")
    engine.run(
        "exec", "-u", "0", "pixcrawler-worker", "sh", "-c",
        "cd /tmp/pixcrawler && head -c 1000 /dev/zero > a.jpg && head -c 2345 /dev/zero > b.PNG"
        " && head -c 7 /dev/zero > notes.txt && mkdir sub && head -c 100 /dev/zero > sub/c.webp",
    )  # fmt: skip
    run_readme(engine, recipe(sidecar))
    c = Container(engine, "pixcrawler-exporter", f"http://127.0.0.1:{port}")
    c.wait_serving()
    samples = wait_for(c, "pixcrawler_temp_storage_files", directory="/tmp/pixcrawler")
    # Memory and CPU are the worker's, against its limits; the exporter's own apart.
    assert sample(samples, "pixcrawler_memory_limit_bytes") == 300 * 2**20
    assert sample(samples, "pixcrawler_cpu_limit_cores") == 0.5
    assert sample(samples, "pixcrawler_exporter_memory_limit_bytes") == host_meminfo_total()
    own = sample(samples, "pixcrawler_exporter_memory_working_set_bytes")
    assert own is not None and own > 0
    assert sample(samples, "pixcrawler_temp_storage_files", directory="/tmp/pixcrawler") == 3
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory="/tmp/pixcrawler") == 3445
    volume_size = engine.run(
        "exec", "pixcrawler-worker", "python3", "-c",
        "import os; s = os.statvfs('/tmp/pixcrawler'); print(s.f_blocks * s.f_frsize)",
    ).stdout  # fmt: skip
    assert sample(samples, "pixcrawler_disk_size_bytes", path="/tmp/pixcrawler") == int(volume_size)
    # The worker's network namespace: its interfaces, not the exporter's own.
    worker_nics = interfaces(engine.run("exec", "pixcrawler-worker", "cat", "/proc/net/dev").stdout)
    scraped = {
        labels["interface"]
        for labels in labels_of(samples, "pixcrawler_network_receive_bytes_total")
    }
    assert scraped == worker_nics and worker_nics
    (info,) = labels_of(samples, "pixcrawler_environment_info")
    assert info["environment"] == "docker"
    # --no-collector.database --no-collector.azure: the sidecar leaves those to the cluster.
    collectors = {
        c["collector"] for c in labels_of(samples, "pixcrawler_exporter_collector_success")
    }
    assert "memory" in collectors and not collectors & {"database", "azure"}
    health = c.exec(*health_command(c), check=False)
    assert health.returncode == 0, health.stderr


@pytest.mark.parametrize("mode", ["anon", "cache"])
def test_readme_sidecar_memory_is_the_workers(
    engine: Engine, image: Image, readme_names: None, mode: str
) -> None:
    # 250 of the worker's 300 MiB held: as its own memory the sidecar's memory status must
    # say so; as page cache (images written and read back), which the kernel drops before
    # anything is killed, it must not.
    port = free_port()
    start_worker(engine, image, port, "--memory", "300m", mode=mode)
    run_readme(engine, recipe(sidecar))
    c = Container(engine, "pixcrawler-exporter", f"http://127.0.0.1:{port}")
    c.wait_serving()
    samples = wait_for(c, "pixcrawler_resource_usage_ratio", resource="memory")
    ratio = sample(samples, "pixcrawler_resource_usage_ratio", resource="memory")
    status = sample(samples, "pixcrawler_resource_status", resource="memory")
    usage = sample(samples, "pixcrawler_memory_usage_bytes")
    assert ratio is not None and usage is not None
    print(f"{mode}: memory ratio {ratio:.3f}, status {status}, usage {usage / 2**20:.1f} MiB")
    assert sample(samples, "pixcrawler_memory_limit_bytes") == 300 * 2**20
    assert usage >= 250 * 2**20  # the worker's cgroup holds the bytes either way
    if mode == "anon":
        assert ratio >= 0.8 and status is not None and status >= 1
    else:
        assert ratio < 0.5 and status == 0
    own = sample(samples, "pixcrawler_exporter_memory_working_set_bytes")
    assert own is not None and own < 100 * 2**20  # the exporter, apart


def test_readme_sidecar_beside_a_root_worker_says_why_it_cannot_read(
    engine: Engine, image: Image, readme_names: None
) -> None:
    # Root, with Docker's default capabilities: the kernel keeps the exporter (65532, none) out
    # of the worker's mounts. Not the exporter's own 30 MB reported as the worker's: a failure.
    port = free_port()
    start_worker(engine, image, port, "--memory", "300m", user="0:0")
    run_readme(engine, recipe(sidecar))
    c = Container(engine, "pixcrawler-exporter", f"http://127.0.0.1:{port}")
    c.wait_serving()
    samples = c.scrape()
    for collector in ("memory", "cpu", "pressure"):
        assert sample(samples, "pixcrawler_exporter_collector_success", collector=collector) == 0
    assert sample(samples, "pixcrawler_memory_limit_bytes") is None
    assert sample(samples, "pixcrawler_resource_status", resource="memory") is None
    status, body = get(f"http://127.0.0.1:{port}/health")
    assert status == 503
    assert b"it runs as UID 0 GID 0, the exporter as UID 65532 GID 65532" in body, body


def root_propagation() -> str:
    """shared, slave or private: how the host's / propagates mounts (what Docker checks)."""
    found = "private"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":  # the last one listed is the one on top
            optional = fields[6 : fields.index("-")]
            found = next(
                (kind for tag, kind in (("shared:", "shared"), ("master:", "slave"))
                 if any(o.startswith(tag) for o in optional)),
                "private",
            )  # fmt: skip
    return found


def host_meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def test_readme_on_host(engine: Engine, image: Image, readme_names: None) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8395))
        except OSError:
            pytest.fail("port 8395 is taken on this host: README's on-host command listens there")
    if root_propagation() == "private":
        # What README says happens here, and what it says to run instead.
        refused = engine.shell(recipe(on_host_rslave))
        assert refused.returncode != 0
        assert "is not a shared or slave mount" in refused.stderr, refused.stderr
        assert Container(engine, "pixcrawler-exporter", None).inspect("{{.State.Status}}") == (
            "created"
        )  # so README says to remove it
        engine.run("rm", "pixcrawler-exporter")
        run_readme(engine, recipe(on_host_private))
    else:
        run_readme(engine, recipe(on_host_rslave))
    c = Container(engine, "pixcrawler-exporter", "http://127.0.0.1:8395")
    c.wait_serving()
    samples = c.scrape()
    host_nics = interfaces(Path("/proc/net/dev").read_text())
    # What the exporter would say run on the host itself ("local" on an ordinary host; a host
    # that is itself a container image, as CI's VMs are, has its own /.dockerenv).
    (info,) = labels_of(samples, "pixcrawler_environment_info")
    assert info["environment"] == environment.detect({}, Path("/"), Path("/proc"))
    st = os.statvfs("/")
    assert sample(samples, "pixcrawler_disk_size_bytes", path="/") == st.f_blocks * st.f_frsize
    assert sample(samples, "pixcrawler_host_memory_total_bytes") == host_meminfo_total()
    scraped = {
        labels["interface"]
        for labels in labels_of(samples, "pixcrawler_network_receive_bytes_total")
    }
    assert scraped == host_nics
    health = c.exec(*health_command(c), check=False)
    assert health.returncode == 0, health.stderr


# --- the Kubernetes manifests, as docker flags --------------------------------------------------

MANIFESTS = REPO / "deploy/kubernetes"
# Values for the Secret the manifests read (README, Kubernetes); optional keys left out, as in a
# cluster where they are not set. Nothing listens at this database: the collector reports it.
SECRET = {"database-url": "postgresql://exporter:not-a-secret@127.0.0.1:1/pixcrawler"}
SECURITY_KEYS = {
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",  # RuntimeDefault: Docker's default profile applies anyway
}


def is_exporter(container: dict[str, Any]) -> bool:
    return bool(container["image"].split(":")[0] == "pixcrawler-exporter")


def exporter_pods() -> list[tuple[str, dict[str, Any]]]:
    """(id, pod spec) of every Deployment in the manifests with a pixcrawler-exporter in it."""
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            if any(is_exporter(c) for c in pod["containers"]):
                found.append((f"{path.name}:{doc['metadata']['name']}", pod))
    return found


def quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text.removesuffix(suffix)) * factor)
    return int(text)


def docker_flags(
    pod: dict[str, Any], container: dict[str, Any], volumes: dict[str, str]
) -> list[str]:
    """What the kubelet would set up for ``container``, as `docker run` flags; ``volumes``
    names the Docker volume of each of the pod's volumes (one for the whole pod)."""
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert set(security) <= SECURITY_KEYS, f"not reproduced here: {set(security) - SECURITY_KEYS}"
    flags: list[str] = []
    if "runAsUser" in security:
        group = security.get("runAsGroup", security["runAsUser"])
        flags += ["--user", f"{security['runAsUser']}:{group}"]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for cap in security.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    for cap in security.get("capabilities", {}).get("add", []):
        flags += ["--cap-add", cap]
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        flags += ["--memory", f"{quantity_bytes(limits['memory'])}b"]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        flags += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    declared = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = declared[mount["name"]]
        assert set(volume) == {"name", "emptyDir"}, f"not reproduced here: {volume}"
        # Named, because Docker refuses read-only anonymous volumes; the private engine's data
        # root, and the volume with it, goes at the end of the session.
        spec = f"type=volume,source={volumes[mount['name']]},destination={mount['mountPath']}"
        flags += ["--mount", spec + (",readonly" if mount.get("readOnly") else "")]
    for var in container.get("env", []):
        if "value" in var:
            flags += ["-e", f"{var['name']}={var['value']}"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if ref["key"] in SECRET:
            flags += ["-e", f"{var['name']}={SECRET[ref['key']]}"]
        else:
            assert ref.get("optional"), f"{var['name']}: no value for secret key {ref['key']}"
    return flags


RunPod = Callable[[dict[str, Any]], Container]


@pytest.fixture
def run_pod(engine: Engine, image: Image) -> Iterator[RunPod]:
    """Every container of a pod spec, in order, as `docker run -d`: the first holds the pod's
    network namespace (and its PID namespace, with shareProcessNamespace), which the others
    join; the pod's port is published on loopback. Returns the exporter's container."""
    started: list[str] = []

    def run(pod: dict[str, Any]) -> Container:
        suffix = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
        volumes = {v["name"]: f"pixtest-{v['name']}-{suffix}" for v in pod.get("volumes", [])}
        port = free_port()
        exporter: Container | None = None
        for container in pod["containers"]:
            name = f"pixtest-{container['name']}-{suffix}"
            flags = docker_flags(pod, container, volumes)
            if not started:
                flags += ["-p", f"127.0.0.1:{port}:8395"]
            else:
                flags += ["--network", f"container:{started[0]}"]
                if pod.get("shareProcessNamespace"):
                    flags += ["--pid", f"container:{started[0]}"]
            if is_exporter(container):
                command = [image.tag, *container.get("args", [])]
                flags += FAST_HEALTH
                exporter = Container(engine, name, f"http://127.0.0.1:{port}")
            else:
                # The crawler's image is not here: a stand-in with its user, limits, mounts and
                # command line, holding nothing but the Python that runs it.
                command = [
                    "--entrypoint", "python3", image.base, "-c", "import time; time.sleep(3600)",
                    *container.get("command", []), *container.get("args", []),
                ]  # fmt: skip
            engine.run("run", "-d", "--name", name, *flags, *command)
            started.append(name)
        assert exporter is not None
        exporter.wait_serving()
        return exporter

    yield run
    if started:
        engine.run("rm", "-f", *started, check=False)


@pytest.mark.parametrize("pod", [pytest.param(pod, id=ident) for ident, pod in exporter_pods()])
def test_kubernetes_manifest_as_docker_flags(run_pod: RunPod, pod: dict[str, Any]) -> None:
    (container,) = [c for c in pod["containers"] if is_exporter(c)]
    c = run_pod(pod)
    # runAsNonRoot: the kubelet refuses to start a container whose user is root.
    assert c.status()["Uid"].split()[0] != "0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert set(ports.values()) == {8395}  # what the test publishes
    for kind in ("livenessProbe", "readinessProbe"):
        if kind in container:
            probe = container[kind]["httpGet"]
            assert probe.get("scheme", "HTTP") == "HTTP" and probe["port"] in ports
            assert c.url is not None
            assert get(c.url + probe["path"])[0] == 200, kind
    samples = c.scrape()
    c.wait_health("healthy")
    # Still the first process, within its memory limit, after a few scrapes and health checks.
    for _ in range(5):
        c.scrape()
        time.sleep(1)
    assert c.inspect("{{.State.Running}} {{.State.OOMKilled}} {{.RestartCount}}") == "true false 0"
    rss_kib = int(c.status()["VmRSS"].split()[0])
    own_limit = container.get("resources", {}).get("limits", {}).get("memory")
    if own_limit is not None:
        assert rss_kib * 1024 < quantity_bytes(own_limit)
    # Beside a crawler, the pod's memory and CPU figures are the crawler's, against its limits;
    # the exporter's own container is reported apart.
    crawlers = [other for other in pod["containers"] if not is_exporter(other)]
    if crawlers:
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="memory") == 1
        host = host_meminfo_total()
        limit = quantity_bytes(crawlers[0]["resources"]["limits"]["memory"])
        assert sample(samples, "pixcrawler_memory_limit_bytes") == min(limit, host)
        if own_limit is not None:
            assert sample(samples, "pixcrawler_exporter_memory_limit_bytes") == min(
                quantity_bytes(own_limit), host
            )


def test_a_stale_version_label_fails_the_build(engine: Engine, image: Image) -> None:
    # The label is a build argument; the build refuses one that is not the package's version.
    done = engine.run(
        "build", "--build-arg", f"PYTHON_IMAGE={image.base}", "--build-arg", "VERSION=0.0.0",
        "--network", "host", "-t", "pixtest-stale", str(REPO), check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"VERSION=0.0.0 but pixcrawler_exporter.__version__ is {__version__}" in (
        done.stdout + done.stderr
    )
