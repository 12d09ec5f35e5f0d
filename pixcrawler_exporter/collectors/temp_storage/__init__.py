"""Temp storage: bytes and files of the crawler's temp files, from inotify and a background scan."""

from pixcrawler_exporter.collect.registration import lazy, register
from pixcrawler_exporter.collectors.temp_storage.settings import TempSettings

register(
    "temp_storage",
    help="Bytes and files of the crawler's temp files, followed by inotify and a background scan.",
    load=lazy("pixcrawler_exporter.collectors.temp_storage.collector", "TempStorageCollector"),
    settings=TempSettings,
    settings_key="temp",
)
