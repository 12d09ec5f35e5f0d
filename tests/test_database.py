"""The database collector against a real PostgreSQL that the tests start (tests/pg.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from pixcrawler_exporter.collectors.database.collector import DatabaseCollector
from pixcrawler_exporter.collectors.database.dsn import redact_url
from pixcrawler_exporter.collectors.database.presets import default_queries
from pixcrawler_exporter.collectors.database.queries import Query, parse_queries
from pixcrawler_exporter.collectors.database.reading import DatabaseReading
from pixcrawler_exporter.logs import JsonFormatter
from tests.conftest import REPO, Exporter, Samples, parse_samples, sample

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts are rewritten
    from psycopg import Connection
    from psycopg.rows import TupleRow

    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg"]

# Seed 003's CrawlJob model; the rows cover every status, a status no preset knows, a failed job
# that still claims an active chunk and a running job with none.
CRAWL_JOBS = """
DROP TABLE IF EXISTS crawl_jobs;
CREATE TABLE crawl_jobs (
    id serial PRIMARY KEY,
    project_id integer NOT NULL,
    max_images integer NOT NULL,
    status varchar(20) NOT NULL,
    total_chunks integer NOT NULL DEFAULT 0,
    active_chunks integer NOT NULL DEFAULT 0,
    completed_chunks integer NOT NULL DEFAULT 0,
    failed_chunks integer NOT NULL DEFAULT 0,
    task_ids text[] NOT NULL DEFAULT '{}'
);
INSERT INTO crawl_jobs
    (project_id, max_images, status, total_chunks, active_chunks, completed_chunks, failed_chunks)
VALUES
    (1, 5000, 'running', 10, 3, 5, 2),
    (1, 4000, 'running', 8, 4, 4, 0),
    (2, 3000, 'running', 6, 0, 6, 0),
    (2, 100, 'pending', 0, 0, 0, 0),
    (3, 2500, 'pending', 5, 0, 0, 0),
    (3, 6000, 'completed', 12, 0, 12, 0),
    (4, 3500, 'failed', 7, 1, 2, 4),
    (4, 1500, 'cancelled', 3, 0, 1, 2);
"""
ACTIVE = 3 + 4 + 0  # running jobs only: the failed job's stale active chunk does not count
JOBS = {"pending": 2, "running": 3, "completed": 1, "failed": 1, "cancelled": 1}
JOB_CHUNKS = {"total": 51, "active": 8, "completed": 30, "failed": 8}

# Seed 001's per-chunk table, in a schema, table and column that need quoting.
CHUNKS = """
DROP SCHEMA IF EXISTS "Pix Crawler" CASCADE;
CREATE SCHEMA "Pix Crawler";
GRANT USAGE ON SCHEMA "Pix Crawler" TO pixcrawler;
CREATE TABLE "Pix Crawler"."Chunk" (id serial PRIMARY KEY, job_id integer, "State" text);
GRANT SELECT ON "Pix Crawler"."Chunk" TO pixcrawler;
INSERT INTO "Pix Crawler"."Chunk" (job_id, "State") SELECT 1, s FROM unnest(ARRAY[
    'processing', 'processing', 'processing', 'processing', 'pending', 'pending', 'pending',
    'completed', 'completed', 'completed', 'completed', 'completed', 'failed', 'failed'
]) AS s;
"""

Factory = Callable[..., DatabaseCollector]


@pytest.fixture
def jobs(postgres: PostgresServer) -> PostgresServer:
    postgres.execute(CRAWL_JOBS)
    return postgres


@pytest.fixture
def make(postgres: PostgresServer) -> Iterator[Factory]:
    made: list[DatabaseCollector] = []

    def factory(
        queries: Iterable[Query] | None = None,
        url: str | None = None,
        statement_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        min_interval: float = 0.0,
    ) -> DatabaseCollector:
        collector = DatabaseCollector(
            url or postgres.url,
            tuple(queries) if queries is not None else default_queries(),
            statement_timeout=statement_timeout,
            connect_timeout=connect_timeout,
            min_interval=min_interval,
        )
        collector.start()
        made.append(collector)
        return collector

    yield factory
    for collector in made:
        collector.close()


class _Rendered:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def render(collector: DatabaseCollector, reading: DatabaseReading) -> tuple[str, Samples]:
    """The reading as /metrics would expose it, through client_python's own exposition."""
    registry = CollectorRegistry()
    registry.register(_Rendered(list(collector.metrics(reading))))
    text = generate_latest(registry).decode()
    return text, parse_samples(text)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def errors_total(samples: Samples, reason: str) -> float | None:
    return sample(samples, "pixcrawler_database_errors_total", reason=reason)


# --- exact counts ------------------------------------------------------------------------------


