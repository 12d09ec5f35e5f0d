"""The default statements, one per ``database.preset``, and the gauges they become.

A preset is one statement (:class:`PresetQuery`): the table is scanned once per collection and
every figure comes from that scan, so a figure added to a preset costs no round trip. The
statement groups the table's rows (by job status for ``crawl_jobs``) and returns a row per
group with plain aggregates, which PostgreSQL plans in microseconds; the few rows are turned
into the gauges here, in :attr:`PresetQuery.figures`.

``crawl_jobs`` (seed 003's ``CrawlJob`` table; the default)
    ``pixcrawler_chunks_active``: the sum of ``active_chunks`` over jobs whose status is
    ``running``; ``pixcrawler_jobs{status}``: jobs per status, the four statuses of seed 003
    always present (0 when no job has them); ``pixcrawler_job_chunks{state}``: total, active,
    completed and failed chunks summed over all jobs; ``pixcrawler_jobs_counters_out_of_sync``:
    running jobs whose ``total_chunks`` is not ``active + completed + failed``;
    ``pixcrawler_jobs_stalled``: running jobs with chunks left and none active. The two per-job
    checks are made row by row in the scan: the database counts the jobs.

``processing_chunks`` (seed 001's per-chunk table, one row per chunk)
    ``pixcrawler_chunks_active``: chunks whose status is ``processing``;
    ``pixcrawler_job_chunks{state}``: all chunks (``total``) and chunks per state, so the
    failure-rate alert works with either table. That table has no job status and no per-job
    counters, so there is no ``pixcrawler_jobs`` and no per-job check.

Where the table has a timestamp (``updated_at``, ``started_at`` in ``database.names``), either
preset adds ``pixcrawler_chunks_oldest_active_age_seconds``. Table, schema and column names are
quoted as SQL identifiers and the status values as literals, so any name is safe.
``pixcrawler_chunks_active`` is the one metric the exporter reads back: the capacity gauges are
built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pixcrawler_exporter.collectors.database.queries import Query
from pixcrawler_exporter.collectors.database.reading import Sample

if TYPE_CHECKING:
    # psycopg costs ~20 MB of memory: imported when the database collector's queries are made,
    # not wherever the configuration is loaded.
    from psycopg import sql

    # Only for the annotation: the settings module imports this one.
    from pixcrawler_exporter.collectors.database.settings import DatabaseSettings

ACTIVE_CHUNKS = "pixcrawler_chunks_active"
OLDEST_ACTIVE = "pixcrawler_chunks_oldest_active_age_seconds"
JOBS = "pixcrawler_jobs"
JOB_CHUNKS = "pixcrawler_job_chunks"
OUT_OF_SYNC = "pixcrawler_jobs_counters_out_of_sync"
STALLED = "pixcrawler_jobs_stalled"

JOB_STATUSES = ("pending", "running", "completed", "failed")  # seed 003
STATES = ("total", "active", "completed", "failed")
JOBS_HELP = "Crawl jobs per status."
JOB_CHUNKS_HELP = "Chunks summed over all jobs, by state (total, active, completed, failed)."

Row = tuple[Any, ...]
Figures = dict[str, tuple[Sample, ...]]


@dataclass(frozen=True)
class Gauge:
    """One gauge a statement's rows become: its name, help text and label names."""

    metric: str
    help: str
    label_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PresetQuery:
    """Every gauge of a preset from one statement, whose columns are ``labels`` (what a row is
    grouped by) then ``values``; ``figures`` makes the gauges' samples from its rows."""

    sql: str
    labels: tuple[str, ...]
    values: tuple[str, ...]
    gauges: tuple[Gauge, ...]
    figures: Callable[[Sequence[Row]], Figures]


Statement = Query | PresetQuery


def gauges_of(statement: Statement) -> tuple[Gauge, ...]:
    """The gauges a statement's rows become."""
    if isinstance(statement, PresetQuery):
        return statement.gauges
    return (Gauge(statement.metric, statement.help, statement.label_names),)


def _render(template: str, **parts: sql.Composable) -> str:
    from psycopg import sql

    # No connection is needed to quote identifiers and string literals.
    return sql.SQL(template).format(**parts).as_string()


def _table(table: str, schema: str | None) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def _age(row: Row, at: int) -> tuple[Sample, ...]:
    """The oldest active work's age: no sample with nothing active (NULL): nothing is stuck."""
    age = row[at]
    return () if age is None else (((), age),)


