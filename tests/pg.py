"""A real PostgreSQL server for the tests: initdb and pg_ctl into a temporary directory.

Test modules use it with ``pytest_plugins = ["tests.pg"]`` (or by importing ``postgres``). The
server listens on a free loopback port with SCRAM password authentication, so a wrong password
really fails; the tests' own superuser connections go through a Unix socket in the temporary
directory with trust authentication. PostgreSQL refuses to run as root, so under root the server
runs as ``nobody`` (or a ``pixtest`` user created for it).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port, need

ROLE = "pixcrawler"
DATABASE = "pixcrawler"
SUPERUSER = "postgres"

# Speed over durability: the data dies with the test session.
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
log_min_messages = warning
{preload}
"""

HBA = """
local all all trust
host all all 127.0.0.1/32 scram-sha-256
"""


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, newest major version first."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        if Path(bindir, "initdb").is_file() and Path(bindir, "pg_ctl").is_file():
            return Path(bindir)
    return None


def _major(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _server_user() -> str | None:
    """The unprivileged user to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "pixtest"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "pixtest"], check=True)
    return "pixtest"


class PostgresServer:
    """One server for the session; ``stop()`` and ``start()`` keep its port for fault tests."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="pixpg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        # Characters that need percent-encoding in a URL would only test the URL parser here.
        self.password = f"s3cr3t-pw-{secrets.token_hex(8)}"
        self.stat_statements = (bindir.parent / "lib" / "pg_stat_statements.so").is_file()

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    # --- lifecycle ------------------------------------------------------------------------------

    def init(self) -> None:
        self.socket_dir.mkdir()
        if self.user is not None:
            shutil.chown(self.root, self.user)
            shutil.chown(self.socket_dir, self.user)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        preload = "shared_preload_libraries = 'pg_stat_statements'" if self.stat_statements else ""
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(SETTINGS.format(port=self.port, socket_dir=self.socket_dir, preload=preload))
        (self.data / "pg_hba.conf").write_text(HBA, encoding="utf-8")
        self.start()
        self.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'", database="postgres")
        self.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}", database="postgres")
        # Tables the tests create as superuser are readable by the exporter's role.
        self.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {SUPERUSER} IN SCHEMA public "
            f"GRANT SELECT ON TABLES TO {ROLE}"
        )
        if self.stat_statements:
            self.execute("CREATE EXTENSION pg_stat_statements")

    def start(self) -> None:
        if not self.running():
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "30", "start"
            )

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        status = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return status.returncode == 0

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- superuser access -----------------------------------------------------------------------

    def connect(self, database: str = DATABASE) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname=database,
            autocommit=True,
        )

    def execute(self, sql: str, database: str = DATABASE) -> None:
        """Run SQL (one or more statements, no parameters) as the superuser."""
        with self.connect(database) as conn:
            conn.execute(sql.encode())  # bytes: a multi-statement script goes as one simple query

    def query(self, sql: str, database: str = DATABASE) -> list[tuple[Any, ...]]:
        with self.connect(database) as conn:
            return conn.execute(sql.encode()).fetchall()

    def statements(self, like: str) -> int:
        """How many times the exporter's role ran statements containing ``like`` (server count)."""
        need(self.stat_statements, "pg_stat_statements is not installed with the server")
        rows = self.query(
            "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_statements "
            f"WHERE userid = '{ROLE}'::regrole AND query LIKE '%{like}%'"
        )
        return int(rows[0][0])

    def backend_pids(self, application: str = "pixcrawler-exporter") -> list[int]:
        """The server processes serving ``application``'s connections (the exporter's sets it)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def reset_statements(self) -> None:
        need(self.stat_statements, "pg_stat_statements is not installed with the server")
        self.execute("SELECT pg_stat_statements_reset()")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd: Sequence[str] = [str(self.bindir / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, check=False, timeout=60
        )
        if check and done.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stderr}\n{log}")
        return done


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_binaries()
    need(bindir is not None, "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.init()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresServer:
    """The session's server, running again if an earlier test stopped it."""
    postgres_server.start()
    return postgres_server


# Seed 003's CrawlJob columns; tests and benches add their rows (tests/minicrawler writes them as
# the seed's orchestrator does). The default queries read only the counters and the status.
CRAWL_JOBS_TABLE = """
DROP TABLE IF EXISTS crawl_jobs;
CREATE TABLE crawl_jobs (
    id serial PRIMARY KEY,
    project_id integer NOT NULL DEFAULT 1,
    max_images integer NOT NULL DEFAULT 0,
    status varchar(20) NOT NULL,
    total_chunks integer NOT NULL DEFAULT 0,
    active_chunks integer NOT NULL DEFAULT 0,
    completed_chunks integer NOT NULL DEFAULT 0,
    failed_chunks integer NOT NULL DEFAULT 0,
    task_ids text[] NOT NULL DEFAULT '{}'
);
"""


@pytest.fixture
def crawl_jobs(postgres: PostgresServer) -> PostgresServer:
    """The session's server with an empty ``crawl_jobs`` table."""
    postgres.execute(CRAWL_JOBS_TABLE)
    return postgres


@contextmanager
def stopped(pids: Sequence[int]) -> Iterator[None]:
    """The processes stopped (SIGSTOP) and continued on the way out: a server that is frozen,
    as a host whose storage stalls or a PgBouncer that queues looks to a client, while its kernel
    still acknowledges every packet."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