def test_crawl_jobs_defaults_are_exact(jobs: PostgresServer, make: Factory) -> None:
    collector = make()
    reading = collector.read()
    assert reading.error is None and reading.up
    assert reading.active_chunks == ACTIVE
    _, samples = render(collector, reading)
    assert sample(samples, "pixcrawler_database_up") == 1
    assert sample(samples, "pixcrawler_chunks_active") == ACTIVE
    assert {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "pixcrawler_jobs"
    } == JOBS
    for state, value in JOB_CHUNKS.items():
        assert sample(samples, "pixcrawler_job_chunks", state=state) == value
    for reason in ("connect", "auth", "timeout", "missing_object", "permission", "query"):
        assert errors_total(samples, reason) == 0
    # Every running job's counters add up, and the one with nothing active has nothing left.
    assert sample(samples, "pixcrawler_jobs_counters_out_of_sync") == 0
    assert sample(samples, "pixcrawler_jobs_stalled") == 0


# Seed 003's "job never completes: chunk counters out of sync", row by row: what the database
# counts, and what a sum over all jobs would hide (+2 and -2 chunks offset each other).
OUT_OF_SYNC_JOBS = """
INSERT INTO crawl_jobs
    (project_id, max_images, status, total_chunks, active_chunks, completed_chunks, failed_chunks)
VALUES
    -- active decremented without completed incremented: 2 left, none active
    (5, 2000, 'running', 4, 0, 2, 0),
    -- a completion counted while its chunk stayed active: 4 + 2 = 6 of 4, so the sums over
    -- all jobs add up again
    (5, 2000, 'running', 4, 4, 2, 0),
    -- one chunk never counted: 1 left and 1 active, so something still works on it
    (5, 2500, 'running', 5, 1, 3, 0),
    -- out of sync, but not running: the other alerts' business
    (6, 1000, 'failed', 2, 0, 0, 1),
    (6, 1000, 'pending', 3, 0, 0, 0);
"""


@pytest.mark.parametrize("column", ["varchar", "enum"])
def test_running_jobs_whose_counters_do_not_add_up_are_counted_in_the_database(
    jobs: PostgresServer, make: Factory, column: str
) -> None:
    jobs.execute(OUT_OF_SYNC_JOBS)
    if column == "enum":  # grouped by the column itself: an enum is cast once per status
        jobs.execute(
            "DROP TYPE IF EXISTS job_status; CREATE TYPE job_status AS ENUM "
            "('pending', 'running', 'completed', 'failed', 'cancelled');"
            "ALTER TABLE crawl_jobs ALTER COLUMN status TYPE job_status "
            "USING status::job_status;"
        )
    collector = make()
    _, samples = render(collector, collector.read())
    assert sample(samples, "pixcrawler_jobs_counters_out_of_sync") == 3
    assert sample(samples, "pixcrawler_jobs_stalled") == 1
    assert sample(samples, "pixcrawler_chunks_active") == ACTIVE + 0 + 4 + 1
    assert sample(samples, "pixcrawler_jobs", status="running") == JOBS["running"] + 3
    assert sample(samples, "pixcrawler_jobs", status="pending") == JOBS["pending"] + 1
    assert sample(samples, "pixcrawler_job_chunks", state="total") == JOB_CHUNKS["total"] + 18

    jobs.execute(
        # The seed's reconcile: active = total - completed - failed.
        "UPDATE crawl_jobs SET active_chunks = total_chunks - completed_chunks - failed_chunks"
    )
    _, samples = render(collector, collector.read())
    assert sample(samples, "pixcrawler_jobs_counters_out_of_sync") == 0
    assert sample(samples, "pixcrawler_jobs_stalled") == 0


