"""Size and free space of the filesystems holding the configured paths."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.lane import Lane
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext, register
from pixcrawler_exporter.collectors import procfs
from pixcrawler_exporter.config.parsers import number, path_list
from pixcrawler_exporter.config.settings import SourceSettings, setting
from pixcrawler_exporter.environment import default_temp_dir

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskSettings(SourceSettings):
    paths: tuple[str, ...] = setting(
        (default_temp_dir(), "/"),
        path_list,
        env="PIXCRAWLER_DISK_PATHS",
        help="Paths whose filesystems are reported (separated by ':' or ',' in the variable).",
    )
    timeout_seconds: float = setting(
        2.0,
        number(0.01, 60),
        env="PIXCRAWLER_DISK_TIMEOUT_SECONDS",
        help="A filesystem that does not answer statvfs within this is reported failed.",
    )


SIZE = Desc(
    "pixcrawler_disk_size_bytes", "Size of the filesystem holding the path.", "gauge", ("path",)
)
AVAILABLE = Desc(
    "pixcrawler_disk_available_bytes",
    "Space on the filesystem available to unprivileged users.",
    "gauge",
    ("path",),
)
RATIO = Desc(
    "pixcrawler_disk_usage_ratio",
    "Used space over used plus what unprivileged users may still fill (0-1), as df's Use% "
    "counts it; blocks reserved for root are in neither.",
    "gauge",
    ("path",),
)
ERROR = Desc(
    "pixcrawler_disk_error",
    "1 when the filesystem holding the path could not be read or did not answer in time.",
    "gauge",
    ("path",),
)


@dataclass(frozen=True)
class DiskUsage:
    size_bytes: int
    available_bytes: int
    # Free including the blocks reserved for root; the size without reservation when unknown.
    free_bytes: int | None = None

    @property
    def usage_ratio(self) -> float:
        """df's Use%: what is used over what is used plus what an unprivileged user may still
        fill. The blocks reserved for root are in neither: not ours to fill, but not used
        either. (1 - available / size counted them as used, and read 71% on a filesystem with
        60% reserved that df showed 28% full.)"""
        if self.free_bytes is None:  # nothing known of reserved blocks: counted as used
            return 1 - self.available_bytes / self.size_bytes if self.size_bytes else 0.0
        used = self.size_bytes - self.free_bytes
        room = used + self.available_bytes
        return used / room if room > 0 else 0.0


@dataclass(frozen=True)
class DiskReading:
    usage: Mapping[str, DiskUsage]
    errors: Mapping[str, str]


class DiskCollector(Collector[DiskReading]):
    """statvfs can block for minutes on a dead network mount, so a path on any filesystem but a
    local one is asked in a thread of its own with a bound (the scrape's deadline when that
    comes first); a path still blocked is not asked again until it answers. A local filesystem
    answers statvfs from memory: its paths are asked on the scrape's own thread meanwhile,
    sparing two thread hand-offs per path. Which kind a path is on is told at its first read."""

    name = "disk"
    inline = True
    descs = (SIZE, AVAILABLE, RATIO, ERROR)

    def __init__(self, paths: Sequence[str], rootfs: Path, timeout: float) -> None:
        self.paths = list(paths)
        self.rootfs = rootfs
        self.timeout = timeout
        # One thread per path, started at its first read off the scrape's thread; a daemon, so
        # a statvfs that never returns does not hold the process's exit either.
        self._lanes = {path: Lane("statvfs") for path in self.paths}
        self._pending: dict[str, Future[DiskUsage]] = {}
        self._local: dict[str, bool] = {}
        self._failing: Changes[str, bool] = Changes(False)
        self._lock = threading.Lock()

    @classmethod
    def settings(cls, config: Config) -> object:
        return config.source(DiskSettings)

    @classmethod
    def build(cls, context: BuildContext) -> DiskCollector:
        disk = context.config.source(DiskSettings)
        return cls(disk.paths, context.rootfs, disk.timeout_seconds)

    def read(self) -> DiskReading:
        return self.read_until(time.monotonic() + self.timeout)

    def read_until(self, deadline: float) -> DiskReading:
        with self._lock:
            for path in self.paths:
                if path not in self._local:
                    self._local[path] = procfs.is_local(self._where(path))
                future = self._pending.get(path)
                if not self._local[path] and (future is None or future.done()):
                    self._pending[path] = self._lanes[path].submit(partial(self._statvfs, path))
            futures = {p: f for p, f in self._pending.items() if not self._local[p]}
        usage: dict[str, DiskUsage] = {}
        errors: dict[str, str] = {}
        for path in self.paths:
            if self._local[path]:
                try:
                    usage[path] = self._statvfs(path)
                except OSError as exc:
                    errors[path] = f"statvfs {path}: {exc.strerror or exc}"
        wait_futures(
            futures.values(), timeout=max(0.0, min(self.timeout, deadline - time.monotonic()))
        )
        for path, future in futures.items():
            if not future.done():
                errors[path] = f"statvfs {path}: no answer within {self.timeout:g}s"
            elif (failure := future.exception()) is not None:
                errors[path] = f"statvfs {path}: {getattr(failure, 'strerror', None) or failure}"
            else:
                usage[path] = future.result()
        self._log_changes(errors)
        return DiskReading(usage, errors)

    def _where(self, path: str) -> Path:
        return self.rootfs / path.lstrip("/")

    def _statvfs(self, path: str) -> DiskUsage:
        st = os.statvfs(self._where(path))
        return DiskUsage(
            st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, st.f_bfree * st.f_frsize
        )

    def _log_changes(self, errors: Mapping[str, str]) -> None:
        for path in self.paths:
            if (change := self._failing.update(path, path in errors)) is None:
                continue
            if change.now:
                log.warning("filesystem not readable", extra={"path": path, "error": errors[path]})
            else:
                log.info("filesystem readable again", extra={"path": path})

    def metrics(self, reading: DiskReading) -> Iterable[Metric]:
        size, available, ratio, error = (d.family() for d in self.descs)
        for path in self.paths:
            add(error, 1 if path in reading.errors else 0, path)
            if (u := reading.usage.get(path)) is not None:
                add(size, u.size_bytes, path)
                add(available, u.available_bytes, path)
                add(ratio, u.usage_ratio, path)
        yield from (size, available, ratio, error)

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()


register(
    "disk",
    help="Size and free space of the filesystems holding disk.paths.",
    load=lambda: DiskCollector,
    settings=DiskSettings,
)
