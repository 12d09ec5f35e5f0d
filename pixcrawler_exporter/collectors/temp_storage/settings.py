"""Temp storage's configuration section: ``temp.*``."""

from __future__ import annotations

from dataclasses import dataclass

from pixcrawler_exporter.config.parsers import boolean, number, path_list, patterns
from pixcrawler_exporter.config.settings import SourceSettings, setting
from pixcrawler_exporter.environment import default_temp_dir


@dataclass(frozen=True)
class TempSettings(SourceSettings):
    dirs: tuple[str, ...] = setting(
        (default_temp_dir(),),
        path_list,
        env="PIXCRAWLER_TEMP_DIRS",
        help="Directories holding the crawler's temp files (separated by ':' or ',' in the "
        "variable).",
    )
    patterns: tuple[str, ...] = setting(
        ("*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif"),
        patterns,
        env="PIXCRAWLER_TEMP_PATTERNS",
        help="File name patterns counted as the crawler's files (comma-separated in the "
        "variable); case-insensitive.",
    )
    scan_interval_seconds: float = setting(
        30.0,
        number(1, 86400),
        env="PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS",
        help="How often the background scan walks the directories; where inotify follows "
        "them (local filesystems), how often it reconciles.",
    )
    recursive: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_TEMP_RECURSIVE",
        help="Walk subdirectories too (never following symlinks or leaving the filesystem).",
    )
