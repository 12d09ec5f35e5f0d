"""PostgreSQL: active chunks and jobs, and sql_exporter-style custom queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.registration import lazy, register
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config


def _missing(config: Config) -> str | None:
    # Told before the collector's module (and psycopg, ~20 MB) is imported.
    if config.source(DatabaseSettings).url is None:
        return "database.url (PIXCRAWLER_DB_URL) is not set"
    return None


register(
    "database",
    help="Active chunks and jobs from PostgreSQL (off while database.url is unset).",
    load=lazy("pixcrawler_exporter.collectors.database.collector", "DatabaseCollector"),
    missing=_missing,
    settings=DatabaseSettings,
)
