"""Which collectors run, built from the configuration, and the exporter's own metrics."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from pixcrawler_exporter import __version__, config
from pixcrawler_exporter.collect.contract import Collector, Source
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.scraper import Snapshot
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.collectors.azure.collector import AzureCollector
from pixcrawler_exporter.collectors.cpu import CpuCollector
from pixcrawler_exporter.collectors.database.collector import DatabaseCollector
from pixcrawler_exporter.collectors.disk import DiskCollector
from pixcrawler_exporter.collectors.memory import MemoryCollector
from pixcrawler_exporter.collectors.network import NetworkCollector
from pixcrawler_exporter.collectors.pressure import PressureCollector
from pixcrawler_exporter.collectors.temp_storage.collector import TempStorageCollector
from pixcrawler_exporter.config import Loaded
from pixcrawler_exporter.derive import capacity

log = logging.getLogger(__name__)

BUILD_INFO = Desc(
    "pixcrawler_exporter_build_info",
    "Always 1; the labels say which exporter build runs.",
    "gauge",
    ("version", "python_version"),
)
ENVIRONMENT_INFO = Desc(
    "pixcrawler_environment_info",
    "Always 1; the labels say where the exporter runs and which cgroup layout it found.",
    "gauge",
    ("environment", "mode", "cgroup_version"),
)
SUCCESS = Desc(
    "pixcrawler_exporter_collector_success",
    "1 when the collector read its source in this scrape, 0 when it failed or ran out of time.",
    "gauge",
    ("collector",),
)
DURATION = Desc(
    "pixcrawler_exporter_collector_duration_seconds",
    "How long the collector took to read its source.",
    "gauge",
    ("collector",),
)
META = (BUILD_INFO, ENVIRONMENT_INFO, SUCCESS, DURATION)

# Every collector class, in the order their metrics appear in README's reference.
COLLECTOR_CLASSES: tuple[type[Collector[Any]], ...] = (
    MemoryCollector,
    CpuCollector,
    PressureCollector,
    DiskCollector,
    NetworkCollector,
    TempStorageCollector,
    DatabaseCollector,
    AzureCollector,
)


def build(loaded: Loaded) -> tuple[list[Source], cgroup.CgroupLayout]:
    cfg = loaded.config
    procfs, sysfs = Path(cfg.paths.procfs), Path(cfg.paths.sysfs)
    # psutil reads its own procfs path; the exporter's one setting decides it for every reader.
    psutil.PROCFS_PATH = str(procfs)
    layout = cgroup.discover(procfs, sysfs, cfg.cgroup_path)
    enabled = cfg.collectors
    candidates: list[tuple[bool, Any]] = [
        (enabled.memory, lambda: MemoryCollector(layout)),
        (enabled.cpu, lambda: CpuCollector(layout)),
        (enabled.pressure, lambda: PressureCollector(layout, procfs)),
        (
            enabled.disk,
            lambda: DiskCollector(cfg.disk.paths, Path(cfg.paths.rootfs), cfg.disk.timeout_seconds),
        ),
        (enabled.network, NetworkCollector),
        (
            enabled.temp_storage,
            lambda: TempStorageCollector(
                cfg.temp.dirs,
                cfg.temp.patterns,
                cfg.temp.recursive,
                cfg.temp.scan_interval_seconds,
                capacity.temp_limit_bytes(cfg.capacity),
            ),
        ),
        (
            enabled.database and cfg.database.url is not None,
            lambda: DatabaseCollector(
                cfg.database.url or "",
                config.database_queries(cfg.database),
                cfg.database.statement_timeout_seconds,
                cfg.database.connect_timeout_seconds,
                cfg.database.min_interval_seconds,
            ),
        ),
        (enabled.azure and cfg.mode == "azure", lambda: AzureCollector(cfg.azure)),
    ]
    collectors = [make() for on, make in candidates if on]
    if enabled.database and cfg.database.url is None:
        log.info("database collector off: database.url (PIXCRAWLER_DB_URL) is not set")
    check_names(collectors)
    return collectors, layout


def check_names(collectors: Sequence[Source]) -> None:
    """Registering with client_python calls describe(), never read(), and refuses a metric name
    declared twice: a programming error caught at start-up rather than a broken scrape."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]


class Renderer:
    """Turns a snapshot into the families of ``/metrics``."""

    def __init__(
        self, collectors: Sequence[Source], environment: str, mode: str, cgroup_version: str
    ) -> None:
        self.collectors = list(collectors)
        self.info = [
            BUILD_INFO.value(1, __version__, platform.python_version()),
            ENVIRONMENT_INFO.value(1, environment, mode, cgroup_version),
        ]

    def families(self, snapshot: Snapshot) -> Iterable[Metric]:
        yield from self.info
        success, duration = SUCCESS.family(), DURATION.family()
        for collector in self.collectors:
            outcome = snapshot.outcomes[collector.name]
            add(success, 1 if outcome.success else 0, collector.name)
            add(duration, outcome.duration_seconds, collector.name)
            yield from outcome.families()
        yield success
        yield duration
