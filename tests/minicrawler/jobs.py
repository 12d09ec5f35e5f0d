"""Seed 003's chunk orchestrator over a real ``crawl_jobs`` row (tests/pg.py's CRAWL_JOBS_TABLE).

- :func:`create_job` inserts a ``pending`` job, as the API's "create job" step does.
- :func:`start_job` splits the job into chunks of ``chunk_size`` images (500 in production),
  sends one ``minicrawler.download_chunk`` task per chunk and writes ``status='running'``,
  ``total_chunks``, ``active_chunks`` and ``task_ids``: the seed's steps 2 to 4.
- :func:`on_chunk_complete` is step 6, run by the chunk task when it ends: ``active_chunks -= 1``
  and ``completed_chunks += 1`` or ``failed_chunks += 1``; once every chunk has ended the job is
  ``completed`` (step 7), or ``failed`` when any chunk failed (a status seed 003 lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from celery import Celery

TASK_NAME = "minicrawler.download_chunk"

_ON_CHUNK_COMPLETE = """
UPDATE crawl_jobs SET
    active_chunks = active_chunks - 1,
    completed_chunks = completed_chunks + %(ok)s,
    failed_chunks = failed_chunks + 1 - %(ok)s,
    status = CASE
        WHEN completed_chunks + failed_chunks + 1 < total_chunks THEN status
        WHEN failed_chunks + 1 - %(ok)s = 0 THEN 'completed'
        ELSE 'failed'
    END
WHERE id = %(job)s
"""


@dataclass(frozen=True)
class Job:
    """One ``crawl_jobs`` row."""

    id: int
    status: str
    max_images: int
    total_chunks: int
    active_chunks: int
    completed_chunks: int
    failed_chunks: int
    task_ids: tuple[str, ...]


def split(total_images: int, chunk_size: int) -> list[int]:
    """Images per chunk: full chunks of ``chunk_size`` and the rest in a last one."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    full, rest = divmod(total_images, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def create_job(conn: psycopg.Connection[Any], max_images: int, project_id: int = 1) -> int:
    """Insert a ``pending`` job; its id."""
    row = conn.execute(
        "INSERT INTO crawl_jobs (project_id, max_images, status) VALUES (%s, %s, 'pending') "
        "RETURNING id",
        (project_id, max_images),
    ).fetchone()
    assert row is not None
    return int(row[0])


def start_job(
    conn: psycopg.Connection[Any],
    job_id: int,
    total_images: int,
    *,
    app: Celery,
    chunk_size: int = 500,
    queue: str | None = None,
    priority: int | None = None,
    **chunk_options: Any,
) -> list[str]:
    """Queue the job's chunks and mark it running; the chunks' task ids, in chunk order.

    ``chunk_options`` go to every chunk (``sleep``, ``fail``, ``retries`` ...; see
    tests/minicrawler/chunk.py). As in seed 003 the tasks are sent before the row is written, but
    inside one transaction that holds the row's lock: a chunk that ends at once waits for the row
    to say ``running`` before it counts itself, so the counters always add up."""
    task = app.tasks[TASK_NAME]
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if priority is not None:
        options["priority"] = priority
    with conn.transaction():
        found = conn.execute(
            "SELECT id FROM crawl_jobs WHERE id = %s FOR UPDATE", (job_id,)
        ).fetchone()
        if found is None:
            raise LookupError(f"crawl_jobs has no job {job_id}")
        task_ids = [
            str(task.apply_async((job_id, index, images), chunk_options, **options).id)
            for index, images in enumerate(split(total_images, chunk_size))
        ]
        conn.execute(
            "UPDATE crawl_jobs SET status = 'running', total_chunks = %s, active_chunks = %s, "
            "completed_chunks = 0, failed_chunks = 0, task_ids = %s WHERE id = %s",
            (len(task_ids), len(task_ids), task_ids, job_id),
        )
    return task_ids


def on_chunk_complete(conninfo: str, job_id: int, task_id: str, *, success: bool) -> None:
    """Count one chunk of ``job_id`` as ended, in one UPDATE (chunks end concurrently)."""
    del task_id  # seed 003 passes it; its counters do not use it
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(_ON_CHUNK_COMPLETE, {"ok": int(success), "job": job_id})


def read_job(conn: psycopg.Connection[Any], job_id: int) -> Job:
    row = conn.execute(
        "SELECT id, status, max_images, total_chunks, active_chunks, completed_chunks, "
        "failed_chunks, task_ids FROM crawl_jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"crawl_jobs has no job {job_id}")
    return Job(
        id=row[0],
        status=row[1],
        max_images=row[2],
        total_chunks=row[3],
        active_chunks=row[4],
        completed_chunks=row[5],
        failed_chunks=row[6],
        task_ids=tuple(row[7]),
    )
