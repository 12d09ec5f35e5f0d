"""A database that hangs instead of failing (issue 21, items 1 and 2), the way it was found.

A real PostgreSQL and the exporter's own process; the server processes serving the exporter are
stopped with SIGSTOP, as a host whose storage stalls or a PgBouncer queueing the connection look
to a client: the kernel still acknowledges, so neither TCP keepalives nor the server's
statement_timeout ever end the read. Scrapes go over HTTP with Prometheus's timeout header.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from pixcrawler_exporter.cli import SHUTDOWN_GRACE_SECONDS
from tests.conftest import Exporter, Samples, parse_samples, sample, start_exporter, stop_process
from tests.pg import CRAWL_JOBS_TABLE, stopped

if TYPE_CHECKING:
    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg"]

# Prometheus's own timeout: the exporter answers within it less the offset (0.5 s).
SCRAPE_TIMEOUT = 3.0
HEADERS = {"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)}
ACTIVE = 3


@pytest.fixture
def jobs(postgres: PostgresServer) -> PostgresServer:
    postgres.execute(
        CRAWL_JOBS_TABLE
        + f"INSERT INTO crawl_jobs (status, active_chunks) VALUES ('running', {ACTIVE});"
    )
    return postgres


def timed_scrape(exporter: Exporter, path: str = "/metrics") -> tuple[float, int, bytes]:
    start = time.monotonic()
    status, _, body = exporter.get(path, HEADERS, timeout=SCRAPE_TIMEOUT + 30)
    return time.monotonic() - start, status, body


def assert_frozen_reading(samples: Samples) -> None:
    """The database down (present, 0, counted as a timeout), the capacity answer unknown, every
    other collector still exporting."""
    assert sample(samples, "pixcrawler_database_up") == 0
    assert (sample(samples, "pixcrawler_database_errors_total", reason="timeout") or 0) >= 1
    assert sample(samples, "pixcrawler_exporter_collector_success", collector="database") == 0
    assert sample(samples, "pixcrawler_chunks_active") is None  # no stale count
    assert sample(samples, "pixcrawler_can_start_chunk") is None  # neither yes nor no...
    assert sample(samples, "pixcrawler_can_start_chunk_known") == 0  # ...but said unknown
    assert sample(samples, "pixcrawler_chunks_effective_max") == 35
    for other in ("memory", "cpu", "disk"):
        assert sample(samples, "pixcrawler_exporter_collector_success", collector=other) == 1


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_until_readable(exporter: Exporter, within: float) -> Samples:
    deadline = time.monotonic() + within
    while True:
        samples = parse_samples(exporter.get("/metrics", HEADERS, timeout=30)[2].decode())
        if sample(samples, "pixcrawler_database_up") == 1 or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_a_frozen_backend_reads_as_down_by_the_deadline_and_is_replaced(
    jobs: PostgresServer, exporter_factory: Callable[..., Exporter]
) -> None:
    exporter = exporter_factory(env={"PIXCRAWLER_DB_URL": jobs.url})
    assert sample(exporter.scrape(HEADERS), "pixcrawler_database_up") == 1
    frozen = jobs.backend_pids()  # the connection the exporter keeps between scrapes
    assert frozen, "the exporter keeps no connection"
    with stopped(frozen):
        took, status, body = timed_scrape(exporter)
        assert status == 200
        assert took < SCRAPE_TIMEOUT, f"answered after {took:.2f}s"
        down = parse_samples(body.decode())
        assert_frozen_reading(down)

        # The stuck connection was dropped, not waited for: the next scrape connects afresh
        # (the postmaster still answers) while the stopped backend is still stopped.
        took, status, body = timed_scrape(exporter)
        assert status == 200 and took < 1.5, f"answered after {took:.2f}s"
        again = parse_samples(body.decode())
        assert sample(again, "pixcrawler_database_up") == 1
        assert sample(again, "pixcrawler_chunks_active") == ACTIVE
        assert sample(again, "pixcrawler_can_start_chunk") == 1
        assert set(jobs.backend_pids()) - set(frozen), "no new connection"
    recovered = wait_until_readable(exporter, 10)
    assert sample(recovered, "pixcrawler_database_up") == 1
    log = exporter.log()
    assert "no answer within" in log and "Traceback" not in log


def test_a_frozen_server_answers_every_scrape_in_time_with_one_thread_and_recovers(
    jobs: PostgresServer, exporter_factory: Callable[..., Exporter]
) -> None:
    # Backend and postmaster stopped: new connections hang too.
    exporter = exporter_factory(env={"PIXCRAWLER_DB_URL": jobs.url})
    assert sample(exporter.scrape(HEADERS), "pixcrawler_database_up") == 1
    with stopped([*jobs.backend_pids(), jobs.postmaster_pid()]):
        took, status, body = timed_scrape(exporter)
        assert status == 200 and took < SCRAPE_TIMEOUT, f"answered after {took:.2f}s"
        assert_frozen_reading(parse_samples(body.decode()))
        held = threads(exporter.proc.pid)
        for _ in range(5):
            took, status, body = timed_scrape(exporter)
            assert status == 200 and took < SCRAPE_TIMEOUT, f"answered after {took:.2f}s"
            assert_frozen_reading(parse_samples(body.decode()))
        took, status, body = timed_scrape(exporter, "/status")
        assert status == 200 and took < SCRAPE_TIMEOUT, f"answered after {took:.2f}s"
        capacity = json.loads(body)["capacity"]
        assert capacity["can_start_chunk"] is None and capacity["active_chunks"] is None
        # A hung read holds the collector's thread, never one more per scrape.
        assert threads(exporter.proc.pid) <= held + 1  # + a request's thread still ending
    recovered = wait_until_readable(exporter, 15)  # no restart
    assert sample(recovered, "pixcrawler_database_up") == 1
    assert sample(recovered, "pixcrawler_can_start_chunk_known") == 1
    assert "Traceback" not in exporter.log()


SLEEP_QUERY = {
    "metric": "pixcrawler_slow",
    "help": "Slow.",
    "sql": "SELECT 1 AS v FROM pg_sleep(20)",
    "values": ["v"],
}


@pytest.mark.e2e
@pytest.mark.parametrize("hang", ["frozen backend", "pg_sleep(20)"])
def test_sigterm_exits_within_the_bound_whatever_a_read_is_doing(
    jobs: PostgresServer, tmp_path: Path, hang: str
) -> None:
    database: dict[str, Any] = {"url": jobs.url}
    if hang == "pg_sleep(20)":
        database.update(preset="none", statement_timeout_seconds=60, queries=[SLEEP_QUERY])
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"database": database}))
    exporter = start_exporter(tmp_path, ["--config", str(config)])
    pids: list[int] = []
    try:
        if hang == "frozen backend":
            assert sample(exporter.scrape(HEADERS), "pixcrawler_database_up") == 1
            pids = jobs.backend_pids()
            assert pids
        with stopped(pids):
            # A scrape under way whose own deadline is far past the shutdown bound.
            scrape = threading.Thread(
                target=lambda: _ignore_errors(
                    exporter.get, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "30"}, 40
                ),
                daemon=True,
            )
            scrape.start()
            time.sleep(1)
            assert exporter.proc.poll() is None
            signalled = time.monotonic()
            exporter.proc.send_signal(signal.SIGTERM)
            code = exporter.proc.wait(SHUTDOWN_GRACE_SECONDS + 15)
            took = time.monotonic() - signalled
    finally:
        stop_process(exporter.proc)
    # The bound, plus what an interpreter on a busy 2-core machine needs to exit.
    assert took < SHUTDOWN_GRACE_SECONDS + 1.0, f"exited {took:.2f}s after SIGTERM"
    assert code == 0
    log = exporter.log()
    assert log.count("shutting down") == 1 and "Traceback" not in log, log


def _ignore_errors(get: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(OSError):  # the shutdown cut the scrape short: that is the point
        get(*args)
