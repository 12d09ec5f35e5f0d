"""A real redis-server (Debian's) for the tests: the broker and result backend of tests/minicrawler.

Take the fixtures as a plugin: ``pytest_plugins = ["tests.helpers.redis_server"]``.

Fixtures
    ``redis_server`` (session)
        One server without a password for the whole session, started on first use (about 10 ms).
    ``broker`` (function)
        That server, running and thawed again if an earlier test stopped or froze it, emptied
        (``FLUSHALL``) and with ``maxmemory``/``maxmemory-policy`` back to none/noeviction.
    ``redis_factory`` (function)
        ``redis_factory(password=..., maxmemory=..., maxmemory_policy=...)`` starts a server of
        its own (a password, a memory limit); each is destroyed at the end of the test.

:class:`RedisServer`
    ``url(db=0)`` the ``redis://`` URL, the password percent-encoded (``url(password="wrong")``
    for a refused one); ``client(db=0)`` a redis-py client; ``stop()`` (SIGTERM, waits for the
    exit) and ``start()`` again on the same port, or ``restart()`` (the "broker restarted"
    scenario: every key is gone, persistence is off); ``kill()`` (SIGKILL); ``freeze()`` /
    ``thaw()`` or ``with server.frozen():`` (SIGSTOP/SIGCONT: a hung broker that still holds its
    connections open); ``keys()`` every key with its Redis type, for looking at what Celery left.

Every server listens on 127.0.0.1 on a free port, with ``save ""``, ``appendonly no`` and its own
temporary directory; its settings, the password among them, go in a 0600 config file rather than
on the command line, where ``ps`` would show them. A server dies with the test process even when
pytest itself is killed (PR_SET_PDEATHSIG), and the fixtures stop theirs when a test fails.
A missing redis-server skips the test, or fails it under PIXCRAWLER_TEST_STRICT=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redispy

from tests.conftest import free_port, need
from tests.helpers.processes import die_with_parent

HOST = "127.0.0.1"
# Every character a URL, a config file or a shell could trip over, and some that are not ASCII.
ODD_PASSWORD = "p a\"s's@w:o/r%d#?&=+\\ é€✓ \t;"


def find_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def _quoted(value: str) -> str:
    """``value`` as one double-quoted redis.conf argument: every byte but [A-Za-z0-9] as \\xHH."""
    return (
        '"'
        + "".join(
            chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}"
            for b in value.encode()
        )
        + '"'
    )


class PortTakenError(RuntimeError):
    pass


class RedisServer:
    """One redis-server process; ``stop()``/``start()`` keep its port and settings."""

    def __init__(
        self,
        binary: str,
        *,
        password: str | None = None,
        maxmemory: int | None = None,
        maxmemory_policy: str | None = None,
    ) -> None:
        self.binary = binary
        self.password = password
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.root = Path(tempfile.mkdtemp(prefix="pixredis-"))
        self.log_path = self.root / "redis.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds from spawn to the first PONG, last start

    # --- addresses ------------------------------------------------------------------------------

    def url(self, db: int = 0, *, password: str | None = None) -> str:
        """``redis://[:password@]127.0.0.1:port/db``; ``password`` overrides the server's."""
        secret = password if password is not None else self.password
        auth = "" if secret is None else ":" + urllib.parse.quote(secret, safe="") + "@"
        return f"redis://{auth}{HOST}:{self.port}/{db}"

    def client(self, db: int = 0, timeout: float = 5.0) -> redispy.Redis:
        return redispy.Redis(
            host=HOST,
            port=self.port,
            db=db,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def _write_config(self) -> Path:
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            "save ''",
            "appendonly no",
            f"dir {_quoted(str(self.root))}",
            f"logfile {_quoted(str(self.log_path))}",
            "daemonize no",
            "databases 16",
        ]
        if self.password is not None:
            lines.append(f"requirepass {_quoted(self.password)}")
        if self.maxmemory is not None:
            lines.append(f"maxmemory {self.maxmemory}")
        if self.maxmemory_policy is not None:
            lines.append(f"maxmemory-policy {self.maxmemory_policy}")
        conf = self.root / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start (on the same port as before) and wait for PONG; no-op while running."""
        if self.running:
            return
        for _ in range(3):
            try:
                self._start(timeout)
                return
            except PortTakenError:
                if self.started_in is not None:
                    raise  # a restart keeps its port: the scenario is "the same broker is back"
                self.port = free_port()  # someone took the free port between asking and binding
        self._start(timeout)

    def _start(self, timeout: float) -> None:
        conf = self._write_config()
        began = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            preexec_fn=die_with_parent,
        )
        deadline = began + timeout
        client = self.client(timeout=1.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    if "Address already in use" in self.log():
                        raise PortTakenError(self.log())
                    raise RuntimeError(
                        f"redis-server exited with {self.proc.returncode}:\n{self.log()}"
                    )
                try:
                    if client.ping():
                        break
                except redispy.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server silent for {timeout}s\n{self.log()}")
                time.sleep(0.005)
        finally:
            client.close()
        self.started_in = time.monotonic() - began

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (redis-server's own shutdown: it closes every client), and wait for the exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Stop and start on the same port: every key is gone (there is no persistence)."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as a hung server."""
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGCONT)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- looking inside -------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty every database and lift a memory limit set with CONFIG SET."""
        with self.client() as client:
            client.flushall()
            client.config_set("maxmemory", self.maxmemory or 0)
            client.config_set("maxmemory-policy", self.maxmemory_policy or "noeviction")
            client.config_resetstat()

    def keys(self, db: int = 0) -> dict[bytes, str]:
        """Every key in ``db`` with its type (string, list, hash, zset, set)."""
        with self.client(db) as client:
            return {key: client.type(key).decode() for key in client.scan_iter(count=1000)}

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


def _binary() -> str:
    binary = find_binary()
    need(binary is not None, "redis-server is not installed (Debian: apt-get install redis-server)")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_binary())
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def broker(redis_server: RedisServer) -> RedisServer:
    """The session's server, running, thawed and empty."""
    redis_server.thaw()
    redis_server.start()
    redis_server.reset()
    return redis_server


RedisFactory = Callable[..., RedisServer]


@pytest.fixture
def redis_factory() -> Iterator[RedisFactory]:
    made: list[RedisServer] = []

    def factory(
        *,
        password: str | None = None,
        maxmemory: int | None = None,
        maxmemory_policy: str | None = None,
    ) -> RedisServer:
        server = RedisServer(
            _binary(), password=password, maxmemory=maxmemory, maxmemory_policy=maxmemory_policy
        )
        made.append(server)
        server.start()
        return server

    yield factory
    for server in made:
        server.destroy()