def trace_queries(conn: Connection[TupleRow], path: Path, reads: Callable[[], None]) -> list[str]:
    """The messages libpq sent on ``conn`` while ``reads`` ran: each as its type, a tab and
    (for a Query) its text."""
    from psycopg import pq

    with open(path, "w", encoding="utf-8") as out:
        conn.pgconn.trace(out.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            reads()
        finally:
            conn.pgconn.untrace()
    lines = [line.split("\t") for line in path.read_text().splitlines() if line[:1] == "F"]
    return ["\t".join(fields[2:4]) for fields in lines]


def test_a_collection_of_the_preset_is_one_message(
    jobs: PostgresServer, make: Factory, tmp_path: Path
) -> None:
    collector = make()
    assert collector.read().up
    conn = collector._kept
    assert conn is not None
    jobs.reset_statements()

    def reads() -> None:
        for _ in range(3):
            assert collector.read().active_chunks == ACTIVE

    sent = trace_queries(conn, tmp_path / "libpq.trace", reads)
    # One message, so one round trip, per collection; the statement prepared on the
    # connection's first read is executed, not sent and planned again.
    name = collector.statements.prepared_name
    assert name is not None and name.startswith("exporter_preset_")
    message = (
        'Query\t "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; '
        f'SET LOCAL statement_timeout = 2000; EXECUTE {name}; COMMIT"'
    )
    assert sent == [message] * 3, sent
    rows = jobs.query(
        "SELECT query, calls FROM pg_stat_statements WHERE userid = 'pixcrawler'::regrole"
    )
    ran = {" ".join(str(query).split())[:57]: int(calls) for query, calls in rows}
    assert ran == {
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY": 3,  # one read-only snapshot
        "SET LOCAL statement_timeout = 2000": 3,  # the server's bound, for this transaction
        # Every figure, from one scan: counted under the text it was prepared with.
        f'PREPARE {name} AS SELECT "statu': 3,
        "COMMIT": 3,
    }, ran


def test_a_prepared_statement_gone_between_transactions_is_sent_whole(
    jobs: PostgresServer, make: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Behind a transaction-pooling PgBouncer, the next transaction may reach a server
    # connection where the statement was never prepared: as if it were deallocated.
    collector = make()
    assert collector.read().up
    conn = collector._kept
    assert conn is not None
    conn.execute(f"DEALLOCATE {collector.statements.prepared_name}")
    with caplog.at_level(logging.WARNING):

        def reads() -> None:
            for _ in range(2):
                assert collector.read().active_chunks == ACTIVE

        sent = trace_queries(conn, tmp_path / "libpq.trace", reads)
    assert [line.split("\t")[0] for line in sent] == ["Query"] * 4, sent
    assert "EXECUTE exporter_preset" in sent[0]  # refused: the statement is gone
    assert sent[1] == 'Query\t "ROLLBACK"'
    for retried in sent[2:]:  # this read again, and every read after: the statement whole
        assert 'FROM "crawl_jobs" GROUP BY' in retried, retried
        assert "PREPARE" not in retried and "EXECUTE" not in retried
    warned = [r.getMessage() for r in caplog.records if "prepared statements" in r.getMessage()]
    assert len(warned) == 1, warned
    assert collector.read().errors_total == dict.fromkeys(
        ("connect", "auth", "timeout", "missing_object", "permission", "query"), 0
    )


def test_the_preset_is_cancelled_at_its_statement_timeout(
    jobs: PostgresServer, make: Factory
) -> None:
    # The timeout set in the preset's own message bounds it on the server, which cancels it:
    # the connection is kept, not cut.
    jobs.execute(
        "CREATE OR REPLACE VIEW slow_jobs AS SELECT crawl_jobs.* FROM crawl_jobs, pg_sleep(5)"
    )
    try:
        collector = make(default_queries(table="slow_jobs"), statement_timeout=0.5)
        start = time.monotonic()
        reading = collector.read()
        assert 0.45 <= time.monotonic() - start < 1.4
        assert reading.reason == "timeout"
        assert reading.error is not None
        assert "the preset's statement: canceling statement due to statement timeout" in (
            reading.error
        )
        assert reading.error.endswith("(statement timeout 0.5s)")
        assert_kept(collector)
        jobs.execute("CREATE OR REPLACE VIEW slow_jobs AS SELECT * FROM crawl_jobs")
        assert collector.read().active_chunks == ACTIVE
    finally:
        jobs.execute("DROP VIEW slow_jobs")


def test_empty_table_gives_zeros_not_absence(jobs: PostgresServer, make: Factory) -> None:
    jobs.execute("DELETE FROM crawl_jobs")
    collector = make()
    reading = collector.read()
    assert reading.active_chunks == 0
    _, samples = render(collector, reading)
    for status in ("pending", "running", "completed", "failed"):
        assert sample(samples, "pixcrawler_jobs", status=status) == 0
    assert sample(samples, "pixcrawler_jobs", status="cancelled") is None
    for state in JOB_CHUNKS:
        assert sample(samples, "pixcrawler_job_chunks", state=state) == 0


def test_a_change_in_the_table_shows_in_the_next_read(jobs: PostgresServer, make: Factory) -> None:
    collector = make()
    assert collector.read().active_chunks == ACTIVE
    jobs.execute("UPDATE crawl_jobs SET active_chunks = active_chunks + 10 WHERE max_images = 4000")
    assert collector.read().active_chunks == ACTIVE + 10


def test_processing_chunks_preset_with_quoted_names(
    postgres: PostgresServer, make: Factory
) -> None:
    postgres.execute(CHUNKS)
    queries = default_queries(
        "processing_chunks", schema="Pix Crawler", table="Chunk", status="State"
    )
    collector = make(queries)
    reading = collector.read()
    assert reading.error is None
    assert reading.active_chunks == 4
    _, samples = render(collector, reading)
    assert sample(samples, "pixcrawler_chunks_active") == 4
    expected = {"total": 14, "active": 4, "completed": 5, "failed": 2}
    for state, value in expected.items():
        assert sample(samples, "pixcrawler_job_chunks", state=state) == value
    assert "pixcrawler_jobs" not in names(samples)


def test_stuck_chunk_age_where_the_table_has_timestamps(
    jobs: PostgresServer, postgres: PostgresServer, make: Factory
) -> None:
    # Seed 003's table has no timestamps; where a deployment's has one, the preset is told.
    jobs.execute(
        "ALTER TABLE crawl_jobs ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();"
        "UPDATE crawl_jobs SET updated_at = now() - interval '2 hours' WHERE max_images = 4000;"
        # A failed job's stale active chunk is stuck too, but counted by the other alert.
        "UPDATE crawl_jobs SET updated_at = now() - interval '9 hours' WHERE status = 'failed';"
    )
    collector = make(default_queries("crawl_jobs", updated_at="updated_at"))
    _, samples = render(collector, collector.read())
    age = sample(samples, "pixcrawler_chunks_oldest_active_age_seconds")
    assert age is not None and 7200 <= age < 7200 + 60
    jobs.execute("UPDATE crawl_jobs SET active_chunks = 0")  # nothing active: nothing stuck
    _, samples = render(collector, collector.read())
    assert sample(samples, "pixcrawler_chunks_oldest_active_age_seconds") is None
    assert sample(samples, "pixcrawler_database_up") == 1

    postgres.execute(CHUNKS)
    postgres.execute(
        'ALTER TABLE "Pix Crawler"."Chunk" ADD COLUMN "Started" timestamptz DEFAULT now();'
        'UPDATE "Pix Crawler"."Chunk" SET "Started" = now() - interval \'30 minutes\' '
        "WHERE id = 2;"
    )
    queries = default_queries(
        "processing_chunks",
        schema="Pix Crawler",
        table="Chunk",
        status="State",
        started_at="Started",
    )
    _, samples = render(make(queries), make(queries).read())
    age = sample(samples, "pixcrawler_chunks_oldest_active_age_seconds")
    assert age is not None and 1800 <= age < 1800 + 60


CUSTOM = """
- metric: pixcrawler_project_jobs
  help: Jobs and their image budget per project and status.
  sql: >
    SELECT project_id, status, count(*) AS jobs, sum(max_images) AS images
    FROM crawl_jobs GROUP BY project_id, status
  values: [jobs, images]
  labels: [project_id, status]
  value_label: kind
- metric: pixcrawler_chunks_active
  help: Chunks of running and pending jobs.
  sql: SELECT sum(active_chunks) AS n FROM crawl_jobs WHERE status IN ('running', 'failed')
  values: n
"""


def test_custom_queries_from_yaml(jobs: PostgresServer, make: Factory) -> None:
    collector = make(parse_queries(yaml.safe_load(CUSTOM)))
    reading = collector.read()
    assert reading.error is None
    assert reading.active_chunks == ACTIVE + 1
    text, samples = render(collector, reading)
    assert "# HELP pixcrawler_project_jobs Jobs and their image budget" in text

    def project(project_id: str, status: str, kind: str) -> float | None:
        return sample(
            samples, "pixcrawler_project_jobs", project_id=project_id, status=status, kind=kind
        )

    assert project("1", "running", "jobs") == 2
    assert project("1", "running", "images") == 9000
    assert project("2", "pending", "images") == 100
    assert project("4", "cancelled", "jobs") == 1
    assert len([n for n, _ in samples if n == "pixcrawler_project_jobs"]) == 2 * 7
    assert "pixcrawler_jobs" not in names(samples)


def test_queries_run_read_only(postgres: PostgresServer, make: Factory) -> None:
    postgres.execute(
        "DROP TABLE IF EXISTS scratch; CREATE TABLE scratch (n int);"
        "INSERT INTO scratch VALUES (1); GRANT ALL ON scratch TO pixcrawler;"
    )
    query = Query(
        "pixcrawler_deleted",
        "Rows deleted.",
        "WITH d AS (DELETE FROM scratch RETURNING 1) SELECT count(*) AS n FROM d",
        ("n",),
    )
    reading = make([query]).read()
    assert reading.reason == "query"
    assert reading.error is not None and "read-only transaction" in reading.error
    assert postgres.query("SELECT count(*) FROM scratch") == [(1,)]


@pytest.mark.parametrize(
    ("sql", "values", "labels", "message"),
    [
        ("SELECT 1 AS a", ("b",), (), "column 'b' is not in the result (it has a)"),
        ("SELECT 'x'::text AS a", ("a",), (), "str 'x' is not a number"),
        ("SELECT 1 AS a, 'k' AS l UNION ALL SELECT 2, 'k'", ("a",), ("l",), "two rows have"),
    ],
)
def test_a_result_that_does_not_fit_the_query_fails_it(
    postgres: PostgresServer,
    make: Factory,
    sql: str,
    values: tuple[str, ...],
    labels: tuple[str, ...],
    message: str,
) -> None:
    collector = make([Query("pixcrawler_custom", "Custom.", sql, values, labels)])
    reading = collector.read()
    assert not reading.up and reading.reason == "query"
    assert reading.error is not None and message in reading.error
    assert "pixcrawler_custom" in reading.error
    _, samples = render(collector, reading)
    assert "pixcrawler_custom" not in names(samples)


def test_null_values_give_no_sample_and_null_labels_the_empty_one(
    postgres: PostgresServer, make: Factory
) -> None:
    sql = "SELECT NULL::text AS l, 5 AS a UNION ALL SELECT 'x', NULL"
    collector = make([Query("pixcrawler_custom", "Custom.", sql, ("a",), ("l",))])
    _, samples = render(collector, collector.read())
    assert [(k, v) for k, v in samples.items() if k[0] == "pixcrawler_custom"] == [
        (("pixcrawler_custom", (("l", ""),)), 5.0)
    ]


# --- faults ------------------------------------------------------------------------------------


def assert_kept(collector: DatabaseCollector) -> None:
    assert collector._kept is not None, "no connection was kept after a successful read"


def test_server_stopped_and_started(jobs: PostgresServer, make: Factory) -> None:
    collector = make()
    assert collector.read().up
    assert_kept(collector)  # so the restart also breaks a kept connection
    assert collector.read().up

    jobs.stop()
    start = time.monotonic()
    reading = collector.read()
    assert time.monotonic() - start < 1.0
    assert not reading.up and reading.reason == "connect"
    assert reading.active_chunks is None
    assert reading.error is not None and "refused" in reading.error.lower()
    _, samples = render(collector, reading)
    assert sample(samples, "pixcrawler_database_up") == 0
    assert errors_total(samples, "connect") == 1
    assert names(samples) == {"pixcrawler_database_up", "pixcrawler_database_errors_total"}
    assert errors_total(render(collector, collector.read())[1], "connect") == 2

    jobs.start()
    reading = collector.read()  # the very next read recovers, on a fresh connection
    assert reading.up and reading.error is None and reading.active_chunks == ACTIVE
    _, samples = render(collector, reading)
    assert sample(samples, "pixcrawler_database_up") == 1
    assert errors_total(samples, "connect") == 2  # a counter: it keeps its count
    assert_kept(collector)
    assert collector.read().active_chunks == ACTIVE


def within(seconds: float, read: Callable[[], DatabaseReading]) -> DatabaseReading:
    """``read()``, failing the test (not hanging it) when it has not returned in ``seconds``."""
    result: list[DatabaseReading] = []
    reader = threading.Thread(target=lambda: result.append(read()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert result, f"the read did not return within {seconds}s"
    return result[0]


def test_a_frozen_backend_is_cut_at_the_deadline_and_replaced(
    jobs: PostgresServer, make: Factory
) -> None:
    from tests.pg import stopped  # here: the module is pytest's plugin, rewritten on its own

    collector = make()
    assert collector.read().up
    frozen = jobs.backend_pids()
    assert frozen, "no connection kept between reads"
    with stopped(frozen):
        start = time.monotonic()
        reading = within(5, lambda: collector.read(deadline=start + 1.0))
        took = time.monotonic() - start
        # Before the deadline, by the margin the scraper needs to find the reading.
        assert 0.85 <= took < 1.0, took
        assert not reading.up and reading.reason == "timeout"
        assert reading.error is not None and "connection dropped" in reading.error
        _, samples = render(collector, reading)
        assert sample(samples, "pixcrawler_database_up") == 0
        assert errors_total(samples, "timeout") == 1
        # The next read connects afresh: the stopped backend is not waited on again.
        start = time.monotonic()
        reading = within(5, lambda: collector.read(deadline=start + 1.0))
        assert reading.up and reading.active_chunks == ACTIVE
        assert time.monotonic() - start < 0.5
        assert set(jobs.backend_pids()) - set(frozen)


def test_a_frozen_backend_is_given_up_on_a_second_after_the_statement_timeout(
    jobs: PostgresServer, make: Factory
) -> None:
    # The server cancels a statement at its timeout; no answer by then means it stopped.
    from tests.pg import stopped

    collector = make(statement_timeout=0.5)
    assert collector.read().up
    with stopped(jobs.backend_pids()):
        start = time.monotonic()
        reading = within(15, lambda: collector.read(deadline=start + 10))
        took = time.monotonic() - start
    assert 1.4 <= took < 2.5, took  # 0.5 s + the server's second to say so, not 10 s
    assert reading.reason == "timeout"
    assert reading.error is not None and "a statement unanswered past its timeout" in reading.error


def test_close_cuts_a_read_under_way_and_late_renders_down(
    jobs: PostgresServer, make: Factory
) -> None:
    from tests.pg import stopped

    collector = make()
    assert collector.read().up
    result: list[DatabaseReading] = []
    with stopped(jobs.backend_pids()):
        reader = threading.Thread(
            target=lambda: result.append(collector.read(deadline=time.monotonic() + 30))
        )
        reader.start()
        time.sleep(0.3)
        start = time.monotonic()
        collector.close()  # a shutdown: the read ends now, not in 30 s
        reader.join(5)
        assert not reader.is_alive() and time.monotonic() - start < 1.0
    assert not result[0].up
    # A scrape that joined a collection opened with a later deadline: down, never absent.
    late = collector.late("did not finish within the scrape deadline of 2.00s")
    assert isinstance(late.reading, DatabaseReading) and late.reading.reason == "timeout"
    _, samples = render(collector, late.reading)
    assert sample(samples, "pixcrawler_database_up") == 0
    assert late.error == "did not finish within the scrape deadline of 2.00s"
    assert names(samples) == {"pixcrawler_database_up", "pixcrawler_database_errors_total"}


def test_server_stopped_during_a_query(postgres: PostgresServer, make: Factory) -> None:
    slow = Query("pixcrawler_slow", "Slow.", "SELECT 1 AS v FROM pg_sleep(3)", ("v",))
    collector = make([slow], statement_timeout=10)
    stopper = threading.Timer(0.3, postgres.stop)
    stopper.start()
    start = time.monotonic()
    try:
        reading = collector.read()
    finally:
        stopper.join()
    assert time.monotonic() - start < 2.5
    assert not reading.up and reading.reason == "connect"
    postgres.start()
    assert make([Query("pixcrawler_fast", "Fast.", "SELECT 1 AS v", ("v",))]).read().up


def test_wrong_password(postgres: PostgresServer, make: Factory) -> None:
    wrong = "wrong-pw-7d1e0c"
    collector = make(url=postgres.url_with(wrong))
    reading = collector.read()
    assert not reading.up and reading.reason == "auth"
    assert reading.error is not None
    assert "password authentication failed" in reading.error
    assert wrong not in reading.error
    assert "pixcrawler:<redacted>@127.0.0.1" in reading.error


@pytest.mark.parametrize(
    ("names_", "missing"),
    [({"table": "no_such_table"}, "no_such_table"), ({"active_chunks": "nope"}, "nope")],
)
def test_missing_table_or_column(
    jobs: PostgresServer, make: Factory, names_: dict[str, str], missing: str
) -> None:
    collector = make(default_queries("crawl_jobs", **names_))
    reading = collector.read()
    assert not reading.up and reading.reason == "missing_object"
    assert reading.error is not None and missing in reading.error
    # The message points at the setting that names the table and its columns.
    assert reading.error.endswith(
        "(database.names names the preset's table, schema and columns; database.preset the "
        "preset, 'none' for database.queries alone)"
    )
    _, samples = render(collector, reading)
    assert errors_total(samples, "missing_object") == 1
    assert "pixcrawler_chunks_active" not in names(samples)


def test_a_huge_text_value_is_named_not_echoed(jobs: PostgresServer, make: Factory) -> None:
    # Issue 21: a custom query's 2 MB text went whole into /health, the page and the log.
    big = Query("pixcrawler_big", "Big.", "SELECT repeat('x', 2000000) AS v", ("v",))
    reading = make([big]).read()
    assert reading.reason == "query" and reading.error is not None
    assert len(reading.error) < 300, len(reading.error)
    assert "(2000002 characters) is not a number" in reading.error


def test_missing_database(postgres: PostgresServer, make: Factory) -> None:
    reading = make(url=postgres.url_with(postgres.password, "no_such_db")).read()
    assert reading.reason == "missing_object"


def test_permission_denied(postgres: PostgresServer, make: Factory) -> None:
    postgres.execute(
        "DROP TABLE IF EXISTS private; CREATE TABLE private (n int);"
        "REVOKE ALL ON private FROM pixcrawler;"
    )
    query = Query("pixcrawler_private", "Private.", "SELECT count(*) AS n FROM private", ("n",))
    assert make([query]).read().reason == "permission"


def test_slow_query_is_cancelled_at_the_statement_timeout(
    postgres: PostgresServer, make: Factory
) -> None:
    slow = Query("pixcrawler_slow", "Slow.", "SELECT 1 AS v FROM pg_sleep(5)", ("v",))
    fast = Query("pixcrawler_fast", "Fast.", "SELECT 1 AS v", ("v",))
    collector = make([fast, slow], statement_timeout=0.5)
    start = time.monotonic()
    reading = collector.read()
    elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 1.5
    assert not reading.up and reading.reason == "timeout"
    assert reading.error is not None and "statement timeout 0.5s" in reading.error
    _, samples = render(collector, reading)
    assert errors_total(samples, "timeout") == 1
    assert "pixcrawler_fast" not in names(samples)  # a collection is whole or absent


def test_deadline_cuts_the_statement_timeout(postgres: PostgresServer, make: Factory) -> None:
    slow = Query("pixcrawler_slow", "Slow.", "SELECT 1 AS v FROM pg_sleep(5)", ("v",))
    collector = make([slow], statement_timeout=5)
    start = time.monotonic()
    reading = collector.read(deadline=time.monotonic() + 0.3)
    assert time.monotonic() - start < 1.0
    assert reading.reason == "timeout"
    assert collector.read(deadline=time.monotonic() - 1).reason == "timeout"


def test_min_interval_caches_and_failure_drops_the_cache(
    jobs: PostgresServer, make: Factory
) -> None:
    jobs.reset_statements()
    cached = make(min_interval=0.6)
    first = cached.read()
    assert first.up and not first.cached
    jobs.execute("UPDATE crawl_jobs SET active_chunks = active_chunks + 1 WHERE max_images = 4000")
    for _ in range(4):
        again = cached.read()
        assert again.cached and again.active_chunks == ACTIVE  # the cache, not the table
    assert jobs.statements("crawl_jobs") == 1  # the preset's one statement, asked once
    time.sleep(0.6)
    assert cached.read().active_chunks == ACTIVE + 1
    assert jobs.statements("crawl_jobs") == 2

    uncached = make()
    for _ in range(3):
        uncached.read()
    assert jobs.statements("crawl_jobs") == 2 + 3

    time.sleep(0.6)
    jobs.execute("ALTER TABLE crawl_jobs RENAME TO crawl_jobs_gone")
    try:
        assert cached.read().reason == "missing_object"
    finally:
        jobs.execute("ALTER TABLE crawl_jobs_gone RENAME TO crawl_jobs")
    after = cached.read()  # not a cached failure, and no longer the earlier success
    assert after.up and not after.cached and after.active_chunks == ACTIVE + 1


def test_one_log_line_per_change_of_state(
    jobs: PostgresServer, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pixcrawler_exporter")
    collector = make()
    collector.read()
    jobs.stop()
    try:
        for _ in range(3):
            collector.read()
    finally:
        jobs.start()
    collector.read()
    collector.read()
    changes = [
        (r.levelname, r.getMessage(), getattr(r, "reason", None))
        for r in caplog.records
        if r.name == "pixcrawler_exporter.collectors.database.collector"
    ]
    assert changes == [
        ("INFO", "database collector on", None),
        ("WARNING", "database not readable", "connect"),
        ("INFO", "database readable again", None),
    ]


def test_password_appears_nowhere(
    jobs: PostgresServer, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, psycopg's included
    wrong = "wrong-pw-48c2aa"
    seen: list[str] = []
    good = make()
    bad = make(url=jobs.url_with(wrong))
    slow = make(
        [Query("pixcrawler_slow", "S.", "SELECT 1 AS v FROM pg_sleep(1)", ("v",))],
        statement_timeout=0.05,
    )
    readings = [good.read(), bad.read(), slow.read()]
    jobs.stop()
    try:
        readings += [good.read(), good.read()]
    finally:
        jobs.start()
    readings.append(good.read())
    assert [r.reason for r in readings] == [None, "auth", "timeout", "connect", "connect", None]
    for collector, reading in zip([good, bad, slow, good, good, good], readings, strict=True):
        seen.append(repr(reading))
        seen.append(render(collector, reading)[0])
    seen += [JsonFormatter().format(r) for r in caplog.records]
    seen += [good.target, bad.target]
    assert caplog.records, "nothing was logged"
    for text in seen:
        assert jobs.password not in text
        assert wrong not in text


# --- pure functions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:<redacted>@h:5432/db"),
        ("postgresql://u:p%40ss:w@h/db", "postgresql://u:<redacted>@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://h/db?user=u&password=pw&sslmode=require",
            "postgresql://h/db?user=u&password=<redacted>&sslmode=require",
        ),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_password_in_the_url_query_is_scrubbed_from_errors(make: Factory) -> None:
    collector = make(url="postgresql://127.0.0.1:1/db?user=u&password=hunter2-secret")
    reading = collector.read()
    assert reading.reason == "connect"
    assert reading.error is not None and "hunter2-secret" not in reading.error


def test_default_queries_reject_unknown_presets_and_names() -> None:
    with pytest.raises(ValueError, match="crawl_jobs, processing_chunks"):
        default_queries("chunk_table")
    with pytest.raises(ValueError, match="takes the names table, schema, status"):
        default_queries("processing_chunks", active_chunks="x")
    with pytest.raises(ValueError, match="table: expected a non-empty name"):
        default_queries("crawl_jobs", table="")


def test_parse_queries_accepts_the_short_forms() -> None:
    (query,) = parse_queries([{"metric": "m", "help": "h", "sql": "SELECT 1 AS v", "values": "v"}])
    assert query == Query("m", "h", "SELECT 1 AS v", ("v",))


GOOD: dict[str, Any] = {
    "metric": "pixcrawler_x",
    "help": "X.",
    "sql": "SELECT 1 AS v",
    "values": ["v"],
}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"metric": "x"}, "a list of queries"),
        (["SELECT 1"], "query 0: expected a mapping"),
        (
            [GOOD, {**GOOD, "metric": "pixcrawler_y", "value": "v"}],
            "query 1: unknown field 'value'; the fields are metric, help, sql, values",
        ),
        ([{k: v for k, v in GOOD.items() if k != "sql"}], "query 0: the field 'sql' is missing"),
        ([{**GOOD, "metric": "pixcrawler-x"}], "metric: 'pixcrawler-x' is not a metric name"),
        ([{**GOOD, "metric": "pixcrawler_database_up"}], "the database collector's own metric"),
        (
            [{**GOOD, "values": ["a", "b"]}],
            "(pixcrawler_x): several value columns need value_label",
        ),
        ([{**GOOD, "values": []}], "values: expected at least one column name"),
        ([{**GOOD, "values": [1]}], "values: expected a column name or a list of them"),
        ([{**GOOD, "labels": "l"}], "labels: expected a list of column names"),
        ([{**GOOD, "labels": ["bad-label"]}], "labels: 'bad-label' is not a label name"),
        ([{**GOOD, "labels": ["v"]}], "a column cannot be both a value and a label"),
        (
            [{**GOOD, "labels": ["s"], "value_label": "s", "values": ["a", "b"]}],
            "a label name is used twice",
        ),
        ([{**GOOD, "help": ""}], "help: expected text"),
        ([GOOD, GOOD], "query 1: metric 'pixcrawler_x' is produced by an earlier query"),
    ],
)
def test_parse_queries_says_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_queries(raw)
    assert message in str(caught.value)


# --- end to end: the exporter process ----------------------------------------------------------


@pytest.mark.slow
def test_exporter_serves_the_count_and_answers_in_time_with_the_database_down(
    jobs: PostgresServer, exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    # Seed 001's SQLAlchemy form of the URL, accepted as is.
    env = {"PIXCRAWLER_DB_URL": jobs.url.replace("postgresql://", "postgresql+asyncpg://", 1)}
    exporter = exporter_factory(env=env)
    samples = exporter.scrape()
    assert sample(samples, "pixcrawler_database_up") == 1
    assert sample(samples, "pixcrawler_chunks_active") == ACTIVE
    assert sample(samples, "pixcrawler_jobs", status="running") == JOBS["running"]
    assert sample(samples, "pixcrawler_exporter_collector_success", collector="database") == 1

    jobs.stop()
    try:
        start = time.monotonic()
        status, _, body = exporter.get("/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        elapsed = time.monotonic() - start
    finally:
        jobs.start()
    assert status == 200 and elapsed < 2.0
    down = parse_samples(body.decode())
    assert sample(down, "pixcrawler_database_up") == 0
    assert sample(down, "pixcrawler_exporter_collector_success", collector="database") == 0
    assert sample(down, "pixcrawler_database_errors_total", reason="connect") == 1
    assert "pixcrawler_chunks_active" not in names(down)
    assert sample(down, "pixcrawler_exporter_collector_success", collector="memory") == 1

    recovered = exporter.scrape()  # the next scrape, no restart
    assert sample(recovered, "pixcrawler_database_up") == 1
    assert sample(recovered, "pixcrawler_chunks_active") == ACTIVE

    served = [
        exporter.get(path)[2].decode(errors="replace")
        for path in ("/metrics", "/status", "/health", "/-/healthy", "/")
    ]
    printed = subprocess.run(
        [sys.executable, "-m", "pixcrawler_exporter", "--print-config"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert printed.returncode == 0, printed.stderr
    assert "<redacted>" in printed.stdout
    for text in [*served, exporter.log(), printed.stdout, printed.stderr]:
        assert jobs.password not in text


@pytest.mark.slow
def test_health_is_degraded_with_503_while_the_database_is_down(
    jobs: PostgresServer, exporter_factory: Callable[..., Exporter]
) -> None:
    import json

    exporter = exporter_factory(env={"PIXCRAWLER_DB_URL": jobs.url})
    status, _, body = exporter.get("/health")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "healthy"
    assert doc["sources"]["database"] == {"healthy": True, "detail": "ok"}
    assert set(doc["sources"]) >= {"memory", "cpu", "disk", "temp_storage", "database"}
    jobs.stop()
    try:
        status, _, body = exporter.get("/health", {"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        doc = json.loads(body)
        assert status == 503 and doc["status"] == "degraded"
        assert doc["sources"]["database"]["healthy"] is False
        assert "connect" in doc["sources"]["database"]["detail"].lower()
        assert doc["sources"]["memory"]["healthy"] is True
        assert exporter.get("/-/healthy")[0] == 200  # liveness stays unconditional
        # /status: the count is unknown while the database cannot be read, not the last value.
        status_doc = json.loads(exporter.get("/status")[2])
        assert status_doc["metrics"]["active_chunks"] is None
        assert status_doc["capacity"]["can_start_chunk"] is None
    finally:
        jobs.start()
    assert exporter.get("/health")[0] == 200
    status_doc = json.loads(exporter.get("/status")[2])
    assert status_doc["metrics"]["active_chunks"] == ACTIVE
    assert status_doc["capacity"]["available"] == 35 - ACTIVE
    assert status_doc["capacity"]["can_start_chunk"] is True
