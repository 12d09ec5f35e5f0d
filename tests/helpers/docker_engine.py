"""A private Docker engine for the tests, and the exporter's image built in it without a registry.

``dockerd`` shares nothing with another engine on the host, running or not: it has its own data
root, exec root (and so its own containerd, socket and state below it), pid file, API socket and
daemon.json (an empty one: /etc/docker/daemon.json is another engine's), its own containerd
namespaces (where a system containerd is running, dockerd uses it rather than its own), and its
own bridge: one the helper makes, named for this engine, instead of ``docker0``, which another
engine may own and delete under it ("could not find bridge docker0"). With
``--iptables=false --ip-forward=false --ip-masq=false`` the host's firewall and forwarding
settings stay as they were. It is stopped by PID, and its bridge deleted, when the session ends.

Docker Hub is not reachable from CI, so the image's base is made here: a Debian bookworm
``debootstrap --variant=minbase`` from the mirror apt is configured to use, with Python and the
host's extra CA certificates (HTTPS leaves these machines through a TLS-intercepting proxy),
imported with ``docker import``. The tarball is cached, keyed by everything that goes into it,
so only the first run pays for debootstrap.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

# Debian's client: /usr/local/bin/docker may be another CLI (for instance a different engine's).
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
DEBOOTSTRAP = "/usr/sbin/debootstrap"

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# Bump when the recipe below changes in a way the key cannot see.
BASE_RECIPE = "1"
HOST_CAS = Path("/usr/local/share/ca-certificates")

IMAGE = "pixcrawler-exporter"  # the tag README's commands run
NETDEV = Path("/sys/class/net")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pixcrawler-exporter-tests"


# --- apt's mirror ------------------------------------------------------------------------------


def _one_line_sources(text: str) -> Iterator[tuple[str, list[str]]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "deb":
            rest = words[1:]
            if rest[0].startswith("["):  # options: deb [signed-by=...] URI SUITE ...
                while rest and not rest[0].endswith("]"):
                    rest = rest[1:]
                rest = rest[1:]
            if len(rest) >= 2:
                yield rest[0], [rest[1]]


def _deb822_sources(text: str) -> Iterator[tuple[str, list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def apt_mirror(etc: Path = Path("/etc/apt")) -> str | None:
    """The URI apt fetches SUITE's main archive from, or None when none is configured."""
    files = [etc / "sources.list"]
    listdir = etc / "sources.list.d"
    if listdir.is_dir():
        files += sorted(listdir.iterdir())
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".list" or path.name == "sources.list":
            entries = _one_line_sources(text)
        elif path.suffix == ".sources":
            entries = _deb822_sources(text)
        else:
            continue
        for uri, suites in entries:
            if SUITE in suites:
                return uri
    return None


# --- the engine ---------------------------------------------------------------------------------


