"""Temp storage's configuration section: ``temp.*``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pixcrawler_exporter.config.parsers import boolean, number, path_list, patterns
from pixcrawler_exporter.config.settings import SourceSettings, setting
from pixcrawler_exporter.environment import default_temp_dir

# Not all of /tmp, as seed 000 counted: on a host that also runs anything else, that counts
# images no crawler wrote (a desktop's thumbnails, a test suite's fixtures), and the oldest of
# them pages as an orphaned chunk. A directory of the crawler's own is empty, or absent, where
# no crawler runs; point PIXCRAWLER_TEMP_DIRS at wherever the crawler writes.
DEFAULT_DIR = os.path.join(default_temp_dir(), "pixcrawler")


@dataclass(frozen=True)
class TempSettings(SourceSettings):
    dirs: tuple[str, ...] = setting(
        (DEFAULT_DIR,),
        path_list,
        env="PIXCRAWLER_TEMP_DIRS",
        help="Directories holding the crawler's temp files (separated by ':' or ',' in the "
        "variable). The default directory counts as empty while it does not exist; any other "
        "that does not exist is an error (a typo must not read as free space).",
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

    @property
    def missing_ok(self) -> bool:
        """The default directory, which the crawler makes on its first chunk: empty until then."""
        return self.dirs == (DEFAULT_DIR,)
