"""Active chunks and jobs from PostgreSQL, through the configured queries.

Every failure of the database becomes a reading with ``up=False`` and an ``error`` (the scraper
then reports the collector failed but still renders the reading), so ``pixcrawler_database_up 0``
and the error counter are exported while the query metrics are absent: a stale count would let
the orchestrator over-commit.

A read is bounded on the client side (see :mod:`.watchdog`): it waits for a statement until a
second past its statement timeout and for the whole collection until shortly before its
deadline; then the database reads as down (reason ``timeout``) and the connection in use is cut
and dropped, so the read returns at once and the next one connects afresh instead of waiting
on the stuck one. Statements run on the reading thread; connecting, which cannot be cut (libpq
has no socket to give before it has connected), runs on a thread of the collector's own and is
waited for until the same bounds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import CancelledError
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client.core import Metric
from psycopg.pq import TransactionStatus

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector, Taken
from pixcrawler_exporter.collect.lane import Lane
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collectors.database.dsn import redact_url
from pixcrawler_exporter.collectors.database.failure import ReadError, classify, time_left
from pixcrawler_exporter.collectors.database.presets import (
    ACTIVE_CHUNKS,
    Statement,
    database_queries,
    gauges_of,
)
from pixcrawler_exporter.collectors.database.reading import DatabaseReading, Sample
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings
from pixcrawler_exporter.collectors.database.statements import Statements
from pixcrawler_exporter.collectors.database.watchdog import (
    AbandonedError,
    Attempt,
    Conn,
    Watchdog,
)

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

log = logging.getLogger(__name__)

REASONS = ("connect", "auth", "timeout", "missing_object", "permission", "query")
# A read answers this long before its deadline (or a tenth of its time, if less), so that the
# scraper, waiting until the deadline itself, finds the reading rather than a late collector.
MARGIN_SECONDS = 0.1
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


class DatabaseCollector(Collector[DatabaseReading]):
    """Runs the queries in one read-only transaction per collection.

    One connection is kept between reads, and made when there is none (at start, after a
    failure): connecting fails at once with the real cause (refused, wrong password) and
    succeeds at once when the server is back. Reads never overlap (the scraper runs one at a
    time), so one connection is all they need.
    """

    name = "database"
    # Read on the scrape's own thread: a read returns by its deadline by itself (the watchdog
    # cuts what goes unanswered), and an ordinary one is one round trip, most of it spent
    # waiting on the server with the GIL released. A hand-off to a thread of the scraper's
    # and back cost more CPU than the rest of the read.
    inline = True
    services = ("database",)
    descs = (UP, ERRORS)

    def __init__(
        self,
        url: str,
        queries: Sequence[Statement],
        statement_timeout: float,
        connect_timeout: float,
        min_interval: float,
    ) -> None:
        self.queries = tuple(queries)
        self.target = redact_url(url)
        self.statements = Statements(self.queries, statement_timeout, self.target)
        self.query_descs = {
            g.metric: Desc(g.metric, g.help, "gauge", g.label_names)
            for q in self.queries
            for g in gauges_of(q)
        }
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.min_interval = min_interval
        self._url = url
        self._errors = dict.fromkeys(REASONS, 0)
        self._errors_rendered: tuple[tuple[int, ...], Metric] | None = None
        self._families: dict[str, tuple[tuple[Sample, ...], Metric]] = {}
        self._up = {True: UP.value(1), False: UP.value(0)}
        self._lane = Lane("database")  # connecting, which reads wait for until their bounds
        self._watchdog = Watchdog("database-watchdog")  # cuts statements gone unanswered
        self._attempt: Attempt | None = None  # the latest, for close() to cut
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
            # Transactions are explicit (see _run_all); nothing is left open on error.
            "autocommit": True,
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
        self._watchdog.close()
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
        except ReadError as failure:
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
        """The samples of one collection, or a timeout shortly before ``deadline``, or once a
        statement has gone unanswered for its statement timeout and a second: the collection
        is then abandoned and its connection cut."""
        cutoff = deadline - min(MARGIN_SECONDS, max(0.0, deadline - start) / 10)
        attempt = self._attempt = Attempt(self._watchdog, start, cutoff)
        try:
            return self._collect(attempt)
        except (RuntimeError, CancelledError) as exc:  # closed, or no thread to be had
            raise ReadError("connect", f"reading {self.target}: {exc or 'closed'}") from None
        finally:
            self._watchdog.release(attempt)

    def _collect(self, attempt: Attempt) -> dict[str, tuple[Sample, ...]]:
        for tried in (1, 2):
            conn, kept = self._checkout(attempt)
            try:
                try:
                    return self.statements.run(conn, attempt)
                finally:
                    attempt.done_with()
            except psycopg.Error as exc:
                if attempt.abandoned:
                    raise self._overdue(attempt, "; connection dropped") from None
                # A kept connection may predate a server restart: try once on a fresh one.
                if kept and conn.broken and tried == 1:
                    continue
                reason, message = classify(exc, "connect" if conn.broken else "query")
                raise ReadError(reason, f"reading {self.target}: {message}") from None
            finally:
                self._checkin(conn, attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _overdue(self, attempt: Attempt, what: str) -> ReadError:
        now = time.monotonic()
        why = (
            "the scrape's deadline"
            if now >= attempt.cutoff
            else "a statement unanswered past its timeout"
        )
        took = now - attempt.started
        return ReadError(
            "timeout", f"reading {self.target}: no answer within {took:.2f}s ({why}){what}"
        )

    def _checkout(self, attempt: Attempt) -> tuple[Conn, bool]:
        """A connection in use by ``attempt``: the one kept from the last read, else a new one."""
        if self._closed:
            raise ReadError("connect", "the database collector is closed")
        with self._kept_lock:
            conn, self._kept = self._kept, None
        if conn is not None:
            try:
                attempt.use(conn)
            except AbandonedError:
                conn.close()
                raise self._overdue(attempt, "") from None
            return conn, True
        timeout = time_left(self.connect_timeout, attempt.cutoff)
        # libpq takes whole seconds, and reads 0 as "wait forever"; psycopg makes 1 into 2. An
        # attempt still connecting at the cutoff is abandoned, and ends by itself.
        seconds = max(2, math.ceil(timeout))
        attempt.step(seconds)
        future = self._lane.submit(partial(self._connect, attempt, seconds))
        try:
            return future.result(max(0.0, attempt.expires - time.monotonic())), False
        except AbandonedError:  # the watchdog gave up on it, or the collector closed
            raise self._overdue(attempt, "; connection dropped") from None
        except TimeoutError:
            attempt.abandon()
            if future.cancel():
                # Behind a connection attempt abandoned earlier, which ends by its connect
                # timeout (there is no socket to cut before libpq has connected).
                raise self._overdue(
                    attempt, ": an earlier connection attempt is under way"
                ) from None
            raise self._overdue(attempt, "; connection dropped") from None

    def _connect(self, attempt: Attempt, seconds: int) -> Conn:
        try:
            conn = psycopg.connect(self._url, **{**self._kwargs, "connect_timeout": seconds})
        except psycopg.Error as exc:
            reason, message = classify(exc, "connect")
            raise ReadError(reason, f"connecting to {self.target}: {message}") from None
        try:
            attempt.use(conn)
        except AbandonedError:  # the read gave up waiting: nobody will use it
            conn.close()
            raise
        return conn

    def _checkin(self, conn: Conn, attempt: Attempt) -> None:
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

    def _errors_family(self, counts: Mapping[str, int]) -> Metric:
        # The counts change only when a read fails: the family is made once per change, as
        # families are read and never changed once rendered.
        key = tuple(counts.get(reason, 0) for reason in REASONS)
        cached = self._errors_rendered
        if cached is None or cached[0] != key:
            family = ERRORS.family()
            for reason, count in zip(REASONS, key, strict=True):
                add(family, count, reason)
            cached = self._errors_rendered = (key, family)
        return cached[1]

    def metrics(self, reading: DatabaseReading) -> Iterable[Metric]:
        yield self._up[reading.up]
        yield self._errors_family(reading.errors_total)
        for metric, desc in self.query_descs.items():
            samples = reading.samples.get(metric)
            if samples is None:
                continue
            # The figures seldom change between scrapes: a family is made when they do, and
            # kept (families are never changed once rendered), as the error counts' is.
            cached = self._families.get(metric)
            if cached is None or cached[0] != samples:
                family = desc.family()
                for labels, value in samples:
                    add(family, value, *labels)
                cached = self._families[metric] = (samples, family)
            yield cached[1]


def _replace_cached(reading: DatabaseReading) -> DatabaseReading:
    return DatabaseReading(
        reading.up,
        reading.active_chunks,
        reading.samples,
        reading.errors_total,
        cached=True,
        checked_at=reading.checked_at,
    )
