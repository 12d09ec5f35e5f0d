"""Memory as the container sees it: the cgroup's limit and usage, and the host's figures beside."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.collect.registration import BuildContext, register
from pixcrawler_exporter.collectors import cgroup, procfs

LIMIT = Desc(
    "pixcrawler_memory_limit_bytes",
    "Effective memory limit: the cgroup's limit when set and below the host's total, "
    "else the host's total.",
)
USAGE = Desc(
    "pixcrawler_memory_usage_bytes",
    "Memory used by the cgroup (page cache included); on a bare host, total minus available.",
)
WORKING_SET = Desc(
    "pixcrawler_memory_working_set_bytes",
    "Usage minus inactive file cache, as cAdvisor and the kubelet count it for OOM decisions.",
)
RATIO = Desc("pixcrawler_memory_usage_ratio", "Working set divided by the effective limit (0-1).")
HOST_TOTAL = Desc("pixcrawler_host_memory_total_bytes", "Memory the host reports in total.")
HOST_AVAILABLE = Desc(
    "pixcrawler_host_memory_available_bytes", "Memory the host reports as available."
)
OOM_KILLS = Desc(
    "pixcrawler_memory_oom_kills_total",
    "Processes killed by the OOM killer in the cgroup, where the kernel reports it.",
    "counter",
)


@dataclass(frozen=True)
class MemoryReading:
    limit_bytes: int
    cgroup_limited: bool
    usage_bytes: int
    working_set_bytes: int
    host_total_bytes: int
    host_available_bytes: int
    oom_kills: int | None

    @property
    def usage_ratio(self) -> float:
        return self.working_set_bytes / self.limit_bytes if self.limit_bytes else 0.0


class MemoryCollector(Collector[MemoryReading]):
    name = "memory"
    inline = True
    descs = (LIMIT, USAGE, WORKING_SET, RATIO, HOST_TOTAL, HOST_AVAILABLE, OOM_KILLS)

    def __init__(self, layout: cgroup.CgroupLayout, procfs_path: Path = Path("/proc")) -> None:
        self.layout = layout
        self.procfs = procfs_path

    @classmethod
    def build(cls, context: BuildContext) -> MemoryCollector:
        return cls(context.layout, context.procfs)

    def read(self) -> MemoryReading:
        memory = procfs.host_memory(self.procfs)
        stats = cgroup.read_memory(self.layout)
        limited = stats.limit_bytes is not None and stats.limit_bytes < memory.total_bytes
        limit = (
            stats.limit_bytes if limited and stats.limit_bytes is not None else memory.total_bytes
        )
        if stats.usage_bytes is None:
            # No cgroup accounting (bare host, or the v2 root cgroup): the host's own figure.
            usage = working_set = memory.total_bytes - memory.available_bytes
        else:
            usage = stats.usage_bytes
            working_set = max(0, usage - (stats.inactive_file_bytes or 0))
        return MemoryReading(
            limit_bytes=limit,
            cgroup_limited=limited,
            usage_bytes=usage,
            working_set_bytes=working_set,
            host_total_bytes=memory.total_bytes,
            host_available_bytes=memory.available_bytes,
            oom_kills=stats.oom_kills,
        )

    def metrics(self, reading: MemoryReading) -> Iterable[Metric]:
        yield LIMIT.value(reading.limit_bytes)
        yield USAGE.value(reading.usage_bytes)
        yield WORKING_SET.value(reading.working_set_bytes)
        yield RATIO.value(reading.usage_ratio)
        yield HOST_TOTAL.value(reading.host_total_bytes)
        yield HOST_AVAILABLE.value(reading.host_available_bytes)
        if reading.oom_kills is not None:
            yield OOM_KILLS.value(reading.oom_kills)


register(
    "memory",
    help="Container-correct memory: cgroup limit, usage, working set, OOM kills; host memory.",
    load=lambda: MemoryCollector,
)
