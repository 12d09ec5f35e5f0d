"""Active chunks and jobs from PostgreSQL, through the configured queries.

Every failure of the database becomes a reading with ``up=False`` and an ``error`` (the scraper
then reports the collector failed but still renders the reading), so ``pixcrawler_database_up 0``
and the error counter are exported while the query metrics are absent: a stale count would let
the orchestrator over-commit.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client.core import Metric
from psycopg import errors
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collectors.database.dsn import redact_url
from pixcrawler_exporter.collectors.database.queries import ACTIVE_CHUNKS, Query, database_queries
from pixcrawler_exporter.collectors.database.reading import DatabaseReading, Sample
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

log = logging.getLogger(__name__)

REASONS = ("connect", "auth", "timeout", "missing_object", "permission", "query")
MAX_ROWS = 10_000  # per query: a runaway custom query must not flood /metrics

UP = Desc(
    "pixcrawler_database_up",
    "1 when the last collection from PostgreSQL worked, 0 when it failed.",
)
ERRORS = Desc(
    "pixcrawler_database_errors_total",
    "Failed collections from PostgreSQL by cause: connect, auth, timeout, missing_object, "
    "permission, query.",
    "counter",
    ("reason",),
)

Conn = psycopg.Connection[TupleRow]


class _ReadError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DatabaseCollector(Collector[DatabaseReading]):
    """Runs the queries in one read-only transaction per collection.

    The pool keeps a connection between scrapes. When it has none ready (at start, after a
    failure) the collector connects itself rather than waiting on the pool, whose background
    connector retries quietly until its timeout: connecting here fails at once with the real
    cause (refused, wrong password) and succeeds at once when the server is back.
    """

    name = "database"
    services = ("database",)
    descs = (UP, ERRORS)

    def __init__(
        self,
        url: str,
        queries: Sequence[Query],
        statement_timeout: float,
        connect_timeout: float,
        min_interval: float,
    ) -> None:
        self.queries = tuple(queries)
        self.query_descs = {
            q.metric: Desc(q.metric, q.help, "gauge", q.label_names) for q in self.queries
        }
        self.target = redact_url(url)
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.min_interval = min_interval
        self._url = url
        self._errors = dict.fromkeys(REASONS, 0)
        self._cache: DatabaseReading | None = None
        self._cached_at = 0.0
        # The reason of the last failure; None while readable.
        self._state: Changes[None, str | None] = Changes(None)
        # libpq connection parameters, as psycopg.connect takes them.
        self._kwargs: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "application_name": "pixcrawler-exporter",
            "autocommit": True,  # transactions are explicit; nothing is left open on error
            # A server that vanishes without closing the connection (a network partition)
            # answers neither our queries nor statement_timeout's cancel: TCP gives up on it
            # within about 15 s instead of the kernel's two hours, so no read hangs a thread.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 15_000,
        }
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            kwargs=self._kwargs,
            min_size=0,
            max_size=2,
            open=False,
            configure=_configure,
            timeout=connect_timeout,
            reconnect_timeout=connect_timeout,
            name="pixcrawler-database",
        )
        self._closed = False
        # The pool logs each background reconnection attempt; this collector logs each change of
        # state itself, once.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    @classmethod
    def settings(cls, config: Config) -> object:
        return config.source(DatabaseSettings)

    @classmethod
    def build(cls, context: BuildContext) -> DatabaseCollector | None:

        db = context.config.source(DatabaseSettings)
        if db.url is None:  # the registration says so before this module is loaded
            return None
        return cls(
            db.url,
            database_queries(db),
            db.statement_timeout_seconds,
            db.connect_timeout_seconds,
            db.min_interval_seconds,
        )

    def read_until(self, deadline: float) -> DatabaseReading:
        return self.read(deadline)

    def describe(self) -> Iterable[Metric]:
        return [d.family() for d in (*self.descs, *self.query_descs.values())]

    def start(self) -> None:
        log.info("database collector on", extra={"database": self.target})
        self._pool.open(wait=False)  # connections are made on demand: a down server is fine

    def close(self) -> None:
        self._closed = True
        self._pool.close(timeout=1)

    # --- reading --------------------------------------------------------------------------------

    def read(self, deadline: float | None = None) -> DatabaseReading:
        """Run every query; never raises for a database fault.

        ``deadline`` (a ``time.monotonic()`` value) cuts the statement timeout of each query to
        the time left, so that no query runs past the scrape that asked for it.
        """
        now = time.monotonic()
        if self._cache is not None and now - self._cached_at < self.min_interval:
            return _replace_cached(self._cache)
        try:
            samples = self._collect(deadline)
        except _ReadError as failure:
            self._errors[failure.reason] += 1
            self._cache = None
            # Messages name the database by its redacted URL; libpq's never quote a password.
            message = str(failure)
            reading = DatabaseReading(False, None, {}, dict(self._errors), message, failure.reason)
        else:
            active = samples.get(ACTIVE_CHUNKS)
            reading = DatabaseReading(
                True,
                int(active[0][1]) if active and not active[0][0] else None,
                samples,
                dict(self._errors),
            )
            if self.min_interval > 0:
                self._cache, self._cached_at = reading, now
        self._log_change(reading)
        return reading

    def _collect(self, deadline: float | None) -> dict[str, tuple[Sample, ...]]:
        for attempt in (1, 2):
            conn, pooled = self._checkout(deadline)
            try:
                return self._run_all(conn, deadline)
            except psycopg.Error as exc:
                # A pooled connection may predate a server restart: try once on a fresh one.
                if pooled and conn.broken and attempt == 1:
                    continue
                reason, message = _classify(exc, "connect" if conn.broken else "query")
                raise _ReadError(reason, f"reading {self.target}: {message}") from None
            finally:
                self._checkin(conn, pooled)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _checkout(self, deadline: float | None) -> tuple[Conn, bool]:
        if self._closed:
            raise _ReadError("connect", "the database collector is closed")
        self._pool.open(wait=False)
        timeout = self._time_left(self.connect_timeout, deadline)
        try:
            if self._pool.get_stats().get("pool_available", 0) > 0:
                return self._pool.getconn(timeout=timeout), True
            # libpq takes whole seconds, and reads 0 as "wait forever".
            seconds = max(1, math.ceil(timeout))
            conn: Conn = psycopg.connect(self._url, **{**self._kwargs, "connect_timeout": seconds})
            _configure(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            reason, message = _classify(exc, "connect")
            raise _ReadError(reason, f"connecting to {self.target}: {message}") from None
        # The server answers: let the pool make a connection of its own for the next scrapes.
        self._pool.check()
        return conn, False

    def _checkin(self, conn: Conn, pooled: bool) -> None:
        if pooled:
            self._pool.putconn(conn)  # the pool replaces it if it broke
        else:
            conn.close()

    def _run_all(self, conn: Conn, deadline: float | None) -> dict[str, tuple[Sample, ...]]:
        results: dict[str, tuple[Sample, ...]] = {}
        # One transaction: every metric of a collection comes from the same snapshot.
        with conn.transaction(), conn.cursor() as cur:
            for query in self.queries:
                timeout = self._time_left(self.statement_timeout, deadline)
                # 0 would mean no timeout at all.
                millis = max(1, round(timeout * 1000))
                cur.execute("SELECT set_config('statement_timeout', %s, true)", (str(millis),))
                try:
                    # Prepared, so through the extended protocol, which takes one statement:
                    # "SELECT 1; COMMIT; BEGIN READ WRITE; DELETE ..." would otherwise leave
                    # the read-only transaction and its statement timeout behind.
                    cur.execute(query.sql.encode(), prepare=True)
                except psycopg.Error as exc:
                    if conn.broken:
                        raise  # the connection failed, not the query: the caller decides
                    reason, message = _classify(exc, "query")
                    if reason == "timeout":
                        message += f" (statement timeout {timeout:g}s)"
                    raise _ReadError(reason, f"query for {query.metric}: {message}") from None
                results[query.metric] = _samples(query, cur)
        return results

    def _time_left(self, limit: float, deadline: float | None) -> float:
        if deadline is None:
            return limit
        left = deadline - time.monotonic()
        if left <= 0.001:
            raise _ReadError("timeout", "the scrape deadline passed before the queries finished")
        return min(limit, left)

    def _log_change(self, reading: DatabaseReading) -> None:
        if self._state.update(None, reading.reason) is None:
            return
        if reading.reason is None:
            log.info("database readable again", extra={"database": self.target})
        else:
            log.warning(
                "database not readable",
                extra={"database": self.target, "reason": reading.reason, "error": reading.error},
            )

    # --- rendering ------------------------------------------------------------------------------

    def metrics(self, reading: DatabaseReading) -> Iterable[Metric]:
        yield UP.value(1 if reading.up else 0)
        errors_total = ERRORS.family()
        for reason in REASONS:
            add(errors_total, reading.errors_total.get(reason, 0), reason)
        yield errors_total
        for metric, desc in self.query_descs.items():
            samples = reading.samples.get(metric)
            if samples is None:
                continue
            family = desc.family()
            for labels, value in samples:
                add(family, value, *labels)
            yield family


def _configure(conn: Conn) -> None:
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ


def _replace_cached(reading: DatabaseReading) -> DatabaseReading:
    return DatabaseReading(
        reading.up,
        reading.active_chunks,
        reading.samples,
        reading.errors_total,
        cached=True,
        checked_at=reading.checked_at,
    )


def _samples(query: Query, cur: psycopg.Cursor[TupleRow]) -> tuple[Sample, ...]:
    where = f"query for {query.metric}"
    if cur.description is None:
        raise _ReadError("query", f"{where}: the statement returned no result set")
    columns = [c.name for c in cur.description]
    for name in (*query.values, *query.labels):
        if name not in columns:
            raise _ReadError(
                "query",
                f"{where}: column {name!r} is not in the result (it has {', '.join(columns)})",
            )
    label_at = [columns.index(name) for name in query.labels]
    value_at = [(name, columns.index(name)) for name in query.values]
    rows = cur.fetchmany(MAX_ROWS + 1)
    if len(rows) > MAX_ROWS:
        raise _ReadError("query", f"{where}: more than {MAX_ROWS} rows")
    out: dict[tuple[str, ...], float] = {}
    for row in rows:
        labels = tuple("" if row[i] is None else str(row[i]) for i in label_at)
        for name, i in value_at:
            if row[i] is None:
                continue
            key = (*labels, name) if query.value_label else labels
            if key in out:
                raise _ReadError("query", f"{where}: two rows have the labels {key}")
            out[key] = _number(row[i], f"{where}, column {name!r}")
    return tuple(out.items())


def _number(value: object, where: str) -> float:
    if isinstance(value, int | float | Decimal):
        return float(value)
    raise _ReadError("query", f"{where}: {type(value).__name__} {value!r} is not a number")


_AUTH = re.compile(r"authentication|password|pg_hba\.conf|role .* does not exist", re.IGNORECASE)


def _classify(exc: BaseException, phase: str) -> tuple[str, str]:
    """The reason label and a one-line message for a psycopg or pool exception."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    reason = "query"
    if isinstance(exc, errors.QueryCanceled):
        reason = "timeout"  # statement_timeout, or a cancel at the deadline
    elif isinstance(
        exc,
        errors.UndefinedTable
        | errors.UndefinedColumn
        | errors.UndefinedFunction
        | errors.InvalidSchemaName
        | errors.UndefinedObject
        | errors.InvalidCatalogName,
    ):
        reason = "missing_object"
    elif isinstance(exc, errors.InsufficientPrivilege):
        reason = "permission"
    elif isinstance(exc, errors.InvalidPassword | errors.InvalidAuthorizationSpecification):
        reason = "auth"
    elif phase == "connect":
        # A failed connection carries no SQLSTATE: only libpq's message tells the cause.
        if _AUTH.search(message):
            reason = "auth"
        elif re.search(r"database .* does not exist", message):
            reason = "missing_object"
        else:
            reason = "connect"
    return reason, message
