"""A real PgBouncer (Debian's) in front of the tests' PostgreSQL (tests/pg.py), pooling
transactions.

Take the fixture as a plugin, beside the server's: ``pytest_plugins = ["tests.pg",
"tests.helpers.pgbouncer"]``.

``pgbouncer`` (function)
    A PgBouncer of the test's own on a free loopback port, ``pool_mode = transaction`` with
    ``default_pool_size = 2``: its clients' transactions share two server connections, so a
    client's next transaction may well reach another server connection than its last (what a
    transaction-pooling proxy does to session state such as prepared statements). Clients log
    in as the exporter's role with its password (SCRAM, so a wrong one really fails); PgBouncer
    logs in to PostgreSQL with the same password, from its auth file. Stopped at the end of
    the test.

The process runs in the foreground as the user PostgreSQL runs as (PgBouncer refuses root) and
dies with the test process even when pytest itself is killed. Its password is in a 0600 file,
not on a command line. A missing pgbouncer skips the test, or fails it under
PIXCRAWLER_TEST_STRICT=1.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.conftest import free_port, need, stop_process
from tests.helpers.processes import die_with_parent

if TYPE_CHECKING:
    from tests.pg import PostgresServer

HOST = "127.0.0.1"
POOL_SIZE = 2

CONFIG = """
[databases]
{database} = host={host} port={server_port} dbname={database}

[pgbouncer]
listen_addr = {host}
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {auth_file}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
logfile = {log}
log_connections = 0
log_disconnections = 0
"""


def find_binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


class PgBouncer:
    """One PgBouncer process pooling ``server``'s database for the exporter's role."""

    def __init__(self, binary: str, server: PostgresServer) -> None:
        from tests.pg import DATABASE, ROLE

        self.binary = binary
        self.server = server
        self.role, self.database = ROLE, DATABASE
        self.root = Path(tempfile.mkdtemp(prefix="pixbouncer-"))
        self.log_path = self.root / "pgbouncer.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The exporter's URL, through PgBouncer."""
        user = f"{self.role}:{self.server.password}"
        return f"postgresql://{user}@{HOST}:{self.port}/{self.database}"

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A client connection through PgBouncer, as the exporter's role (so in its pool)."""
        return psycopg.connect(self.url, connect_timeout=5, autocommit=True, **kwargs)

    def start(self, timeout: float = 10.0) -> None:
        auth_file = self.root / "userlist.txt"
        auth_file.touch(mode=0o600)
        # A plain-text password: PgBouncer then answers SCRAM on both sides with it.
        auth_file.write_text(f'"{self.role}" "{self.server.password}"\n', encoding="utf-8")
        conf = self.root / "pgbouncer.ini"
        conf.touch(mode=0o600)
        conf.write_text(
            CONFIG.format(
                database=self.database,
                host=HOST,
                server_port=self.server.port,
                port=self.port,
                auth_file=auth_file,
                pool_size=POOL_SIZE,
                log=self.log_path,
            ),
            encoding="utf-8",
        )
        user = self.server.user  # None unless we are root, which PgBouncer refuses to run as
        if user is not None:
            for path in (self.root, auth_file, conf):
                shutil.chown(path, user)
        self.proc = subprocess.Popen(
            [self.binary, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user is not None else None,
            extra_groups=[] if user is not None else None,
            # After the change of user, which clears the parent-death signal.
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer silent for {timeout}s\n{self.log()}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a test may have stopped it
            stop_process(self.proc)  # SIGTERM: PgBouncer 1.18 shuts down at once

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def pgbouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    binary = find_binary()
    need(binary is not None, "pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    assert binary is not None
    bouncer = PgBouncer(binary, postgres)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.destroy()