def crawl_jobs(
    *,
    table: str = "crawl_jobs",
    schema: str | None = None,
    status: str = "status",
    running: str = "running",
    statuses: Sequence[str] = JOB_STATUSES,
    active_chunks: str = "active_chunks",
    total_chunks: str = "total_chunks",
    completed_chunks: str = "completed_chunks",
    failed_chunks: str = "failed_chunks",
    updated_at: str | None = None,
    task_ids: str = "task_ids",
) -> tuple[Statement, ...]:
    """Seed 003: one row per crawl job with its chunk counters, one result row per status.
    Seed 003's table has no timestamps; ``updated_at`` names one where the table has it, for
    the stuck-chunk age. ``task_ids`` (the jobs' Celery task ids) is read by the celery
    collector's reconciliation, not by this preset."""
    from psycopg import sql

    total, active = sql.Identifier(total_chunks), sql.Identifier(active_chunks)
    completed, failed = sql.Identifier(completed_chunks), sql.Identifier(failed_chunks)
    oldest: sql.Composable = sql.SQL("")
    if updated_at:
        oldest = sql.SQL(
            ", extract(epoch FROM now() - min({}) FILTER (WHERE {} > 0))::float8 AS oldest_age"
        ).format(sql.Identifier(updated_at), active)
    text = _render(
        # Grouped by the column itself, cast once per group: an enum status column is
        # compared and labelled as text without converting every row.
        # Every figure float8, as the gauges take it: sum() of an integer column is bigint or
        # numeric, which would be converted in Python on every scrape.
        "SELECT {st}::text AS status, count(*)::float8 AS jobs,"
        " sum({total})::float8 AS total, sum({active})::float8 AS active,"
        " sum({completed})::float8 AS completed, sum({failed})::float8 AS failed,"
        " (count(*) FILTER (WHERE {total} <> {active} + {completed} + {failed}))::float8"
        " AS out_of_sync,"
        " (count(*) FILTER (WHERE {active} <= 0 AND {completed} + {failed} < {total}))::float8"
        " AS stalled{oldest} FROM {t} GROUP BY {st}",
        st=sql.Identifier(status),
        total=total,
        active=active,
        completed=completed,
        failed=failed,
        oldest=oldest,
        t=_table(table, schema),
    )
    values = ("jobs", *STATES, "out_of_sync", "stalled", *(("oldest_age",) if updated_at else ()))
    age_at = 8 if updated_at else None  # its place in a row: the status, then the values
    known = tuple(statuses)
    nothing: Row = (running, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None)

    def figures(rows: Sequence[Row]) -> Figures:
        # The known statuses are listed with 0 so that their series exist before any job has
        # them; a NULL status is the empty label. A sum over rows that are all NULL is NULL.
        jobs = dict.fromkeys(known, 0.0)
        total = active = completed = failed = 0.0
        mine = nothing
        for row in rows:
            status = row[0]
            label = "" if status is None else status
            jobs[label] = jobs.get(label, 0.0) + row[1]
            total += row[2] or 0.0
            active += row[3] or 0.0
            completed += row[4] or 0.0
            failed += row[5] or 0.0
            if status == running:
                mine = row
        found: Figures = {
            ACTIVE_CHUNKS: (((), mine[3] or 0.0),),
            JOBS: tuple(((name,), n) for name, n in jobs.items()),
            JOB_CHUNKS: (
                (("total",), total),
                (("active",), active),
                (("completed",), completed),
                (("failed",), failed),
            ),
            OUT_OF_SYNC: (((), mine[6]),),
            STALLED: (((), mine[7]),),
        }
        if age_at is not None:
            found[OLDEST_ACTIVE] = _age(mine, age_at)
        return found

    gauges = (
        *_age_gauge(
            updated_at,
            f"Seconds since {updated_at} of the least recently updated {running!r} job with "
            "active chunks: a job whose chunks stopped moving.",
        ),
        Gauge(
            ACTIVE_CHUNKS,
            f"Chunks being processed: the sum of {active_chunks} over jobs whose {status} is "
            f"{running!r}.",
        ),
        Gauge(JOBS, JOBS_HELP, ("status",)),
        Gauge(JOB_CHUNKS, JOB_CHUNKS_HELP, ("state",)),
        Gauge(
            OUT_OF_SYNC,
            f"Jobs whose {status} is {running!r} and whose {total_chunks} is not "
            f"{active_chunks} + {completed_chunks} + {failed_chunks}: chunk counters out of "
            "sync (seed 003: a job that never completes).",
        ),
        Gauge(
            STALLED,
            f"Jobs whose {status} is {running!r} with chunks left ({completed_chunks} + "
            f"{failed_chunks} below {total_chunks}) and none active: nothing works on them.",
        ),
    )
    return (PresetQuery(text, ("status",), values, gauges, figures),)


