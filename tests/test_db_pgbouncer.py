"""The database collector behind a real transaction-pooling PgBouncer (tests/helpers/pgbouncer.py)
in front of the tests' PostgreSQL: a client's transactions reach whichever of the pool's two
server connections is free, and a server connection keeps what other clients prepared on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

from pixcrawler_exporter.collectors.database.collector import DatabaseCollector
from pixcrawler_exporter.collectors.database.presets import default_queries
from pixcrawler_exporter.collectors.database.queries import Query
from tests.conftest import Exporter, Samples, sample

if TYPE_CHECKING:  # imported by pytest as plugins, so that their asserts are rewritten
    from tests.helpers.pgbouncer import PgBouncer
    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg", "tests.helpers.pgbouncer"]

REASONS = ("connect", "auth", "timeout", "missing_object", "permission", "query")
FALLBACK = "prepared statements are not the connection's own"


JOBS_ROWS = """
INSERT INTO crawl_jobs (status, total_chunks, active_chunks, completed_chunks, failed_chunks)
VALUES ('running', 10, 3, 5, 2), ('running', 8, 4, 4, 0), ('pending', 0, 0, 0, 0),
       ('completed', 12, 0, 12, 0), ('failed', 7, 1, 2, 4);
"""
ACTIVE = 3 + 4  # running jobs only
JOBS = {"pending": 1, "running": 2, "completed": 1, "failed": 1}
JOB_CHUNKS = {"total": 37, "active": 8, "completed": 23, "failed": 6}


@pytest.fixture
def jobs(crawl_jobs: PostgresServer) -> PostgresServer:
    crawl_jobs.execute(JOBS_ROWS)
    return crawl_jobs


def assert_exact(samples: Samples) -> None:
    """Up, with the figures of the jobs inserted and no failed collection."""
    assert sample(samples, "pixcrawler_database_up") == 1
    assert sample(samples, "pixcrawler_chunks_active") == ACTIVE
    by_status = {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "pixcrawler_jobs"
    }
    assert by_status == JOBS
    for state, count in JOB_CHUNKS.items():
        assert sample(samples, "pixcrawler_job_chunks", state=state) == count
    for reason in REASONS:
        assert sample(samples, "pixcrawler_database_errors_total", reason=reason) == 0, reason


@contextmanager
def other_clients(pgbouncer: PgBouncer, threads: int = 3) -> Iterator[list[int]]:
    """``threads`` clients running short transactions back to back through ``pgbouncer``, as
    the exporter's role (so in its pool, which has two server connections): the exporter's next
    transaction reaches whichever server connection comes free first. Yields the count of
    transactions they ran, filled in on the way out."""
    stop = threading.Event()
    done: list[int] = []
    failed: list[BaseException] = []

    def run() -> None:
        count = 0
        try:
            # Never prepared (psycopg prepares a statement run five times, under a name that
            # every client's fifth statement has: behind the pool, they would collide).
            with pgbouncer.connect(prepare_threshold=None) as conn:
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute("SELECT pg_sleep(0.003)")
                    count += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            failed.append(exc)
        done.append(count)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    counts: list[int] = []
    try:
        yield counts
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert not failed, failed
    counts.extend(done)


def fallback_warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if FALLBACK in line]


@pytest.mark.slow
def test_the_exporter_behind_a_transaction_pooling_pgbouncer_reads_every_scrape(
    jobs: PostgresServer, pgbouncer: PgBouncer, exporter_factory: Callable[..., Exporter]
) -> None:
    exporter = exporter_factory(env={"PIXCRAWLER_DB_URL": pgbouncer.url})
    scrapes = 0
    with other_clients(pgbouncer) as transactions:
        end = time.monotonic() + 2.0
        while time.monotonic() < end or scrapes < 20:
            assert_exact(exporter.scrape())
            scrapes += 1
    assert sum(transactions) > scrapes  # the pool really was shared
    log = exporter.log()
    # The prepared statement was missed (the EXECUTE reached another server connection) and
    # said so once; every read after sends the statement whole.
    warned = fallback_warnings(log)
    assert len(warned) == 1, log
    assert " WARNING " in warned[0]
    # No collection failed: the database collector said nothing else above info.
    said = [line for line in log.splitlines() if "collectors.database" in line]
    assert [line for line in said if " INFO " not in line] == warned, log
    assert_exact(exporter.scrape())


# --- what other clients prepared on the pool's server connections --------------------------------


@contextmanager
def holding_a_server_connection(pgbouncer: PgBouncer) -> Iterator[None]:
    """Another client in a transaction: it holds the server connection used last (PgBouncer
    hands out the most recently freed one), so the next transaction gets the other one."""
    with pgbouncer.connect() as conn, conn.transaction():
        conn.execute("SELECT 1")
        yield


@pytest.fixture
def collectors(pgbouncer: PgBouncer) -> Iterator[Callable[..., DatabaseCollector]]:
    """``collectors(table="crawl_jobs")``: a database collector of its own through
    ``pgbouncer``, as another exporter process has (a client connection of its own)."""
    made: list[DatabaseCollector] = []

    def factory(table: str = "crawl_jobs") -> DatabaseCollector:
        made.append(DatabaseCollector(pgbouncer.url, default_queries(table=table), 2.0, 2.0, 0.0))
        return made[-1]

    yield factory
    for each in made:
        each.close()


def fallbacks(caplog: pytest.LogCaptureFixture) -> int:
    return sum(FALLBACK in r.getMessage() for r in caplog.records)


def prepared_first(
    collectors: Callable[..., DatabaseCollector], caplog: pytest.LogCaptureFixture
) -> DatabaseCollector:
    """A collector whose statement is prepared on the one server connection there is."""
    caplog.set_level(logging.WARNING, logger="pixcrawler_exporter")
    first = collectors()
    assert first.read().active_chunks == ACTIVE
    return first


def test_an_exporter_restarted_behind_the_pool_prepares_over_its_earlier_statement(
    jobs: PostgresServer,
    collectors: Callable[..., DatabaseCollector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = prepared_first(collectors, caplog)
    first.close()
    # The exporter restarted (or a second one): its PREPARE reaches the same server connection,
    # which still holds the statement the earlier process made there.
    again = collectors()
    for _ in range(3):
        reading = again.read()
        assert (reading.up, reading.active_chunks) == (True, ACTIVE), reading
    assert reading.errors_total == dict.fromkeys(REASONS, 0)
    assert fallbacks(caplog) == 1


@pytest.fixture
def other_jobs(jobs: PostgresServer) -> Iterator[PostgresServer]:
    """A second table of jobs, one running with 40 active chunks, beside ``crawl_jobs``."""
    jobs.execute(
        # Not LIKE ... INCLUDING DEFAULTS: crawl_jobs could not be dropped while its sequence
        # gives other_jobs' ids.
        "DROP TABLE IF EXISTS other_jobs; CREATE TABLE other_jobs (LIKE crawl_jobs);"
        "INSERT INTO other_jobs VALUES (1, 9, 100, 'running', 50, 40, 0, 0, '{}')"
    )
    yield jobs
    jobs.execute("DROP TABLE other_jobs")


def test_a_statement_another_exporter_prepared_on_the_pool_is_never_run(
    other_jobs: PostgresServer,
    pgbouncer: PgBouncer,
    collectors: Callable[..., DatabaseCollector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _first = prepared_first(collectors, caplog)  # kept open to the end, as before
    # Another exporter with other database.names (or this one restarted with them): its
    # statement is prepared and run on the pool's second server connection...
    other = collectors("other_jobs")
    with holding_a_server_connection(pgbouncer):
        assert other.read().active_chunks == 40
    # ...and its next EXECUTE reaches the first, which holds the first exporter's statement.
    for _ in range(3):
        reading = other.read()
        assert (reading.up, reading.active_chunks) == (True, 40), reading
    assert reading.errors_total == dict.fromkeys(REASONS, 0)
    assert fallbacks(caplog) == 1


# --- queries of your own --------------------------------------------------------------------------


def jobs_query(table: str) -> Query:
    return Query(
        "pixcrawler_test_jobs", "Jobs.", f"SELECT count(*) AS jobs FROM {table}", ("jobs",)
    )


@pytest.mark.parametrize("preset", ["crawl_jobs", "none"])
def test_a_query_of_your_own_reaching_another_server_connection(
    jobs: PostgresServer, pgbouncer: PgBouncer, preset: str
) -> None:
    presets = default_queries(preset) if preset != "none" else ()
    queries = (*presets, jobs_query("crawl_jobs"))
    collector = DatabaseCollector(pgbouncer.url, queries, 2.0, 2.0, 0.0)
    try:
        assert collector.read().samples["pixcrawler_test_jobs"] == (((), 5.0),)
        # The next collection reaches the pool's other server connection.
        with holding_a_server_connection(pgbouncer):
            reading = collector.read()
        for _ in range(3):
            assert reading.up, reading
            assert reading.samples["pixcrawler_test_jobs"] == (((), 5.0),)
            reading = collector.read()
        assert reading.errors_total == dict.fromkeys(REASONS, 0)
    finally:
        collector.close()


def test_a_query_another_exporter_runs_on_the_pool_is_never_run(
    other_jobs: PostgresServer, pgbouncer: PgBouncer
) -> None:
    first = DatabaseCollector(pgbouncer.url, (jobs_query("crawl_jobs"),), 2.0, 2.0, 0.0)
    other = DatabaseCollector(pgbouncer.url, (jobs_query("other_jobs"),), 2.0, 2.0, 0.0)
    try:
        assert first.read().samples["pixcrawler_test_jobs"] == (((), 5.0),)
        with holding_a_server_connection(pgbouncer):  # the other on the second connection
            assert other.read().samples["pixcrawler_test_jobs"] == (((), 1.0),)
        for _ in range(3):  # and on the first exporter's
            reading = other.read()
            assert (reading.up, reading.samples.get("pixcrawler_test_jobs")) == (
                True,
                (((), 1.0),),
            ), reading
    finally:
        first.close()
        other.close()
