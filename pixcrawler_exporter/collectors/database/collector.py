"""Active chunks and jobs from PostgreSQL, through the configured queries.

Every failure of the database becomes a reading with ``up=False`` and an ``error`` (the scraper
then reports the collector failed but still renders the reading), so ``pixcrawler_database_up 0``
and the error counter are exported while the query metrics are absent: a stale count would let
the orchestrator over-commit.

A read is bounded on the client side. ``statement_timeout`` is the server's to enforce, and a
server that is stopped (SIGSTOP, a host whose storage stalls, a PgBouncer queueing the
connection) enforces nothing while its kernel still acknowledges, so TCP keepalives never fire
either. So the I/O runs on a thread of the collector's own, and the read waits for it only until
its deadline, or until a statement has gone unanswered a second past its statement timeout; then
the database reads as down (reason ``timeout``) and the connection in use is cut (see
:func:`_cut`) and dropped: that thread is free again at once, and the next read connects afresh
instead of waiting on the stuck one.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError, Future
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client.core import Metric
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector, Taken
from pixcrawler_exporter.collect.lane import Lane
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
# A read answers this long before its deadline (or a tenth of its time, if less), so that the
# scraper, waiting until the deadline itself, finds the reading rather than a late collector.
MARGIN_SECONDS = 0.1
# A statement is answered, or cancelled by the server, within its statement timeout: this long
# after it, the server is taken to have stopped answering (plenty for the cancel's round trip).
ANSWER_GRACE_SECONDS = 1.0

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


class _Attempt:
    """One collection on the collector's thread: the connection it has in use, so that the read
    that gives up on it can cut that connection, and when the statement under way must have
    been answered by."""

    def __init__(self, cutoff: float, first: float) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._conn: Conn | None = None
        self.abandoned = False
        self.cutoff = cutoff
        self._expires = cutoff
        self.step(first)

    def step(self, timeout: float) -> None:
        """What goes out next is answered within ``timeout``: statements (the server answers or
        cancels them by their statement timeout) or connecting (psycopg gives up by then)."""
        expires = min(self.cutoff, time.monotonic() + timeout + ANSWER_GRACE_SECONDS)
        with self._changed:
            earlier, self._expires = expires < self._expires, expires
            # A later time is seen when the waiter wakes at the earlier one: waking it for each
            # statement would cost a third more CPU per read.
            if earlier:
                self._changed.notify_all()

    def wait(self, future: Future[Any]) -> bool:
        """Wait for ``future``: True once it is done, False once the statement under way is
        overdue or the cutoff has come."""
        future.add_done_callback(self._wake)
        with self._changed:
            while not future.done():
                left = self._expires - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _wake(self, _done: Future[Any]) -> None:
        with self._changed:
            self._changed.notify_all()

    def use(self, conn: Conn) -> None:
        with self._lock:
            if self.abandoned:  # given up on while it was connecting
                raise _ReadError("timeout", "abandoned while connecting")
            self._conn = conn

    def done_with(self) -> None:
        # Before the connection may be closed: a descriptor is cut only while it is in use.
        with self._lock:
            self._conn = None

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            if self._conn is not None:
                _cut(self._conn)


def _cut(conn: Conn) -> None:
    """Shut the connection's socket down under libpq: its wait returns at once with end of
    file, the statement fails as "server closed the connection" and the connection is broken.

    Not ``cancel()``: a cancel request is a signal the stopped backend does not act on, sent
    through a postmaster that may be stopped too. Not closing the descriptor: that wakes no
    poll() on Linux, and its number could be handed to another socket meanwhile; shutdown(2)
    acts on the socket and leaves the descriptor to libpq, which closes it with the connection.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # no socket any more: nothing waits on it
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut down or reset: the wait has ended or is about to


