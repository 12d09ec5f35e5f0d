"""What the temp storage collector reads, and the families it renders from that.

Only what the directories hold: bytes, files, ages, how they are followed. The quota
(``capacity.max_temp_storage_mb``) and the share of it in use are derived facts, built from this
reading in ``derive/`` like every status, so the collector knows no threshold or quota.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.metrics import Desc, add

BYTES = Desc(
    "pixcrawler_temp_storage_bytes",
    "Apparent size of the files below the directory that match the temp file patterns, "
    "from the background scan.",
    "gauge",
    ("directory",),
)
FILES = Desc(
    "pixcrawler_temp_storage_files",
    "Number of files below the directory that match the temp file patterns, "
    "from the background scan.",
    "gauge",
    ("directory",),
)
DURATION = Desc(
    "pixcrawler_temp_storage_scan_duration_seconds",
    "How long the last completed background scan of all temp directories took.",
)
LAST_SCAN = Desc(
    "pixcrawler_temp_storage_last_scan_timestamp_seconds",
    "Unix time the last background scan of the temp directories completed.",
)
OLDEST = Desc(
    "pixcrawler_temp_storage_oldest_file_age_seconds",
    "Age of the oldest matching file below the directory (by modification time) when the last "
    "background scan completed; absent without any. A crashed worker's chunk stays behind.",
    "gauge",
    ("directory",),
)
IN_MEMORY = Desc(
    "pixcrawler_temp_storage_in_memory",
    "1 when the directory is on tmpfs or ramfs (its files use memory, not disk), 0 when on "
    "another filesystem; absent when it cannot be told.",
    "gauge",
    ("directory",),
)
UNREADABLE = Desc(
    "pixcrawler_temp_storage_error",
    "1 when the configured directory cannot be opened (missing, deleted or moved away, not a "
    "directory, not permitted): its usage is unknown, so its bytes are absent and the "
    "collector fails; 0 when it can.",
    "gauge",
    ("directory",),
)
ERRORS = Desc(
    "pixcrawler_temp_storage_scan_errors_total",
    "Directories the background scan could not read, counted once in every scan that hit them.",
    "counter",
)
MODE = Desc(
    "pixcrawler_temp_storage_mode",
    "1 for how the directory's figures are kept, 0 for the other: mode=events follows changes "
    "by inotify (fresh within a second, reconciled by each scan), mode=scan counts in each "
    "background scan only (network shares, no inotify watches left).",
    "gauge",
    ("directory", "mode"),
)
WATCHES = Desc(
    "pixcrawler_temp_storage_watches",
    "inotify watches held to follow the temp directories (one per directory below them).",
)
DESCS = (
    BYTES,
    FILES,
    UNREADABLE,
    OLDEST,
    IN_MEMORY,
    DURATION,
    LAST_SCAN,
    ERRORS,
    MODE,
    WATCHES,
)
MODES = ("events", "scan")


@dataclass(frozen=True)
class DirectoryUsage:
    bytes: int
    files: int


@dataclass(frozen=True)
class TempStorageReading:
    # Every configured directory the scan could open, in config order. One it could not open
    # (missing, mistyped, not permitted) is left out: its usage is unknown, not 0.
    directories: Mapping[str, DirectoryUsage]
    errors: Mapping[str, tuple[str, ...]]  # the last scan's errors of the directories that had any
    scan_duration_seconds: float
    last_scan_timestamp_seconds: float  # wall clock, when the scan completed
    scan_errors_total: int  # since start-up
    # Directory -> on tmpfs/ramfs, for the directories whose filesystem could be told.
    in_memory: Mapping[str, bool] = field(default_factory=dict)

    # Directories the last scan could not open at all, with why.
    unreadable: Mapping[str, str] = field(default_factory=dict)
    # Directory -> age in seconds of its oldest matching file, for those with any.
    oldest_file_age: Mapping[str, float] = field(default_factory=dict)
    modes: Mapping[str, str] = field(default_factory=dict)  # directory -> "events" or "scan"
    watches: int = 0

    @property
    def error(self) -> str | None:
        """Set when a configured directory could not be read: the collector then fails (the
        scraper reads this), so the total, the temp status and can_start_chunk are unknown
        rather than built on a directory silently counted as empty."""
        if not self.unreadable:
            return None
        return "temp directory unreadable: " + "; ".join(self.unreadable.values())

    @property
    def total_bytes(self) -> int:
        return sum(d.bytes for d in self.directories.values())

    @property
    def in_memory_bytes(self) -> int:
        """Bytes of the directories in RAM: memory the container uses for temp files."""
        return sum(u.bytes for d, u in self.directories.items() if self.in_memory.get(d))


def families(reading: TempStorageReading) -> Iterator[Metric]:
    size, files = BYTES.family(), FILES.family()
    for directory, usage in reading.directories.items():
        add(size, usage.bytes, directory)
        add(files, usage.files, directory)
    yield from (size, files)
    failed = UNREADABLE.family()
    for directory in [*reading.directories, *reading.unreadable]:
        add(failed, 1 if directory in reading.unreadable else 0, directory)
    yield failed
    if reading.oldest_file_age:
        oldest = OLDEST.family()
        for directory, age in reading.oldest_file_age.items():
            add(oldest, age, directory)
        yield oldest
    if reading.in_memory:
        ram = IN_MEMORY.family()
        for directory, flag in reading.in_memory.items():
            add(ram, 1 if flag else 0, directory)
        yield ram
    yield DURATION.value(reading.scan_duration_seconds)
    yield LAST_SCAN.value(reading.last_scan_timestamp_seconds)
    yield ERRORS.value(reading.scan_errors_total)
    if reading.modes:
        mode = MODE.family()
        for directory, current in reading.modes.items():
            for name in MODES:
                add(mode, 1 if name == current else 0, directory, name)
        yield mode
        yield WATCHES.value(reading.watches)
