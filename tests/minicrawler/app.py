"""The minicrawler's Celery app, configured as a PixCrawler-style deployment runs its workers."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from celery import Celery

from tests.minicrawler.chunk import download_chunk
from tests.minicrawler.jobs import TASK_NAME

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def make_app(
    broker_url: str,
    result_backend: str | None = None,
    *,
    temp_dir: str | None = None,
    database: str | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> Celery:
    """A Celery app with the chunk task registered as ``minicrawler.download_chunk``.

    ``database`` is the libpq conninfo chunks update ``crawl_jobs`` through (None: no database);
    ``temp_dir`` is where they write images; ``transport_options`` go to kombu's Redis transport
    (``visibility_timeout``, ``unacked_restore_interval`` ...)."""
    app = Celery("minicrawler", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        # Results under celery-task-meta-<id> in the broker's Redis: seed 003 reads chunk states
        # back with AsyncResult(task_id).state.
        result_backend=result_backend or broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=dict(transport_options or {}),
        # A chunk is acknowledged when it ends, not when a worker takes it, and a worker takes
        # one at a time per process: a worker that dies mid-chunk leaves the chunk's message
        # unacknowledged in Redis (kombu's "unacked" hash) until the visibility timeout.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # Every task event an events consumer (Flower, the exporter) can see, and the STARTED
        # state in the result backend (seed 003 lists PENDING, STARTED, SUCCESS, FAILURE).
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        minicrawler_temp_dir=temp_dir or os.path.join(tempfile.gettempdir(), "minicrawler"),
        minicrawler_database=database,
    )
    app.task(bind=True, name=TASK_NAME)(download_chunk)
    return app


def app_from_environment(env: Mapping[str, str] = os.environ) -> Celery:
    """:func:`make_app` from the ``MINICRAWLER_*`` variables (see the package's docstring)."""
    broker = env.get("MINICRAWLER_BROKER_URL") or DEFAULT_BROKER
    options = json.loads(env.get("MINICRAWLER_TRANSPORT_OPTIONS") or "{}")
    return make_app(
        broker,
        env.get("MINICRAWLER_RESULT_BACKEND") or None,
        temp_dir=env.get("MINICRAWLER_TEMP_DIR") or None,
        database=env.get("MINICRAWLER_DATABASE") or None,
        transport_options=options,
    )
