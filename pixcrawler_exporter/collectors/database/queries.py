"""SQL queries mapped to metrics, in the spirit of sql_exporter, and the two default query sets.

A query yields one gauge. Each result row gives one sample per value column; the label columns
give its labels. Several value columns become one metric told apart by ``value_label``, whose
value is the column's name: ``SELECT sum(a) AS total, sum(b) AS failed`` with
``values: [total, failed]`` and ``value_label: state`` gives ``metric{state="total"}`` and
``metric{state="failed"}``. A NULL value gives no sample; a NULL label gives the empty label.

The defaults, chosen by ``database.preset``:

``crawl_jobs`` (seed 003's ``CrawlJob`` table; the default)
    ``pixcrawler_chunks_active``: the sum of ``active_chunks`` over jobs whose status is
    ``running``; ``pixcrawler_jobs{status}``: jobs per status, the four statuses of seed 003
    always present (0 when no job has them); ``pixcrawler_job_chunks{state}``: total, active,
    completed and failed chunks summed over all jobs.

``processing_chunks`` (seed 001's per-chunk table, one row per chunk)
    ``pixcrawler_chunks_active``: chunks whose status is ``processing``;
    ``pixcrawler_job_chunks{state}``: all chunks (``total``) and chunks per state, so the
    failure-rate alert works with either table. That table has no job status, so there is no
    ``pixcrawler_jobs``.

Table, schema and column names are parameters quoted as SQL identifiers, and the status values
are quoted as literals, so any name is safe. ``pixcrawler_chunks_active`` is the one metric the
exporter reads back: the capacity gauges are built on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # psycopg costs ~20 MB of memory: imported when the database collector's queries are made,
    # not wherever the configuration is loaded.
    from psycopg import sql

    # Only for the annotation: the settings module imports this one to parse database.queries.
    from pixcrawler_exporter.collectors.database.settings import DatabaseSettings

ACTIVE_CHUNKS = "pixcrawler_chunks_active"
OLDEST_ACTIVE = "pixcrawler_chunks_oldest_active_age_seconds"
# The database collector's own metrics; a query may not take their names.
RESERVED = frozenset({"pixcrawler_database_up", "pixcrawler_database_errors_total"})

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Query:
    """One SQL query and the gauge its rows become."""

    metric: str
    help: str
    sql: str
    values: tuple[str, ...]  # value columns: one sample per row and column
    labels: tuple[str, ...] = ()  # label columns
    value_label: str | None = None  # with several value columns: the label naming the column

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.labels + ((self.value_label,) if self.value_label else ())


# --- queries from YAML -------------------------------------------------------------------------

ACCEPTED = (
    "a list of queries, each a mapping with metric (a metric name), help (text), sql (one "
    "SELECT), values (a column name or a list of them), and optionally labels (a list of column "
    "names) and value_label (a label name, required with more than one value column)"
)
_FIELDS = ("metric", "help", "sql", "values", "labels", "value_label")


def parse_queries(raw: object) -> tuple[Query, ...]:
    """Validate a YAML list of queries; ValueError says which item and field is wrong."""
    if not isinstance(raw, list | tuple):
        raise ValueError(ACCEPTED)
    queries = tuple(_parse_item(i, item) for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, query in enumerate(queries):
        if query.metric in seen:
            raise ValueError(f"query {i}: metric {query.metric!r} is produced by an earlier query")
        seen.add(query.metric)
    return queries


def _parse_item(index: int, item: object) -> Query:
    where = f"query {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping; {ACCEPTED}")
    unknown = sorted(str(k) for k in item if k not in _FIELDS)
    if unknown:
        fields = ", ".join(_FIELDS)
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; the fields are {fields}")
    for key in ("metric", "help", "sql", "values"):
        if key not in item:
            raise ValueError(f"{where}: the field {key!r} is missing; {ACCEPTED}")

    metric = _string(item["metric"], f"{where}, metric", "a metric name")
    where = f"query {index} ({metric})"
    if not _METRIC_NAME.fullmatch(metric):
        raise ValueError(
            f"{where}, metric: {metric!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )
    if metric in RESERVED:
        raise ValueError(f"{where}, metric: {metric!r} is the database collector's own metric")
    values = _names(item["values"], f"{where}, values", allow_single=True)
    labels = _names(item.get("labels") or [], f"{where}, labels", allow_single=False)
    value_label = item.get("value_label")
    if value_label is not None:
        value_label = _label(value_label, f"{where}, value_label")
    if len(values) > 1 and value_label is None:
        raise ValueError(f"{where}: several value columns need value_label to tell them apart")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}, values: a column is named twice")
    for label in labels:
        _label(label, f"{where}, labels")
    names = [*labels, *([value_label] if value_label else [])]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a label name is used twice")
    if set(values) & set(labels):
        raise ValueError(f"{where}: a column cannot be both a value and a label")
    return Query(
        metric=metric,
        help=_string(item["help"], f"{where}, help", "text"),
        sql=_string(item["sql"], f"{where}, sql", "an SQL query"),
        values=values,
        labels=labels,
        value_label=value_label,
    )


def _string(raw: object, where: str, accepted: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{where}: expected {accepted}, got {raw!r}")
    return raw.strip()


def _names(raw: object, where: str, allow_single: bool) -> tuple[str, ...]:
    if allow_single and isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) and n for n in raw):
        accepted = "a column name or a list of them" if allow_single else "a list of column names"
        raise ValueError(f"{where}: expected {accepted}, got {raw!r}")
    if allow_single and not raw:
        raise ValueError(f"{where}: expected at least one column name")
    return tuple(raw)


def _label(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not _LABEL_NAME.fullmatch(raw) or raw.startswith("__"):
        raise ValueError(f"{where}: {raw!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
    return raw


# --- the defaults ------------------------------------------------------------------------------

JOB_STATUSES = ("pending", "running", "completed", "failed")  # seed 003
STATES = ("total", "active", "completed", "failed")
JOBS_HELP = "Crawl jobs per status."
JOB_CHUNKS_HELP = "Chunks summed over all jobs, by state (total, active, completed, failed)."


def _render(template: str, **parts: sql.Composable) -> str:
    from psycopg import sql

    # No connection is needed to quote identifiers and string literals.
    return sql.SQL(template).format(**parts).as_string()


def _table(table: str, schema: str | None) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


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
) -> tuple[Query, ...]:
    """Seed 003: one row per crawl job with its chunk counters. Seed 003's table has no
    timestamps; ``updated_at`` names one where the table has it, for the stuck-chunk age.
    ``task_ids`` (the jobs' Celery task ids) is read by the celery collector's reconciliation,
    not by these queries."""
    from psycopg import sql

    t, st = _table(table, schema), sql.Identifier(status)
    known = sql.SQL(", ").join(sql.SQL("({})").format(sql.Literal(s)) for s in statuses)
    stuck = _oldest_active(
        updated_at,
        t,
        _render(
            "{st} = {running} AND {active} > 0",
            st=st,
            running=sql.Literal(running),
            active=sql.Identifier(active_chunks),
        ),
        f"Seconds since {updated_at} of the least recently updated {running!r} job with active "
        "chunks: a job whose chunks stopped moving.",
    )
    return (
        *stuck,
        Query(
            ACTIVE_CHUNKS,
            f"Chunks being processed: the sum of {active_chunks} over jobs whose {status} is "
            f"{running!r}.",
            _render(
                "SELECT coalesce(sum({active}), 0) AS active FROM {t} WHERE {st} = {running}",
                active=sql.Identifier(active_chunks),
                t=t,
                st=st,
                running=sql.Literal(running),
            ),
            ("active",),
        ),
        Query(
            "pixcrawler_jobs",
            JOBS_HELP,
            # The known statuses are listed with 0 so that their series exist before any job has
            # them; ::text lets an enum status column be grouped with them.
            _render(
                "SELECT status, sum(jobs) AS jobs FROM ("
                "SELECT {st}::text AS status, count(*) AS jobs FROM {t} GROUP BY 1 "
                "UNION ALL SELECT column1, 0 FROM (VALUES {known}) AS known"
                ") AS counts GROUP BY status",
                st=st,
                t=t,
                known=known,
            ),
            ("jobs",),
            ("status",),
        ),
        Query(
            "pixcrawler_job_chunks",
            JOB_CHUNKS_HELP,
            _render(
                "SELECT coalesce(sum({total}), 0) AS total, coalesce(sum({active}), 0) AS active,"
                " coalesce(sum({completed}), 0) AS completed,"
                " coalesce(sum({failed}), 0) AS failed FROM {t}",
                total=sql.Identifier(total_chunks),
                active=sql.Identifier(active_chunks),
                completed=sql.Identifier(completed_chunks),
                failed=sql.Identifier(failed_chunks),
                t=t,
            ),
            STATES,
            value_label="state",
        ),
    )


def processing_chunks(
    *,
    table: str = "chunks",
    schema: str | None = None,
    status: str = "status",
    processing: str = "processing",
    completed: str = "completed",
    failed: str = "failed",
    started_at: str | None = None,
) -> tuple[Query, ...]:
    """Seed 001: one row per chunk, ``status = 'processing'`` while it runs; ``started_at``
    names its start timestamp where the table has one, for the stuck-chunk age."""
    from psycopg import sql

    t, st = _table(table, schema), sql.Identifier(status)
    stuck = _oldest_active(
        started_at,
        t,
        _render("{st} = {processing}", st=st, processing=sql.Literal(processing)),
        f"Seconds since {started_at} of the oldest {processing!r} chunk: a chunk that never "
        "finished.",
    )
    return (
        *stuck,
        Query(
            ACTIVE_CHUNKS,
            f"Chunks being processed: rows of {table} whose {status} is {processing!r}.",
            _render(
                "SELECT count(*) AS active FROM {t} WHERE {st} = {processing}",
                t=t,
                st=st,
                processing=sql.Literal(processing),
            ),
            ("active",),
        ),
        Query(
            "pixcrawler_job_chunks",
            JOB_CHUNKS_HELP,
            _render(
                "SELECT count(*) AS total,"
                " count(*) FILTER (WHERE {st} = {processing}) AS active,"
                " count(*) FILTER (WHERE {st} = {completed}) AS completed,"
                " count(*) FILTER (WHERE {st} = {failed}) AS failed FROM {t}",
                st=st,
                t=t,
                processing=sql.Literal(processing),
                completed=sql.Literal(completed),
                failed=sql.Literal(failed),
            ),
            STATES,
            value_label="state",
        ),
    )


def _oldest_active(
    column: str | None, t: sql.Identifier, where: str, text: str
) -> tuple[Query, ...]:
    """The age of the preset's oldest active work where a timestamp column is named. No active
    work gives NULL, so no sample: nothing is stuck."""
    if column is None:
        return ()
    from psycopg import sql

    sql_text = _render(
        "SELECT extract(epoch FROM now() - min({c}))::float8 AS age FROM {t} WHERE ",
        c=sql.Identifier(column),
        t=t,
    )
    return (Query(OLDEST_ACTIVE, text, sql_text + where, ("age",)),)


PRESETS: Mapping[str, Callable[..., tuple[Query, ...]]] = {
    "crawl_jobs": crawl_jobs,
    "processing_chunks": processing_chunks,
}


def default_queries(preset: str = "crawl_jobs", **names: object) -> tuple[Query, ...]:
    """The preset's queries with its table and column names overridden by ``names``.

    ValueError names the accepted presets or the names the preset takes.
    """
    make = check_names(preset, **names)
    return make(**{k: v for k, v in names.items() if v is not None})


def check_names(preset: str, **names: object) -> Callable[..., tuple[Query, ...]]:
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


def database_queries(db: DatabaseSettings) -> tuple[Query, ...]:
    """The preset's queries (with the configured names) followed by the extra ones."""
    preset = () if db.preset == "none" else default_queries(db.preset, **(db.names or {}))
    return (*preset, *db.queries)
