"""A miniature PixCrawler: its Celery app, its chunk task and seed 003's chunk orchestrator.

Workers run it as ``celery -A tests.minicrawler worker`` (tests/helpers/celery_workers.py starts
them); they take ``app`` below, configured from the environment:

``MINICRAWLER_BROKER_URL``
    The broker, a ``redis://`` URL (default ``redis://127.0.0.1:6379/0``).
``MINICRAWLER_RESULT_BACKEND``
    The result backend (default: the broker's URL, as PixCrawler-like setups have it).
``MINICRAWLER_DATABASE``
    A libpq conninfo for the ``crawl_jobs`` table; unset, chunks update no database.
``MINICRAWLER_TEMP_DIR``
    Where chunks write their images (the exporter's temp storage directory in the tests).
``MINICRAWLER_TRANSPORT_OPTIONS``
    kombu's Redis transport options as JSON, e.g. a short ``visibility_timeout``.

The test process builds its own app with :func:`make_app` (the same configuration, given as
arguments) and sends chunks with :func:`start_job` or the task's ``apply_async``.

- ``tests.minicrawler.app``: :func:`make_app` and the settings PixCrawler-style workers use
  (late acknowledgement, prefetch 1, task events, started state).
- ``tests.minicrawler.chunk``: the task ``minicrawler.download_chunk``.
- ``tests.minicrawler.jobs``: the ``crawl_jobs`` row: :func:`create_job`, :func:`start_job`,
  :func:`on_chunk_complete`, :func:`read_job`.
"""

from __future__ import annotations

from tests.minicrawler.app import app_from_environment, make_app
from tests.minicrawler.jobs import (
    TASK_NAME,
    Job,
    create_job,
    on_chunk_complete,
    read_job,
    start_job,
)

__all__ = [
    "TASK_NAME",
    "Job",
    "app",
    "create_job",
    "make_app",
    "on_chunk_complete",
    "read_job",
    "start_job",
]

app = app_from_environment()
