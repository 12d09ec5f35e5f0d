"""Seed 003's reconcile, as a figure: chunk tasks that finished in Celery but not in the database.

Seed 003's fix for "chunks stuck in active" reads each ``job.task_ids`` entry's Celery state and
calls the completion callback for those already ``SUCCESS`` or ``FAILURE``. Here the same facts
are counted, not repaired: one query reads the running jobs' counters and task ids from the jobs
table the database collector is configured with (``database.url``, ``database.names``), one
pipelined MGET reads their results from the result backend (Celery's Redis backend keeps
``celery-task-meta-<id>``), and per job the tasks whose result is final (success, failure,
revoked) beyond the chunks the job has recorded completed or failed are stuck: the database still
counts them active and will until someone reconciles by hand.

Where the table has no ``task_ids`` column the stuck count is unknown; the database's active
chunks are still read, for the difference with what Celery holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.errors import CollectorError
from pixcrawler_exporter.collectors.celery.reading import Moment, ReconcileReading

if TYPE_CHECKING:
    import psycopg
    import redis
    from psycopg.rows import TupleRow

    from pixcrawler_exporter.collectors.database.settings import DatabaseSettings

log = logging.getLogger(__name__)

FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
RESULT_KEY = "celery-task-meta-{}"  # celery.backends.base.KeyValueStoreBackend.task_keyprefix
MAX_JOBS = 10_000
MAX_TASK_IDS = 200_000
MGET_BATCH = 1_000


@dataclass(frozen=True)
class JobsTable:
    """The jobs table's names, as ``database.names`` overrides the crawl_jobs preset's."""

    table: str = "crawl_jobs"
    schema: str | None = None
    status: str = "status"
    running: str = "running"
    active_chunks: str = "active_chunks"
    completed_chunks: str = "completed_chunks"
    failed_chunks: str = "failed_chunks"
    task_ids: str = "task_ids"

    @classmethod
    def of(cls, db: DatabaseSettings) -> JobsTable | None:
        """The table to reconcile with, or None when the database is not seed 003's table."""
        if db.url is None or db.preset != "crawl_jobs":
            return None
        names = db.names or {}
        known = {k: v for k, v in names.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]  # checked by the database's settings


@dataclass(frozen=True)
class _Job:
    active: int
    recorded: int  # completed + failed
    task_ids: tuple[str, ...] | None  # None: the table has no task_ids column


class Reconciler:
    """Runs on the collector's reconcile thread; keeps one database connection between runs."""

    def __init__(self, db_url: str, table: JobsTable, timeout: float) -> None:
        self.db_url = db_url
        self.table = table
        self.timeout = timeout
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._has_task_ids = True
        self._column: Changes[None, bool] = Changes(True)

    def read(self, backend: redis.Redis) -> ReconcileReading:
        jobs = self._jobs()
        active = sum(j.active for j in jobs)
        if not self._has_task_ids:
            return ReconcileReading(active, None, 0, Moment.now())
        ids = [i for j in jobs for i in j.task_ids or ()]
        if len(ids) > MAX_TASK_IDS:
            raise CollectorError(
                f"reconciling: {len(ids)} task ids of running jobs, more than {MAX_TASK_IDS}"
            )
        final = _final(backend, ids)
        stuck = sum(
            max(0, sum(1 for i in j.task_ids or () if i in final) - j.recorded) for j in jobs
        )
        return ReconcileReading(active, stuck, len(ids), Moment.now())

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _jobs(self) -> list[_Job]:
        import psycopg

        try:
            rows = self._query(with_ids=self._has_task_ids)
        except psycopg.errors.UndefinedColumn:
            if not self._has_task_ids:
                raise
            self._has_task_ids = False
            if self._column.update(None, False) is not None:
                log.info(
                    "no task_ids column: chunks stuck after their task finished are not counted",
                    extra={"table": self.table.table, "column": self.table.task_ids},
                )
            rows = self._query(with_ids=False)
        except psycopg.Error as exc:
            self.close()  # a broken connection is made again on the next run
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise CollectorError(f"reconciling with the jobs table: {message}") from None
        return [_job(row, self._has_task_ids) for row in rows]

    def _query(self, with_ids: bool) -> Sequence[TupleRow]:
        import psycopg
        from psycopg import sql

        t = self.table
        table = sql.Identifier(t.schema, t.table) if t.schema else sql.Identifier(t.table)
        columns = [t.active_chunks, t.completed_chunks, t.failed_chunks]
        if with_ids:
            columns.append(t.task_ids)
        query = sql.SQL("SELECT {} FROM {} WHERE {} = {} LIMIT {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            table,
            sql.Identifier(t.status),
            sql.Literal(t.running),
            sql.Literal(MAX_JOBS + 1),
        )
        if self._conn is None or self._conn.closed:
            seconds = max(1, round(self.timeout))  # libpq takes whole seconds
            self._conn = psycopg.connect(
                self.db_url,
                connect_timeout=seconds,
                application_name="pixcrawler-exporter-reconcile",
                autocommit=True,
                options=f"-c statement_timeout={round(self.timeout * 1000)}",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=15_000,
            )
            self._conn.read_only = True
        rows = self._conn.execute(query).fetchall()
        if len(rows) > MAX_JOBS:
            raise CollectorError(f"reconciling: more than {MAX_JOBS} running jobs")
        return rows


def _job(row: TupleRow, with_ids: bool) -> _Job:
    active, completed, failed = (int(v or 0) for v in row[:3])
    ids: tuple[str, ...] | None = None
    if with_ids:
        raw = row[3]
        if isinstance(raw, str):  # a JSON column read as text
            raw = json.loads(raw)
        ids = tuple(str(i) for i in raw or () if i)
    return _Job(active, completed + failed, ids)


def _final(backend: redis.Redis, ids: Sequence[str]) -> set[str]:
    """The ids whose stored result is final; a result that has expired is unknown, not final."""
    import redis

    pipe = backend.pipeline(transaction=False)
    for start in range(0, len(ids), MGET_BATCH):
        pipe.mget([RESULT_KEY.format(i) for i in ids[start : start + MGET_BATCH]])
    try:
        batches = pipe.execute()
    except redis.RedisError as exc:
        raise CollectorError(f"reading task results: {type(exc).__name__}: {exc}") from None
    final: set[str] = set()
    for task_id, raw in zip(ids, (v for batch in batches for v in batch), strict=True):
        if raw is not None and _status(raw) in FINAL:
            final.add(task_id)
    return final


def _status(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None  # pickled results (result_serializer='pickle') are not read
    status = doc.get("status") if isinstance(doc, dict) else None
    return status if isinstance(status, str) else None
