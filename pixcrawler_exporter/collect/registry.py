"""Which collectors run, built from the configuration, and the exporter's own metrics."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from pixcrawler_exporter import __version__
from pixcrawler_exporter.collect.contract import Source
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import REGISTRY, BuildContext
from pixcrawler_exporter.collect.scraper import Snapshot
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.config import Loaded
from pixcrawler_exporter.derive import capacity, thresholds

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


def builtin_descs() -> list[tuple[str, Desc]]:
    """Every metric the exporter declares itself, with what produces it: "always", a
    collector's name, or "derived". The database's query metrics are not among them."""
    found = [("always", d) for d in META]
    for r in REGISTRY.registrations():
        found += [(r.name, d) for d in r.load().descs]
    return found + [("derived", d) for d in (*thresholds.DESCS, *capacity.DESCS)]


def builtin_names() -> frozenset[str]:
    """Names a custom query's metric may not take: each built-in metric's, and a counter's
    family name without ``_total``, which client_python would report twice just the same."""
    return frozenset(
        name for _, d in builtin_descs() for name in (d.name, d.name.removesuffix("_total"))
    )


def build(loaded: Loaded) -> tuple[list[Source], cgroup.CgroupLayout]:
    cfg = loaded.config
    procfs, sysfs = Path(cfg.paths.procfs), Path(cfg.paths.sysfs)
    layout = cgroup.discover(procfs, sysfs, cfg.cgroup_path)
    context = BuildContext(cfg, layout, procfs, Path(cfg.paths.rootfs))
    collectors = REGISTRY.build(cfg.collectors.enabled(), context)
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
