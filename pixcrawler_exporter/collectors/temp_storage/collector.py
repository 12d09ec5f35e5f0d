"""Bytes and files of the crawler's own temp files, kept by a background thread.

Walking a large temp tree takes far longer than a scrape may, so the walk runs in a thread of its
own every ``interval`` seconds and ``read`` only hands out the last result. With ``watch``, a
directory on a local filesystem is followed by inotify between those scans (see watch.py), so
its figure is fresh within a second; the scan then only reconciles. What the reading holds and
how it is rendered: reading.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector, CollectorError
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collect.worker import Worker
from pixcrawler_exporter.collectors.temp_storage.memoryfs import in_memory
from pixcrawler_exporter.collectors.temp_storage.reading import (
    DESCS,
    DirectoryUsage,
    TempStorageReading,
    families,
)
from pixcrawler_exporter.collectors.temp_storage.scan import matcher, scan
from pixcrawler_exporter.collectors.temp_storage.settings import TempSettings

if TYPE_CHECKING:
    from pixcrawler_exporter.collectors.temp_storage.watch import Watcher
    from pixcrawler_exporter.config import Config

log = logging.getLogger(__name__)

# Events of a burst that arrive within this are taken together.
BATCH_SECONDS = 0.1
# The longest wait for events: close() is seen within it, and a configured directory that cannot
# be opened (deleted, not created yet) is tried again as often, so it is followed soon once it is
# there (see watch.py).
TICK_SECONDS = 0.5
# Following events may take at most this share of the time; a storm of them is listed less often.
MAX_BUSY_SHARE = 0.1


@dataclass(frozen=True)
class _DirState:
    """One directory as its last scan or its events left it."""

    usage: DirectoryUsage
    errors: tuple[str, ...]
    opened: bool  # False: the directory itself could not be opened, so usage means nothing
    oldest_mtime: float | None  # of its matching files; None when it has none


_NOT_SCANNED = _DirState(DirectoryUsage(0, 0), (), opened=False, oldest_mtime=None)


class TempStorageCollector(Collector[TempStorageReading]):
    """Scans ``dirs`` in a background thread; a scrape gets the last completed scan.

    A directory that fails (missing, or with subdirectories it may not read) is logged when it
    starts failing and when it recovers, not on every scan. Of one with unreadable
    subdirectories the readable part is still counted; one that cannot be opened at all fails
    the collector (see :attr:`TempStorageReading.error`), as does a scrape before the first scan
    has completed.
    """

    name = "temp_storage"
    inline = True
    descs = DESCS

    def __init__(
        self,
        dirs: Sequence[str],
        patterns: Sequence[str],
        recursive: bool,
        interval: float,
        first_scan_wait: float = 5.0,
        watch: bool = False,
        missing_ok: bool = False,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        self.dirs = list(dict.fromkeys(dirs))  # a directory named twice is scanned once
        self.patterns = tuple(patterns)
        self.recursive = recursive
        self.interval = interval
        self.first_scan_wait = first_scan_wait
        self.watch = watch
        self.missing_ok = missing_ok
        self.scans = 0  # completed scans, for tests and /status
        self._reading: TempStorageReading | None = None
        self._scanned = threading.Event()
        self._worker = Worker("temp-storage-scan", self._cycle, interval, _scan_failed, self._pause)
        self._waited = False
        self._errors_total = 0
        self._failing: Changes[str, bool] = Changes(False)
        # Per directory: what its last scan found (directories not followed by events).
        self._usage: dict[str, _DirState] = {}
        self._in_memory: dict[str, bool] = {}  # directory -> on tmpfs/ramfs, where it could be told
        self._last_scan = (0.0, 0.0)  # duration, wall-clock end
        self._watcher: Watcher | None = None
        self._watcher_lock = threading.Lock()
        self._following = False
        # Directories opened at least once: with missing_ok (the default directory) one missing
        # before that has not been made yet and counts as empty; one missing after is gone.
        self._seen: set[str] = set()
        self._absent: Changes[str, bool] = Changes(False)

    @classmethod
    def settings(cls, config: Config) -> object:
        return config.source(TempSettings)

    @classmethod
    def build(cls, context: BuildContext) -> TempStorageCollector:
        temp = context.config.source(TempSettings)
        return cls(
            temp.dirs,
            temp.patterns,
            temp.recursive,
            temp.scan_interval_seconds,
            watch=True,
            missing_ok=temp.missing_ok,
        )

    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        # A walk under way stops at the next directory, a wait for events within half a second.
        self._worker.stop(timeout=1.0)
        self._close_watcher()

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
        return families(reading)

    def _cycle(self) -> None:
        """A full scan, then the events until the next one is due."""
        self._following = False
        if self.watch and self._watcher is None and not self.scans:
            self._watcher = _watcher(self.dirs, self.patterns, self.recursive)
        watcher = self._watcher
        started = time.monotonic()
        self._scan(watcher)
        if watcher is None or not watcher.trees:
            return
        self._following = True
        until = time.monotonic() + _rest(self.interval, time.monotonic() - started)
        try:
            self._follow(watcher, until)
        except Exception:  # the next scan lists everything again
            log.exception("following temp storage events failed")
            self._worker.stopping.wait(max(0.0, until - time.monotonic()))
        if self._worker.stopping.is_set():
            self._close_watcher()

    def _pause(self, interval: float, took: float) -> float:
        # A cycle that followed events ends when the next scan is due.
        return 0.0 if self._following else _rest(interval, took)

    def _scan(self, watcher: Watcher | None) -> None:
        started = time.perf_counter()
        if watcher is not None:
            watcher.rebuild()
        errors_seen = 0
        for directory in self.dirs:
            if self._worker.stopping.is_set():
                return
            if watcher is None or directory not in watcher.trees:
                result = scan(directory, self.patterns, self.recursive)
                self._usage[directory] = _DirState(
                    DirectoryUsage(result.bytes, result.files),
                    result.errors,
                    result.opened,
                    result.oldest_mtime,
                )
            errors_seen += len(self._collect(directory, watcher).errors)
            # Asked on every scan: a tmpfs may be mounted over the directory at any time.
            if (on_tmpfs := in_memory(directory)) is not None:
                self._in_memory[directory] = on_tmpfs
            else:
                self._in_memory.pop(directory, None)
        self._last_scan = (time.perf_counter() - started, time.time())
        self._errors_total += errors_seen
        self._publish(watcher)
        self.scans += 1
        self._scanned.set()

    def _follow(self, watcher: Watcher, until: float) -> None:
        """Apply events until ``until``."""
        stopping = self._worker.stopping
        while not stopping.is_set() and (left := until - time.monotonic()) > 0:
            events = watcher.read(min(left, TICK_SECONDS))
            if watcher.reopen():
                self._publish(watcher)
            if not events:
                continue
            stopping.wait(BATCH_SECONDS)
            started = time.monotonic()
            overflow, _ = watcher.handle(events + watcher.read(0))
            if overflow:
                log.info("inotify queue overflowed: listing the temp directories again")
                watcher.rebuild()
            self._publish(watcher)
            busy = time.monotonic() - started
            stopping.wait(busy * (1 - MAX_BUSY_SHARE) / MAX_BUSY_SHARE)

    def _collect(self, directory: str, watcher: Watcher | None) -> _DirState:
        tree = watcher.trees.get(directory) if watcher is not None else None
        if tree is None:
            return self._usage.get(directory, _NOT_SCANNED)
        return _DirState(
            DirectoryUsage(tree.bytes, tree.files),
            tuple(tree.errors.values()),
            tree.opened,
            tree.oldest_mtime,
        )

    def _publish(self, watcher: Watcher | None) -> None:
        usage: dict[str, DirectoryUsage] = {}
        errors: dict[str, tuple[str, ...]] = {}
        unreadable: dict[str, str] = {}
        oldest: dict[str, float] = {}
        now = time.time()
        for directory in self.dirs:
            state = self._collect(directory, watcher)
            if state.opened:
                self._seen.add(directory)
                usage[directory] = state.usage
            elif self._not_made_yet(directory, state):
                usage[directory] = DirectoryUsage(0, 0)
                continue
            else:
                unreadable[directory] = state.errors[0] if state.errors else "not read yet"
            if state.errors:
                errors[directory] = state.errors
            if state.oldest_mtime is not None:
                # A file stamped in the future (clock skew, a copied mtime) is not negative age.
                oldest[directory] = max(0.0, now - state.oldest_mtime)
        self._log_changes(errors)
        followed = watcher.trees if watcher is not None else {}
        self._reading = TempStorageReading(
            usage,
            errors,
            *self._last_scan,
            self._errors_total,
            in_memory=dict(self._in_memory),
            unreadable=unreadable,
            oldest_file_age=oldest,
            modes={d: "events" if d in followed else "scan" for d in self.dirs}
            if self.watch
            else {},
            watches=watcher.watches if watcher is not None else 0,
        )

    def _not_made_yet(self, directory: str, state: _DirState) -> bool:
        absent = (
            self.missing_ok
            and state is not _NOT_SCANNED
            and directory not in self._seen
            and not os.path.lexists(directory)
        )
        if self._absent.update(directory, absent) is not None and absent:
            log.info(
                "temp directory does not exist yet: counted as empty until it does",
                extra={"directory": directory},
            )
        return absent

    def _close_watcher(self) -> None:
        with self._watcher_lock:
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None

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


def _watcher(dirs: Sequence[str], patterns: Sequence[str], recursive: bool) -> Watcher | None:
    """The directories that can be followed by inotify, followed; None when none can."""
    from pixcrawler_exporter.collectors import procfs
    from pixcrawler_exporter.collectors.temp_storage import watch

    try:
        # A directory not made yet is followed where its parent is local: its watch is made
        # when it appears (watch.py retries a missing root).
        followed = [d for d in dirs if procfs.is_local(_existing(d))]
        return watch.Watcher(followed, matcher(patterns), recursive) if followed else None
    except OSError as exc:  # no inotify instance to be had (fs.inotify.max_user_instances)
        log.warning("cannot follow temp directories by inotify", extra={"error": str(exc)})
        return None


def _existing(path: str) -> str:
    """``path``, or its nearest ancestor that exists."""
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def _scan_failed(exc: Exception) -> None:
    log.exception("temp storage scan failed")


def _rest(interval: float, took: float) -> float:
    # A scan slower than the interval would otherwise walk back to back; waiting at least as
    # long as it took keeps the walker busy half the time at most.
    return max(interval - took, took)
