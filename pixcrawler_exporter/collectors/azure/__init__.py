"""Azure Monitor: platform metrics and log queries, from a background cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.registration import lazy, register
from pixcrawler_exporter.collectors.azure.settings import AzureSettings

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config


def _missing(config: Config) -> str | None:
    # Told before the Azure SDK (~30 MB) is imported.
    return None if config.mode == "azure" else "mode is not azure (PIXCRAWLER_MODE=azure)"


register(
    "azure",
    help="Azure Monitor platform metrics and log queries (only in mode azure).",
    load=lazy("pixcrawler_exporter.collectors.azure.collector", "AzureCollector"),
    missing=_missing,
    settings=AzureSettings,
)
