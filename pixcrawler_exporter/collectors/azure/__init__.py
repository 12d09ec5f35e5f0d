"""Azure Monitor: platform metrics and log queries, from a background cache."""

from pixcrawler_exporter.collect.registration import lazy, register
from pixcrawler_exporter.collectors.azure.settings import AzureSettings

register(
    "azure",
    help="Azure Monitor platform metrics and log queries (only in mode azure).",
    load=lazy("pixcrawler_exporter.collectors.azure.collector", "AzureCollector"),
    settings=AzureSettings,
)