class DatabaseCollector(Collector[DatabaseReading]):
    """Runs the queries in one read-only transaction per collection.

    One connection is kept between reads, and made when there is none (at start, after a
    failure): connecting fails at once with the real cause (refused, wrong password) and
    succeeds at once when the server is back. Reads never overlap (the scraper runs one at a
    time), so one connection is all they need.
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
        custom: frozenset[str] = frozenset(),
    ) -> None:
        self.queries = tuple(queries)
        self.query_descs = {
            q.metric: Desc(q.metric, q.help, "gauge", q.label_names) for q in self.queries
        }
        self.target = redact_url(url)
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.min_interval = min_interval
        self.custom = custom  # metrics of database.queries; the others are the preset's
        self._url = url
        self._errors = dict.fromkeys(REASONS, 0)
        self._lane = Lane("database")  # the I/O, which reads wait for until their deadline
        self._attempt: _Attempt | None = None  # the latest, for close() to cut
        self._kept: Conn | None = None  # the connection kept between reads
        self._kept_lock = threading.Lock()
        self._cache: DatabaseReading | None = None
        self._cached_at = 0.0
        # The reason of the last failure; None while readable.
        self._state: Changes[None, str | None] = Changes(None)
        # libpq connection parameters, as psycopg.connect takes them.
        self._kwargs: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "application_name": "pixcrawler-exporter",
            "autocommit": True,  # transactions are explicit; nothing is left open on error
            # A server that vanishes without closing the connection (a network partition): TCP
            # gives up on the kept connection within about 15 s instead of the kernel's two
            # hours, so it is found broken and replaced rather than waited on to the deadline.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 15_000,
        }
        self._closed = False

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
            frozenset(q.metric for q in db.queries),
        )

    def read_until(self, deadline: float) -> DatabaseReading:
        return self.read(deadline)

    def late(self, error: str) -> Taken:
        # A scrape that joined a collection opened with a later deadline: down, never absent.
        reading = DatabaseReading(False, None, {}, dict(self._errors), error, "timeout")
        return Taken(reading, error, lambda: self.metrics(reading))

    def describe(self) -> Iterable[Metric]:
        return [d.family() for d in (*self.descs, *self.query_descs.values())]

    def start(self) -> None:
        # Connections are made on demand: a server that is down at start is fine.
        log.info("database collector on", extra={"database": self.target})

    def close(self) -> None:
        self._closed = True
        self._lane.close()
        if (attempt := self._attempt) is not None:
            attempt.abandon()  # a read under way ends now rather than at its deadline
        with self._kept_lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()

    # --- reading --------------------------------------------------------------------------------

    def read(self, deadline: float | None = None) -> DatabaseReading:
        """Run every query; never raises for a database fault, and returns shortly before
        ``deadline`` (a ``time.monotonic()`` value) whatever the database does.

        The statement timeout of each query is cut to the time left, so that the server cancels
        a slow query itself and the connection stays usable. Without a deadline, the read may
        take as long as connecting and every query may.
        """
        now = time.monotonic()
        if self._cache is not None and now - self._cached_at < self.min_interval:
            return _replace_cached(self._cache)
        if deadline is None:
            deadline = now + self.connect_timeout + self.statement_timeout * (len(self.queries) + 1)
        try:
            samples = self._bounded(now, deadline)
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

    def _bounded(self, start: float, deadline: float) -> dict[str, tuple[Sample, ...]]:
        """The samples of one collection on the collector's thread, waited for until shortly
        before ``deadline``, or until a statement goes unanswered for its statement timeout and
        a second; then the collection is abandoned and its connection cut."""
        cutoff = deadline - min(MARGIN_SECONDS, max(0.0, deadline - start) / 10)
        # The first step is a statement on the kept connection, the usual case.
        attempt = self._attempt = _Attempt(cutoff, self.statement_timeout)
        try:
            future = self._lane.submit(partial(self._collect, attempt))
            if attempt.wait(future):
                return future.result()
        except (RuntimeError, CancelledError) as exc:  # closed, or no thread to be had
            raise _ReadError("connect", f"reading {self.target}: {exc or 'closed'}") from None
        now = time.monotonic()
        why = (
            "the scrape's deadline" if now >= cutoff else "a statement unanswered past its timeout"
        )
        waited = f"reading {self.target}: no answer within {now - start:.2f}s ({why})"
        if future.cancel():
            # Behind a connection attempt abandoned earlier, which ends by its connect timeout
            # (there is no socket to cut before libpq has connected).
            raise _ReadError("timeout", f"{waited}: an earlier connection attempt is under way")
        attempt.abandon()
        raise _ReadError("timeout", f"{waited}; connection dropped")

    def _collect(self, attempt: _Attempt) -> dict[str, tuple[Sample, ...]]:
        for tried in (1, 2):
            conn, kept = self._checkout(attempt)
            try:
                attempt.use(conn)
                try:
                    return self._run_all(conn, attempt)
                finally:
                    attempt.done_with()
            except psycopg.Error as exc:
                # A kept connection may predate a server restart: try once on a fresh one.
                if kept and conn.broken and tried == 1 and not attempt.abandoned:
                    continue
                reason, message = _classify(exc, "connect" if conn.broken else "query")
                raise _ReadError(reason, f"reading {self.target}: {message}") from None
            finally:
                self._checkin(conn, attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _checkout(self, attempt: _Attempt) -> tuple[Conn, bool]:
        if self._closed:
            raise _ReadError("connect", "the database collector is closed")
        with self._kept_lock:
            conn, self._kept = self._kept, None
        if conn is not None:
            return conn, True
        timeout = self._time_left(self.connect_timeout, attempt.cutoff)
        # libpq takes whole seconds, and reads 0 as "wait forever"; psycopg makes 1 into 2. An
        # attempt still connecting at the cutoff is abandoned, and ends by itself.
        seconds = max(2, math.ceil(timeout))
        attempt.step(seconds)
        try:
            conn = psycopg.connect(self._url, **{**self._kwargs, "connect_timeout": seconds})
            _configure(conn)
        except psycopg.Error as exc:
            reason, message = _classify(exc, "connect")
            raise _ReadError(reason, f"connecting to {self.target}: {message}") from None
        return conn, False

    def _checkin(self, conn: Conn, attempt: _Attempt) -> None:
        """Keep a connection that is sound and idle for the next read; close any other."""
        if (
            attempt.abandoned
            or self._closed
            or conn.broken
            or conn.info.transaction_status != TransactionStatus.IDLE
        ):
            conn.close()
            return
        with self._kept_lock:
            other, self._kept = self._kept, conn
        if other is not None:  # pragma: no cover - reads never overlap
            other.close()

    def _run_all(self, conn: Conn, attempt: _Attempt) -> dict[str, tuple[Sample, ...]]:
        results: dict[str, tuple[Sample, ...]] = {}
        attempt.step(self.statement_timeout)  # BEGIN
        # One transaction: every metric of a collection comes from the same snapshot.
        with conn.transaction(), conn.cursor() as cur:
            for query in self.queries:
                timeout = self._time_left(self.statement_timeout, attempt.cutoff)
                attempt.step(timeout)
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
                    elif reason == "missing_object":
                        message += self._names_hint(query)
                    raise _ReadError(reason, f"query for {query.metric}: {message}") from None
                results[query.metric] = _samples(query, cur)
            attempt.step(self.statement_timeout)  # COMMIT
        return results

    def _names_hint(self, query: Query) -> str:
        """Which setting names what the query did not find: a table or column of a preset is
        named by database.names, one of a query of your own by that query."""
        if query.metric in self.custom:
            return f" (database.queries: the query for {query.metric})"
        return (
            " (database.names names the preset's table, schema and columns; database.preset "
            "the preset, 'none' for database.queries alone)"
        )

    def _time_left(self, limit: float, deadline: float) -> float:
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
    # A text column can hold megabytes: its start is enough to recognise it in /health and the
    # log, where the whole would be echoed on every scrape.
    shown = repr(value)
    if len(shown) > 80:
        shown = f"{shown[:60]}... ({len(shown)} characters)"
    raise _ReadError("query", f"{where}: {type(value).__name__} {shown} is not a number")


_AUTH = re.compile(r"authentication|password|pg_hba\.conf|role .* does not exist", re.IGNORECASE)


def _classify(exc: BaseException, phase: str) -> tuple[str, str]:
    """The reason label and a one-line message for a psycopg exception."""
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
