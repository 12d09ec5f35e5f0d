"""The work pipeline: Celery's queues and workers on a Redis broker, reconciled with the database.

Celery, kombu and redis-py are the optional extra ``celery`` (``pip install
'pixcrawler-exporter[celery]'``); they are imported only when this collector is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.registration import lazy, register
from pixcrawler_exporter.collectors.celery.settings import CelerySettings

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config


def _missing(config: Config) -> str | None:
    # Told before kombu and redis-py are imported.
    if config.source(CelerySettings).broker_url is None:
        return "celery.broker_url (PIXCRAWLER_CELERY_BROKER_URL) is not set"
    return None


register(
    "celery",
    help="Celery queues, workers and the Redis broker, reconciled with the database (off while "
    "celery.broker_url is unset).",
    load=lazy("pixcrawler_exporter.collectors.celery.collector", "CeleryCollector"),
    missing=_missing,
    settings=CelerySettings,
)