def processing_chunks(
    *,
    table: str = "chunks",
    schema: str | None = None,
    status: str = "status",
    processing: str = "processing",
    completed: str = "completed",
    failed: str = "failed",
    started_at: str | None = None,
) -> tuple[Statement, ...]:
    """Seed 001: one row per chunk, ``status = 'processing'`` while it runs; one result row.
    ``started_at`` names its start timestamp where the table has one, for the stuck-chunk
    age."""
    from psycopg import sql

    st, now_processing = sql.Identifier(status), sql.Literal(processing)
    oldest: sql.Composable = sql.SQL("")
    if started_at:
        oldest = sql.SQL(
            ", extract(epoch FROM now() - min({}) FILTER (WHERE {} = {}))::float8 AS oldest_age"
        ).format(sql.Identifier(started_at), st, now_processing)
    text = _render(
        "SELECT count(*)::float8 AS total,"
        " (count(*) FILTER (WHERE {st} = {processing}))::float8 AS active,"
        " (count(*) FILTER (WHERE {st} = {completed}))::float8 AS completed,"
        " (count(*) FILTER (WHERE {st} = {failed}))::float8 AS failed{oldest} FROM {t}",
        st=st,
        processing=now_processing,
        completed=sql.Literal(completed),
        failed=sql.Literal(failed),
        oldest=oldest,
        t=_table(table, schema),
    )
    age_at = len(STATES) if started_at else None

    def figures(rows: Sequence[Row]) -> Figures:
        (row,) = rows  # an aggregate over the whole table: one row
        found: Figures = {
            ACTIVE_CHUNKS: (((), row[1]),),
            JOB_CHUNKS: tuple(((state,), row[i]) for i, state in enumerate(STATES)),
        }
        if age_at is not None:
            found[OLDEST_ACTIVE] = _age(row, age_at)
        return found

    gauges = (
        *_age_gauge(
            started_at,
            f"Seconds since {started_at} of the oldest {processing!r} chunk: a chunk that "
            "never finished.",
        ),
        Gauge(
            ACTIVE_CHUNKS,
            f"Chunks being processed: rows of {table} whose {status} is {processing!r}.",
        ),
        Gauge(JOB_CHUNKS, JOB_CHUNKS_HELP, ("state",)),
    )
    values = (*STATES, *(("oldest_age",) if started_at else ()))
    return (PresetQuery(text, (), values, gauges, figures),)


def _age_gauge(column: str | None, text: str) -> tuple[Gauge, ...]:
    return (Gauge(OLDEST_ACTIVE, text),) if column else ()


PRESETS: Mapping[str, Callable[..., tuple[Statement, ...]]] = {
    "crawl_jobs": crawl_jobs,
    "processing_chunks": processing_chunks,
}


def default_queries(preset: str = "crawl_jobs", **names: object) -> tuple[Statement, ...]:
    """The preset's statement with its table and column names overridden by ``names``.

    ValueError names the accepted presets or the names the preset takes.
    """
    make = check_names(preset, **names)
    return make(**{k: v for k, v in names.items() if v is not None})


def check_names(preset: str, **names: object) -> Callable[..., tuple[Statement, ...]]:
    """The preset's function, once ``names`` are known to suit it (ValueError if not)."""
    make = PRESETS.get(preset)
    if make is None:
        raise ValueError(f"a preset: one of {', '.join(PRESETS)}")
    accepted = make.__kwdefaults__ or {}
    for key, value in names.items():
        if key not in accepted:
            raise ValueError(f"the {preset} preset takes the names {', '.join(accepted)}")
        if value is not None and not (isinstance(value, str) and value) and key != "statuses":
            raise ValueError(f"{key}: expected a non-empty name, got {value!r}")
    return make


def database_queries(db: DatabaseSettings) -> tuple[Statement, ...]:
    """The preset's statement (with the configured names) followed by the extra queries."""
    preset = () if db.preset == "none" else default_queries(db.preset, **(db.names or {}))
    return (*preset, *db.queries)
