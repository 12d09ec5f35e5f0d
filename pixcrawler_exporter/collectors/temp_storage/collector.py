"""Bytes and files of the crawler's own temp files, counted by a background scan.

Walking a large temp tree takes far longer than a scrape may, so the walk runs in a thread of its
own every ``interval`` seconds and ``read`` only hands out the last completed result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector, CollectorError
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collect.worker import Worker
from pixcrawler_exporter.collectors.temp_storage.scan import scan

log = logging.getLogger(__name__)

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
LIMIT = Desc(
    "pixcrawler_temp_storage_limit_bytes",
    "Configured limit of the temp storage of all directories together.",
)
RATIO = Desc(
    "pixcrawler_temp_storage_usage_ratio",
    "Bytes of all temp directories divided by the limit (above 1 when over it), "
    "from the background scan.",
)
DURATION = Desc(
    "pixcrawler_temp_storage_scan_duration_seconds",
    "How long the last completed background scan of all temp directories took.",
)
LAST_SCAN = Desc(
    "pixcrawler_temp_storage_last_scan_timestamp_seconds",
    "Unix time the last background scan of the temp directories completed.",
)
ERRORS = Desc(
    "pixcrawler_temp_storage_scan_errors_total",
    "Directories the background scan could not read, counted once in every scan that hit them.",
    "counter",
)


@dataclass(frozen=True)
class DirectoryUsage:
    bytes: int
    files: int


@dataclass(frozen=True)
class TempStorageReading:
    directories: Mapping[str, DirectoryUsage]  # every configured directory, in config order
    errors: Mapping[str, tuple[str, ...]]  # the last scan's errors of the directories that had any
    limit_bytes: int | None
    scan_duration_seconds: float
    last_scan_timestamp_seconds: float  # wall clock, when the scan completed
    scan_errors_total: int  # since start-up

    @property
    def total_bytes(self) -> int:
        return sum(d.bytes for d in self.directories.values())

    @property
    def usage_ratio(self) -> float | None:
        return None if self.limit_bytes is None else self.total_bytes / self.limit_bytes


class TempStorageCollector(Collector[TempStorageReading]):
    """Scans ``dirs`` in a background thread; a scrape gets the last completed scan.

    A directory that fails (missing, or with subdirectories it may not read) is logged when it
    starts failing and when it recovers, not on every scan; its readable part is still counted.
    """

    name = "temp_storage"
    inline = True
    descs = (BYTES, FILES, LIMIT, RATIO, DURATION, LAST_SCAN, ERRORS)

    def __init__(
        self,
        dirs: Sequence[str],
        patterns: Sequence[str],
        recursive: bool,
        interval: float,
        limit_bytes: int | None,
        first_scan_wait: float = 5.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if limit_bytes is not None and limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive or None, not {limit_bytes!r}")
        self.dirs = list(dict.fromkeys(dirs))  # a directory named twice is scanned once
        self.patterns = tuple(patterns)
        self.recursive = recursive
        self.interval = interval
        self.limit_bytes = limit_bytes
        self.first_scan_wait = first_scan_wait
        self.scans = 0  # completed scans, for tests and /status
        self._reading: TempStorageReading | None = None
        self._scanned = threading.Event()
        self._worker = Worker("temp-storage-scan", self._scan, interval, _scan_failed, _rest)
        self._waited = False
        self._errors_total = 0
        self._failing: Changes[str, bool] = Changes(False)

    @classmethod
    def build(cls, context: BuildContext) -> TempStorageCollector:
        from pixcrawler_exporter.derive import capacity  # derive imports config: not at load

        temp = context.config.temp
        limit = capacity.temp_limit_bytes(context.config.capacity)
        return cls(temp.dirs, temp.patterns, temp.recursive, temp.scan_interval_seconds, limit)

    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        # A walk under way stops at the next directory.
        self._worker.stop(timeout=1.0)

    def read(self) -> TempStorageReading:
        return self.read_until(time.monotonic() + self.first_scan_wait)

    def read_until(self, deadline: float) -> TempStorageReading:
        if not self._waited and self._worker.started:
            # Only the first scrape waits: a tree too big to scan in time must not make every
            # scrape until the first scan completes that much slower.
            self._waited = True
            self._scanned.wait(max(0.0, min(self.first_scan_wait, deadline - time.monotonic())))
        reading = self._reading
        if reading is None:
            raise CollectorError("no temp storage scan has completed yet")
        return reading

    def metrics(self, reading: TempStorageReading) -> Iterable[Metric]:
        size, files = BYTES.family(), FILES.family()
        for directory, usage in reading.directories.items():
            add(size, usage.bytes, directory)
            add(files, usage.files, directory)
        yield from (size, files)
        if reading.limit_bytes is not None and reading.usage_ratio is not None:
            yield LIMIT.value(reading.limit_bytes)
            yield RATIO.value(reading.usage_ratio)
        yield DURATION.value(reading.scan_duration_seconds)
        yield LAST_SCAN.value(reading.last_scan_timestamp_seconds)
        yield ERRORS.value(reading.scan_errors_total)

    def _scan(self) -> None:
        started = time.perf_counter()
        usage: dict[str, DirectoryUsage] = {}
        errors: dict[str, tuple[str, ...]] = {}
        for directory in self.dirs:
            if self._worker.stopping.is_set():
                return
            result = scan(directory, self.patterns, self.recursive)
            usage[directory] = DirectoryUsage(result.bytes, result.files)
            if result.errors:
                errors[directory] = result.errors
        duration = time.perf_counter() - started
        self._errors_total += sum(len(e) for e in errors.values())
        self._log_changes(errors)
        self._reading = TempStorageReading(
            usage, errors, self.limit_bytes, duration, time.time(), self._errors_total
        )
        self.scans += 1
        self._scanned.set()

    def _log_changes(self, errors: Mapping[str, tuple[str, ...]]) -> None:
        for directory in self.dirs:
            if (change := self._failing.update(directory, directory in errors)) is None:
                continue
            if change.now:
                found = errors[directory]
                log.warning(
                    "temp directory not fully readable",
                    extra={"directory": directory, "errors": len(found), "error": found[0]},
                )
            else:
                log.info("temp directory readable again", extra={"directory": directory})


def _scan_failed(exc: Exception) -> None:
    log.exception("temp storage scan failed")


def _rest(interval: float, took: float) -> float:
    # A scan slower than the interval would otherwise walk back to back; waiting at least as
    # long as it took keeps the walker busy half the time at most.
    return max(interval - took, took)