@dataclass
class Engine:
    root: Path
    pid: int
    storage_driver: str
    proc: subprocess.Popen[bytes] | None = None
    bridge: str | None = None  # the bridge this engine's containers use, made for it; None: docker0

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,  # noqa: A002 - subprocess's name
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [DOCKER, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def shell(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command line as a reader would type it, with ``docker`` being Debian's client."""
        return subprocess.run(
            ["bash", "-c", f'docker() {{ {DOCKER} "$@"; }}\n{command}'],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")


def _ping(engine: Engine) -> bool:
    try:
        return engine.run("version", check=False, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _make_bridge() -> str:
    """A new Linux bridge for one engine: dockerd gives it a free subnet when it starts."""
    for _ in range(10):
        name = f"pxt{secrets.token_hex(5)}"  # at most 15 characters, as interface names are
        if not (NETDEV / name).exists():
            break
    for cmd in (["ip", "link", "add", name, "type", "bridge"], ["ip", "link", "set", name, "up"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            _delete_bridge(name)
            raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}: {done.stderr}")
    return name


def _delete_bridge(name: str) -> None:
    if (NETDEV / name).exists():
        subprocess.run(["ip", "link", "delete", name], capture_output=True)


def start_engine(
    storage_drivers: Sequence[str] = ("overlay2", "vfs"), own_network: bool = True
) -> Engine:
    """dockerd on its own socket, directories and bridge; the first storage driver that starts
    wins. ``own_network=False`` starts one as a stock engine is: on ``docker0``, in containerd's
    ``moby`` namespace (the other engine of the test that shows the two do not meet)."""
    root = Path(tempfile.mkdtemp(prefix="pixcrawler-docker-"))
    (root / "daemon.json").write_text("{}\n")
    bridge = _make_bridge() if own_network else None
    separate = (
        [
            f"--bridge={bridge}",
            f"--containerd-namespace={bridge}",
            f"--containerd-plugins-namespace={bridge}-plugins",
        ]
        if bridge is not None
        else []
    )
    failures = []
    for driver in storage_drivers:
        log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - dockerd keeps writing to it
        proc = subprocess.Popen(
            [
                DOCKERD,
                f"--config-file={root / 'daemon.json'}",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"--pidfile={root / 'dockerd.pid'}",
                f"--host=unix://{root / 'docker.sock'}",
                f"--storage-driver={driver}",
                *separate,
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=true",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on the test run reaches pytest, which stops it
        )
        log.close()
        engine = Engine(root, proc.pid, driver, proc, bridge)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (root / "docker.sock").exists() and _ping(engine):
                return engine
            time.sleep(0.2)
        _stop_pid(proc.pid, proc)
        failures.append(f"{driver}: {engine.log()[-2000:]}")
    if bridge is not None:
        _delete_bridge(bridge)
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError("dockerd did not start:\n" + "\n".join(failures))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaping it when it is our child: a zombie is gone too)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return True
    except ChildProcessError:
        pass  # not our child: someone else reaps it
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None, wait: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``wait`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if proc is not None else _gone(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()
    else:
        while not _gone(pid):
            time.sleep(0.1)


def stop_engine(engine: Engine) -> None:
    """Remove every container, then stop dockerd (and the containerd it started) by PID."""
    try:
        ids = engine.run("ps", "-aq", check=False, timeout=30).stdout.split()
        if ids:
            engine.run("rm", "-f", *ids, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        pass
    children = _children(engine.pid)
    _stop_pid(engine.pid, engine.proc)
    for child in children:  # containerd normally stops with dockerd; make sure
        if not _gone(child):
            _stop_pid(child, wait=10)
    # Leftover mounts (a killed daemon) would make rmtree walk into image layers.
    _umount_below(engine.root)
    # dockerd leaves a bridge behind; the one made for this engine goes with it.
    if engine.bridge is not None:
        _delete_bridge(engine.bridge)
    shutil.rmtree(engine.root, ignore_errors=True)


# --- the base image -----------------------------------------------------------------------------


def base_key(mirror: str) -> str:
    """Everything that goes into the base tarball, hashed: a change makes a new one."""
    h = hashlib.sha256()
    for part in (BASE_RECIPE, SUITE, mirror, *BASE_PACKAGES):
        h.update(part.encode() + b"\0")
    for ca in sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []:
        h.update(ca.name.encode() + b"\0" + ca.read_bytes())
    return h.hexdigest()[:16]


def base_tarball(mirror: str) -> Path:
    """The cached root filesystem tarball, made with debootstrap when it is not there yet."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"base-{SUITE}-{base_key(mirror)}.tar"
    if tarball.exists():
        return tarball
    work = Path(tempfile.mkdtemp(prefix="pixcrawler-rootfs-", dir=cache))
    try:
        rootfs = work / "rootfs"
        _check(
            [
                DEBOOTSTRAP,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            timeout=900,
        )
        # pip inside the image reaches the package index through the same proxy as the host.
        extra = rootfs / "usr/local/share/ca-certificates"
        extra.mkdir(parents=True, exist_ok=True)
        for ca in sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []:
            shutil.copy(ca, extra / ca.name)
        _check(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
        # The archives and lists are of no use in an image.
        _check(["chroot", str(rootfs), "apt-get", "clean"], timeout=120)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        # Written in this run's own directory and renamed when complete: a concurrent or an
        # interrupted run never leaves a half-written tarball under the final name.
        partial = work / "base.tar"
        _check(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], 600)
        partial.rename(tarball)
    finally:
        _umount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _umount_below(path: Path) -> None:
    prefix = f"{path}/"
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = line.split()[1]
        if target.startswith(prefix):  # not a sibling that merely shares the name's start
            subprocess.run(["umount", "-l", target], capture_output=True)


def _check(cmd: Sequence[str], timeout: float) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")


def import_base(engine: Engine, mirror: str) -> str:
    """The base image's tag in ``engine``, imported from the cached tarball."""
    tarball = base_tarball(mirror)
    tag = f"pixcrawler-test-base:{SUITE}-{base_key(mirror)}"
    if engine.run("image", "inspect", tag, check=False).returncode != 0:
        engine.run("import", str(tarball), tag, timeout=600)
    return tag


def readme_docker_commands() -> list[str]:
    """The shell commands of the Docker section of docs/deployment.md, continuation lines as
    written (README's own Docker commands are among them: tests/test_docs_site.py checks)."""
    text = (REPO / "docs/deployment.md").read_text()
    section = text.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def readme_build_without_registry() -> tuple[str, str]:
    """README's build command that names its base image, and the base it names."""
    (command,) = [
        c for c in readme_docker_commands() if c.startswith("docker build") and "PYTHON_IMAGE=" in c
    ]
    found = re.search(r"PYTHON_IMAGE=(\S+)", command)
    assert found is not None
    return command, found.group(1)


def build_image(engine: Engine, base: str) -> tuple[str, float]:
    """README's registry-free build on ``base``: (the base's name there, seconds it took)."""
    command, name = readme_build_without_registry()
    engine.run("tag", base, name)
    start = time.monotonic()
    done = engine.shell(command, timeout=900)
    if done.returncode != 0:
        raise AssertionError(
            f"{command}\nexited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return name, time.monotonic() - start
