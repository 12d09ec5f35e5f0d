"""CPU as the container sees it: the cgroup's quota in cores, CPU time used and throttling."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.collect.registration import BuildContext, register
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.collectors.watched import Watched

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

LIMIT = Desc(
    "pixcrawler_cpu_limit_cores",
    "CPU limit in cores: the cgroup's CFS quota divided by its period; without a quota, "
    "the CPUs the watched processes may run on.",
)
USAGE = Desc(
    "pixcrawler_cpu_usage_seconds_total",
    "CPU time used by the cgroup (by the whole host when there is no cgroup accounting).",
    "counter",
)
THROTTLED_SECONDS = Desc(
    "pixcrawler_cpu_throttled_seconds_total",
    "Time the cgroup's tasks were held back by the CFS quota.",
    "counter",
)
THROTTLED_PERIODS = Desc(
    "pixcrawler_cpu_throttled_periods_total",
    "CFS periods in which the cgroup was throttled.",
    "counter",
)

EXPORTER_USAGE = Desc(
    "pixcrawler_exporter_cpu_usage_seconds_total",
    "CPU time used by the exporter's own container; only while cgroup_process or cgroup_path "
    "has the other figures watch another cgroup.",
    "counter",
)
EXPORTER_LIMIT = Desc(
    "pixcrawler_exporter_cpu_limit_cores",
    "The exporter's own container's CPU limit in cores (its CFS quota, else the CPUs it may "
    "run on); only while cgroup_process or cgroup_path has the other figures watch another "
    "cgroup.",
)


@dataclass(frozen=True)
class CpuReading:
    limit_cores: float
    quota_limited: bool
    usage_seconds: float
    throttled_seconds: float | None
    throttled_periods: int | None
    # The exporter's own container while another cgroup is watched: (usage seconds, limit).
    exporter: tuple[float, float] | None = None


class CpuCollector(Collector[CpuReading]):
    name = "cpu"
    inline = True
    descs = (LIMIT, USAGE, THROTTLED_SECONDS, THROTTLED_PERIODS, EXPORTER_USAGE, EXPORTER_LIMIT)

    def __init__(self, watched: Watched, procfs: Path = Path("/proc")) -> None:
        self.watched = watched
        self.procfs = procfs

    @classmethod
    def settings(cls, config: Config) -> object:
        return None  # the cgroup layout and paths only, which a reload does not change

    @classmethod
    def build(cls, context: BuildContext) -> CpuCollector:
        return cls(context.watched, context.procfs)

    def read(self) -> CpuReading:
        stats = cgroup.read_cpu(self.watched.layout())
        self.watched.require(stats.usage_seconds is not None, "CPU")
        limit = _limit(stats, self.watched.pid)
        exporter = None
        if self.watched.own is not None:
            own = cgroup.read_cpu(self.watched.own)
            if own.usage_seconds is not None:
                exporter = (own.usage_seconds, _limit(own, None))
        usage = stats.usage_seconds
        if usage is None:
            # Rare (no cgroup accounting): psutil is not worth its memory on every host.
            import psutil

            psutil.PROCFS_PATH = str(self.procfs)
            times = psutil.cpu_times()
            usage = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return CpuReading(
            limit_cores=limit,
            quota_limited=stats.quota_cores is not None,
            usage_seconds=usage,
            throttled_seconds=stats.throttled_seconds,
            throttled_periods=stats.throttled_periods,
            exporter=exporter,
        )

    def metrics(self, reading: CpuReading) -> Iterable[Metric]:
        yield LIMIT.value(reading.limit_cores)
        yield USAGE.value(reading.usage_seconds)
        if reading.throttled_seconds is not None:
            yield THROTTLED_SECONDS.value(reading.throttled_seconds)
        if reading.throttled_periods is not None:
            yield THROTTLED_PERIODS.value(reading.throttled_periods)
        if reading.exporter is not None:
            yield EXPORTER_USAGE.value(reading.exporter[0])
            yield EXPORTER_LIMIT.value(reading.exporter[1])


def _limit(stats: cgroup.CpuStats, pid: int | None) -> float:
    """The quota in cores, else the CPUs the cgroup's (or the watched process's) tasks may use."""
    if stats.quota_cores is not None:
        return stats.quota_cores
    try:
        allowed = len(os.sched_getaffinity(pid or 0))
    except OSError:  # the watched process exited meanwhile
        allowed = 0
    return float(stats.cpuset_cpus or allowed or 1)


register(
    "cpu", help="CPU limit in cores, CPU seconds used, CFS throttling.", load=lambda: CpuCollector
)
