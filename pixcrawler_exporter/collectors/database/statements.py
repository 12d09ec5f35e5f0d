"""The statements of one collection, and how they go over a connection: one read-only
transaction under a statement timeout the server enforces, the preset's statement prepared once
per connection and sent with BEGIN in one message, queries of your own one by one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from pixcrawler_exporter.collectors.database.failure import ReadError, classify, time_left
from pixcrawler_exporter.collectors.database.presets import PresetQuery, Statement
from pixcrawler_exporter.collectors.database.queries import Query
from pixcrawler_exporter.collectors.database.reading import Sample
from pixcrawler_exporter.collectors.database.watchdog import Attempt, Conn

log = logging.getLogger(__name__)

MAX_ROWS = 10_000  # per query: a runaway custom query must not flood /metrics
# Every collection's transaction: one snapshot for all statements, and nothing written.
BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# The preset's statement, prepared once per connection: the server parses and plans it once
# rather than on every scrape (a fifth of the statement's time on the server). Its name ends in
# a digest of its text: behind a transaction-pooling PgBouncer, a server connection keeps the
# statements other client connections prepared on it (another exporter, or this one before a
# restart with other database.names), and an EXECUTE that reaches one must not run theirs.
PREPARED = "exporter_preset"
# Behind such a pool: the statement is not on the server connection the EXECUTE reached, or
# is on the one the PREPARE reached (made there by another client connection).
_POOLED = (errors.InvalidSqlStatementName, errors.DuplicatePreparedStatement)


class _UnpreparedError(Exception):
    """The preset's prepared statement is not on the server connection the message reached."""


