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


@dataclass(frozen=True)
class CpuReading:
    limit_cores: float
    quota_limited: bool
    usage_seconds: float
    throttled_seconds: float | None
    throttled_periods: int | None


class CpuCollector(Collector[CpuReading]):
    name = "cpu"
    inline = True
    descs = (LIMIT, USAGE, THROTTLED_SECONDS, THROTTLED_PERIODS)

    def __init__(self, layout: cgroup.CgroupLayout, procfs: Path = Path("/proc")) -> None:
        self.layout = layout
        self.procfs = procfs

    @classmethod
    def settings(cls, config: Config) -> object:
        return None  # the cgroup layout and paths only, which a reload does not change

    @classmethod
    def build(cls, context: BuildContext) -> CpuCollector:
        return cls(context.layout, context.procfs)

    def read(self) -> CpuReading:
        stats = cgroup.read_cpu(self.layout)
        cpus = stats.cpuset_cpus or len(os.sched_getaffinity(0)) or 1
        limit = stats.quota_cores if stats.quota_cores is not None else float(cpus)
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
        )

    def metrics(self, reading: CpuReading) -> Iterable[Metric]:
        yield LIMIT.value(reading.limit_cores)
        yield USAGE.value(reading.usage_seconds)
        if reading.throttled_seconds is not None:
            yield THROTTLED_SECONDS.value(reading.throttled_seconds)
        if reading.throttled_periods is not None:
            yield THROTTLED_PERIODS.value(reading.throttled_periods)


register(
    "cpu", help="CPU limit in cores, CPU seconds used, CFS throttling.", load=lambda: CpuCollector
)
