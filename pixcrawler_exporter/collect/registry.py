"""Which collectors run, built from the configuration, and the exporter's own metrics."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from pixcrawler_exporter import __version__
from pixcrawler_exporter.collect.contract import Source
from pixcrawler_exporter.collect.metrics import Bundle, Desc, add
from pixcrawler_exporter.collect.registration import REGISTRY, BuildContext
from pixcrawler_exporter.collect.scraper import Snapshot
from pixcrawler_exporter.collectors import cgroup, watched
from pixcrawler_exporter.config import Config, Loaded
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
RELOAD_OK = Desc(
    "pixcrawler_exporter_config_last_reload_successful",
    "1 when the last configuration reload (or the start) succeeded, 0 when it was refused.",
)
RELOAD_TIME = Desc(
    "pixcrawler_exporter_config_last_reload_success_timestamp_seconds",
    "When the configuration in use was loaded, as a Unix time.",
)
META = (BUILD_INFO, ENVIRONMENT_INFO, SUCCESS, DURATION, RELOAD_OK, RELOAD_TIME)


def builtin_descs() -> list[tuple[str, Desc]]:
    """Every metric the exporter declares itself, with what produces it: "always", a
    collector's name, or "derived". The database's query metrics are not among them."""
    found = [("always", d) for d in META]
    for r in REGISTRY.registrations():
        found += [(r.name, d) for d in r.load().descs]
    return found + [("derived", d) for d in (*thresholds.DESCS, *capacity.DESCS)]


# The series names a family of each type exposes besides its own (OpenMetrics adds _created).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": (),
}


def builtin_names() -> frozenset[str]:
    """Names a custom query's metric may not take: each built-in family's and every series name
    it exposes (a counter's _total and _created, a histogram's _bucket, _count, _sum, _created),
    which client_python would refuse at start or write twice into OpenMetrics."""
    names: set[str] = set()
    for _, d in builtin_descs():
        family = d.name.removesuffix("_total") if d.type == "counter" else d.name
        names |= {d.name, family, *(family + s for s in SERIES_SUFFIXES.get(d.type, ()))}
    return frozenset(names)


@dataclass(frozen=True)
class Built:
    """The collectors one configuration asked for, and that configuration."""

    collectors: list[Source]
    layout: cgroup.CgroupLayout
    config: Config

    def new_since(self, previous: Built | None) -> list[Source]:
        kept = {id(c) for c in previous.collectors} if previous is not None else set()
        return [c for c in self.collectors if id(c) not in kept]

    def unchanged_in(self, config: Config) -> dict[str, Source | None]:
        """What ``config`` would build from the same settings: a reload takes those collectors
        over, state and background work included, and leaves out again (without saying why
        again) the ones that were on but not configured."""
        now, before = config.collectors.enabled(), self.config.collectors.enabled()
        running = {c.name: c for c in self.collectors}
        same: dict[str, Source | None] = {}
        for r in REGISTRY.registrations():
            if not (now[r.name] and before[r.name]):
                continue
            if r.name not in running and r.missing is not None and r.missing(self.config):
                # Left out for a missing source: compared by that reason, without loading the
                # class, whose module was never imported (psycopg: about 13 MB on the first
                # reload, which is what made RSS look as if it grew with every reload).
                if r.missing(config) == r.missing(self.config):
                    same[r.name] = None
            elif r.load().settings(config) == r.load().settings(self.config):
                same[r.name] = running.get(r.name)
        return same


def build(loaded: Loaded, previous: Built | None = None) -> Built:
    """Build the enabled collectors; on a reload (``previous`` given) those whose settings did
    not change are taken over rather than built again."""
    cfg = loaded.config
    procfs, sysfs = Path(cfg.paths.procfs), Path(cfg.paths.sysfs)
    layout, target = watched.select(procfs, sysfs, cfg.cgroup_path, cfg.cgroup_process)
    context = BuildContext(cfg, target, procfs, Path(cfg.paths.rootfs))
    kept = previous.unchanged_in(cfg) if previous is not None else {}
    built = Built(REGISTRY.build(cfg.collectors.enabled(), context, kept), layout, cfg)
    try:
        check_names(built.collectors)
    except Exception:
        for collector in built.new_since(previous):
            collector.close()
        raise
    return built


def check_names(collectors: Sequence[Source]) -> None:
    """Registering with client_python calls describe(), never read(), and refuses a metric name
    declared twice: a programming error caught at start-up rather than a broken scrape."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]


class Renderer:
    """Turns a snapshot into the families of ``/metrics``.

    A collector that hands back the very tuple of frozen families it handed back last time (it
    keeps them while nothing changed) has them served as one :class:`Bundle`.
    """

    def __init__(
        self, collectors: Sequence[Source], environment: str, mode: str, cgroup_version: str
    ) -> None:
        self.collectors = list(collectors)
        self.info = [
            BUILD_INFO.value(1, __version__, platform.python_version()),
            ENVIRONMENT_INFO.value(1, environment, mode, cgroup_version),
        ]
        # By collector: the families it handed back last, and their bundle (None: not frozen).
        self._bundles: dict[str, tuple[Iterable[Metric], Bundle | None]] = {}

    def families(self, snapshot: Snapshot) -> Iterable[Metric]:
        yield from self.info
        success, duration = SUCCESS.family(), DURATION.family()
        for collector in self.collectors:
            outcome = snapshot.outcomes[collector.name]
            add(success, 1 if outcome.success else 0, collector.name)
            add(duration, outcome.duration_seconds, collector.name)
            families = outcome.families()
            kept = self._bundles.get(collector.name)
            if kept is None or kept[0] is not families:
                # Scrapes may render at once: the worst a race costs is a bundle made twice.
                kept = self._bundles[collector.name] = families, Bundle.of(families)
            if kept[1] is not None:
                yield kept[1]
            else:
                yield from families
        yield success
        yield duration
