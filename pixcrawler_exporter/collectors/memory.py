"""Memory as the container sees it: the cgroup's limit and usage, and the host's figures beside.

Two figures matter and differ: the working set (usage minus inactive file cache), which the
kubelet evicts on and is exported as such, and the memory the kernel cannot take back (usage
minus page cache and reclaimable slab), which the memory status is evaluated from. A crawler that
writes and reads back its images fills the page cache, and so the working set, to the limit
without being anywhere near an OOM kill: the kernel drops clean cache before it kills.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext, register
from pixcrawler_exporter.collectors import cgroup, procfs
from pixcrawler_exporter.collectors.watched import Watched

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

# While tasks of the cgroup wait for memory at least this share of the time (memory PSI "some"
# over 10 s, percent), reclaiming its cache is not cheap: the working set counts as used.
STALL_PERCENT = 10.0

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
UNRECLAIMABLE = Desc(
    "pixcrawler_memory_unreclaimable_bytes",
    "Usage minus what the kernel can reclaim without swap (file cache, reclaimable slab): "
    "anonymous memory, shmem and tmpfs, unevictable pages, other kernel memory. On a bare host, "
    "total minus available.",
)
STAT = Desc(
    "pixcrawler_memory_stat_bytes",
    "The cgroup's memory.stat by its v2 name (v1: total_rss is anon, total_cache is file; "
    "kernel is memory.kmem.usage_in_bytes); only what the cgroup reports. The figures "
    "overlap: do not sum them.",
    "gauge",
    ("stat",),
)
RATIO = Desc("pixcrawler_memory_usage_ratio", "Working set divided by the effective limit (0-1).")
HOST_TOTAL = Desc("pixcrawler_host_memory_total_bytes", "Memory the host reports in total.")
HOST_AVAILABLE = Desc(
    "pixcrawler_host_memory_available_bytes", "Memory the host reports as available."
)
EXPORTER_WORKING_SET = Desc(
    "pixcrawler_exporter_memory_working_set_bytes",
    "The exporter's own container's working set (usage minus inactive file cache); only while "
    "cgroup_process or cgroup_path has the other figures watch another cgroup.",
)
EXPORTER_LIMIT = Desc(
    "pixcrawler_exporter_memory_limit_bytes",
    "The exporter's own container's effective memory limit (its cgroup's, else the host's "
    "total); only while cgroup_process or cgroup_path has the other figures watch another "
    "cgroup.",
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
    unreclaimable_bytes: int
    breakdown: Mapping[str, int]
    stall_percent: float | None  # the cgroup's own memory PSI, where it has one
    # The exporter's own container while another cgroup is watched: (working set, limit).
    exporter: tuple[int, int] | None = None

    @property
    def usage_ratio(self) -> float:
        return self.working_set_bytes / self.limit_bytes if self.limit_bytes else 0.0

    @property
    def status_bytes(self) -> int:
        """The figure the memory status is evaluated from: memory the kernel cannot reclaim;
        the working set instead while memory PSI says reclaiming already stalls the cgroup."""
        if self.stall_percent is not None and self.stall_percent >= STALL_PERCENT:
            return max(self.unreclaimable_bytes, self.working_set_bytes)
        return self.unreclaimable_bytes


class MemoryCollector(Collector[MemoryReading]):
    name = "memory"
    inline = True
    descs = (
        LIMIT,
        USAGE,
        WORKING_SET,
        UNRECLAIMABLE,
        STAT,
        RATIO,
        HOST_TOTAL,
        HOST_AVAILABLE,
        OOM_KILLS,
        EXPORTER_WORKING_SET,
        EXPORTER_LIMIT,
    )

    def __init__(self, watched: Watched, procfs_path: Path = Path("/proc")) -> None:
        self.watched = watched
        self.procfs = procfs_path

    @classmethod
    def settings(cls, config: Config) -> object:
        return None  # the cgroup layout and paths only, which a reload does not change

    @classmethod
    def build(cls, context: BuildContext) -> MemoryCollector:
        return cls(context.watched, context.procfs)

    def read(self) -> MemoryReading:
        memory = procfs.host_memory(self.procfs)
        stats = cgroup.read_memory(self.watched.layout())
        self.watched.require(stats.usage_bytes is not None, "memory")
        limited, limit = _limit(stats, memory.total_bytes)
        exporter = None
        if self.watched.own is not None:
            own = cgroup.read_memory(self.watched.own)
            if own.usage_bytes is not None:
                working = max(0, own.usage_bytes - (own.inactive_file_bytes or 0))
                exporter = (working, _limit(own, memory.total_bytes)[1])
        breakdown = dict(stats.breakdown)
        if stats.usage_bytes is None:
            # No cgroup accounting (bare host, or the v2 root cgroup): the host's own figure,
            # where MemAvailable is the kernel's estimate of what it can reclaim.
            usage = working_set = unreclaimable = memory.total_bytes - memory.available_bytes
            breakdown.setdefault("shmem", memory.shmem_bytes)
        else:
            usage = stats.usage_bytes
            working_set = max(0, usage - (stats.inactive_file_bytes or 0))
            reclaimable = stats.reclaimable_bytes
            # Without memory.stat nothing is known reclaimable: the working set, as before.
            unreclaimable = working_set if reclaimable is None else max(0, usage - reclaimable)
        return MemoryReading(
            limit_bytes=limit,
            cgroup_limited=limited,
            usage_bytes=usage,
            working_set_bytes=working_set,
            host_total_bytes=memory.total_bytes,
            host_available_bytes=memory.available_bytes,
            oom_kills=stats.oom_kills,
            unreclaimable_bytes=unreclaimable,
            breakdown=breakdown,
            stall_percent=stats.stall_percent,
            exporter=exporter,
        )

    def metrics(self, reading: MemoryReading) -> Iterable[Metric]:
        yield LIMIT.value(reading.limit_bytes)
        yield USAGE.value(reading.usage_bytes)
        yield WORKING_SET.value(reading.working_set_bytes)
        yield UNRECLAIMABLE.value(reading.unreclaimable_bytes)
        stat = STAT.family()
        for name, value in reading.breakdown.items():
            add(stat, value, name)
        yield stat
        yield RATIO.value(reading.usage_ratio)
        yield HOST_TOTAL.value(reading.host_total_bytes)
        yield HOST_AVAILABLE.value(reading.host_available_bytes)
        if reading.oom_kills is not None:
            yield OOM_KILLS.value(reading.oom_kills)
        if reading.exporter is not None:
            yield EXPORTER_WORKING_SET.value(reading.exporter[0])
            yield EXPORTER_LIMIT.value(reading.exporter[1])


def _limit(stats: cgroup.MemoryStats, host_total: int) -> tuple[bool, int]:
    """Whether the cgroup's limit applies (set and below the host's total), and the limit."""
    if stats.limit_bytes is not None and stats.limit_bytes < host_total:
        return True, stats.limit_bytes
    return False, host_total


register(
    "memory",
    help="Container-correct memory: cgroup limit, usage, working set, what cannot be reclaimed "
    "and memory.stat, OOM kills; host memory.",
    load=lambda: MemoryCollector,
)