class Statements:
    """What one collection sends, with what it keeps between collections: a cursor of the
    connection in use and which connection the preset's statement is prepared on."""

    def __init__(self, queries: Sequence[Statement], statement_timeout: float, target: str) -> None:
        presets = [q for q in queries if isinstance(q, PresetQuery)]
        if len(presets) > 1 or (presets and queries[0] is not presets[0]):
            raise ValueError("one preset statement at most, before the other queries")
        # The preset's statement goes with BEGIN in one message; the others one by one.
        self.preset = presets[0] if presets else None
        self.prepared_name = (
            f"{PREPARED}_{hashlib.sha256(self.preset.sql.encode()).hexdigest()[:16]}"
            if self.preset is not None
            else None
        )
        self.custom_queries = tuple(q for q in queries if isinstance(q, Query))
        self.statement_timeout = statement_timeout
        self.target = target
        # A cursor of the connection in use, kept with it: making one costs a fifth of a read.
        self._cursor: psycopg.Cursor[TupleRow] | None = None
        # The connection the preset's statement is prepared on; none once a prepared statement
        # has been seen to vanish between transactions, or to be another's (_unprepared).
        self._prepared: Conn | None = None
        self._prepare = True

    def run(self, conn: Conn, attempt: Attempt) -> dict[str, tuple[Sample, ...]]:
        """Every statement in one read-only transaction, so that all figures of a collection
        come from one snapshot, under a statement timeout that the server enforces.

        BEGIN, the transaction's statement timeout, the preset's statement and (with no query
        of your own) COMMIT go as one message: a collection of the preset is one round trip
        (and one more on a new connection, which prepares the preset's statement first).
        The timeout is a transaction's setting, never a session's: behind a transaction-pooling
        PgBouncer a session's would stay on a server connection that the crawler's own
        transactions get next. A query of your own starting with less time left than the
        timeout in force gets the time left first, so that the server still cancels it before
        the deadline (with the defaults that never happens).
        """
        results: dict[str, tuple[Sample, ...]] = {}
        cur = self._cursor
        if cur is None or cur.connection is not conn:
            cur = self._cursor = conn.cursor()
        try:
            if self.preset is None:
                in_force = self._millis_left(attempt)
                attempt.step(in_force / 1000)
                cur.execute(self._opening(in_force), prepare=False)
            else:
                try:
                    if self._prepare and self._prepared is not conn:
                        self._prepare_preset(conn, cur, attempt)
                    in_force = self._millis_left(attempt)
                    results.update(self._preset(conn, cur, attempt, in_force))
                except _UnpreparedError:
                    self._unprepared(cur)
                    in_force = self._millis_left(attempt)
                    results.update(self._preset(conn, cur, attempt, in_force))
            for query in self.custom_queries:
                millis = self._millis_left(attempt)
                if millis < in_force:
                    cur.execute(f"SET LOCAL statement_timeout = {millis}".encode(), prepare=False)
                    in_force = millis
                attempt.step(millis / 1000)
                results[query.metric] = self._custom(conn, cur, query, millis / 1000)
            if conn.info.transaction_status != TransactionStatus.IDLE:
                attempt.step(self.statement_timeout)
                cur.execute(b"COMMIT", prepare=False)
        except BaseException:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                # The connection is kept for the next read only once idle (_checkin).
                with contextlib.suppress(psycopg.Error):
                    cur.execute(b"ROLLBACK", prepare=False)
            raise
        return results

    def _millis_left(self, attempt: Attempt) -> int:
        # 0 would mean no timeout at all.
        return max(1, round(time_left(self.statement_timeout, attempt.cutoff) * 1000))

    @staticmethod
    def _opening(millis: int) -> bytes:
        # Whole milliseconds, rendered by us: no parameter, so the simple protocol, which
        # takes several statements in one message.
        return f"{BEGIN}; SET LOCAL statement_timeout = {millis}".encode()

    def _prepare_preset(self, conn: Conn, cur: psycopg.Cursor[TupleRow], attempt: Attempt) -> None:
        """Prepare the preset's statement on a connection new to it: a round trip of its own,
        once per connection, so that a failure says for certain that nothing was prepared
        (a prepared statement outlives the transaction it was made in, even rolled back).
        In a transaction of its own with the statement timeout, as a collection is: parsing
        waits for a lock on the table, which an ALTER TABLE holds."""
        assert self.preset is not None
        millis = self._millis_left(attempt)
        attempt.step(millis / 1000)
        message = (
            f"{self._opening(millis).decode()}; "
            f"PREPARE {self.prepared_name} AS {self.preset.sql}; COMMIT"
        )
        self._send(conn, cur, message.encode(), None, millis / 1000, "the preset's statement")
        self._prepared = conn

    def _unprepared(self, cur: psycopg.Cursor[TupleRow]) -> None:
        """The prepared statement is gone from a connection it was made on, or another
        connection's is where it was to be made: the server connection behind ours changes
        between transactions and is shared with other clients, as behind a transaction-pooling
        PgBouncer. The statement is sent whole from now on; this read sends it again."""
        self._prepare, self._prepared = False, None
        cur.execute(b"ROLLBACK", prepare=False)
        log.warning(
            "the database's prepared statements are not the connection's own (a "
            "transaction-pooling proxy?): the preset's statement is sent whole on every read",
            extra={"database": self.target},
        )

    def _preset(
        self, conn: Conn, cur: psycopg.Cursor[TupleRow], attempt: Attempt, millis: int
    ) -> Mapping[str, tuple[Sample, ...]]:
        """BEGIN, the statement timeout, the preset's statement and (with no query of your
        own) COMMIT, in one message."""
        assert self.preset is not None
        attempt.step(millis / 1000)
        statement = f"EXECUTE {self.prepared_name}" if self._prepared is conn else self.preset.sql
        closing = "" if self.custom_queries else "; COMMIT"
        message = f"{self._opening(millis).decode()}; {statement}{closing}".encode()
        try:
            self._send(conn, cur, message, None, millis / 1000, "the preset's statement")
        except _UnpreparedError:
            if statement is self.preset.sql:
                raise ReadError("query", "the preset's statement: no prepared statement") from None
            raise
        # BEGIN's and SET's results come first: the rows are in the third.
        cur.nextset()
        cur.nextset()
        rows = cur.fetchmany(MAX_ROWS + 1)
        if len(rows) > MAX_ROWS:
            raise ReadError("query", f"the preset's statement: more than {MAX_ROWS} rows")
        return self.preset.figures(rows)

    def _custom(
        self, conn: Conn, cur: psycopg.Cursor[TupleRow], query: Query, timeout: float
    ) -> tuple[Sample, ...]:
        # Through the extended protocol, which takes one statement: "SELECT 1; COMMIT; BEGIN
        # READ WRITE; DELETE ..." would otherwise leave the read-only transaction and its
        # statement timeout behind.
        self._send(conn, cur, query.sql.encode(), query, timeout, f"query for {query.metric}")
        return _samples(query, cur)

    def _send(
        self,
        conn: Conn,
        cur: psycopg.Cursor[TupleRow],
        message: bytes,
        query: Query | None,
        timeout: float,
        what: str,
    ) -> None:
        try:
            if query is None:
                # Ours unprepared: the preset's message holds several statements, which only
                # the simple protocol takes (psycopg would prepare any statement it sees five
                # times).
                cur.execute(message, prepare=False)
            else:
                # The unnamed statement, which psycopg sends through the extended protocol in a
                # pipeline only. Not one of psycopg's prepared statements: their names
                # (_pg3_0, ...) are every connection's, and behind a transaction-pooling
                # PgBouncer the next transaction may reach a server connection that lacks the
                # statement, or holds another client's of that name.
                with conn.pipeline():
                    cur.execute(message, prepare=False)
        except psycopg.Error as exc:
            if conn.broken:
                raise  # the connection failed, not the query: the caller decides
            if isinstance(exc, _POOLED) and query is None:
                raise _UnpreparedError from None
            reason, text = classify(exc, "query")
            if reason == "timeout":
                text += f" (statement timeout {timeout:g}s)"
            elif reason == "missing_object":
                text += self._names_hint(query)
            raise ReadError(reason, f"{what}: {text}") from None

    def _names_hint(self, query: Query | None) -> str:
        """Which setting names what the query did not find: a table or column of a preset is
        named by database.names, one of a query of your own by that query."""
        if query is not None:
            return f" (database.queries: the query for {query.metric})"
        return (
            " (database.names names the preset's table, schema and columns; database.preset "
            "the preset, 'none' for database.queries alone)"
        )


def _samples(query: Query, cur: psycopg.Cursor[TupleRow]) -> tuple[Sample, ...]:
    where = f"query for {query.metric}"
    if cur.description is None:
        raise ReadError("query", f"{where}: the statement returned no result set")
    columns = [c.name for c in cur.description]
    for name in (*query.values, *query.labels):
        if name not in columns:
            raise ReadError(
                "query",
                f"{where}: column {name!r} is not in the result (it has {', '.join(columns)})",
            )
    label_at = [columns.index(name) for name in query.labels]
    value_at = [(name, columns.index(name)) for name in query.values]
    rows = cur.fetchmany(MAX_ROWS + 1)
    if len(rows) > MAX_ROWS:
        raise ReadError("query", f"{where}: more than {MAX_ROWS} rows")
    out: dict[tuple[str, ...], float] = {}
    for row in rows:
        labels = tuple("" if row[i] is None else str(row[i]) for i in label_at)
        for name, i in value_at:
            if row[i] is None:
                continue
            key = (*labels, name) if query.value_label else labels
            if key in out:
                raise ReadError("query", f"{where}: two rows have the labels {key}")
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
    raise ReadError("query", f"{where}: {type(value).__name__} {shown} is not a number")
