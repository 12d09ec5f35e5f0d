"""Read a cgroup's container-correct memory, CPU and pressure figures (cgroup_find.py finds it).

Handles cgroup v1, v2, hybrid (v1 controllers beside a cgroup2 mount) and no cgroups at all.
A missing file yields None, never 0; a file with contents we cannot parse raises CgroupError.
"""

from __future__ import annotations

import errno
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pixcrawler_exporter.collectors.procfs import read_file

# Kernels write "no limit" as the largest page-aligned int64 (or -1); nothing real is this big.
_UNLIMITED = 2**62
# ENOENT/ENOTDIR: the file is not there. EOPNOTSUPP: the kernel has the file but turned the
# feature off (e.g. PSI disabled through cgroup.pressure), which is no more an answer than absence.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EOPNOTSUPP})
_INTEGER = re.compile(r"-?[0-9]+")
# A whole file of "key value" lines as the kernel writes them: one match instead of one a line.
_KEYED = re.compile(r"(?:[ \t]*\S+[ \t]+-?[0-9]+[ \t]*\n)*")


class CgroupError(Exception):
    """A cgroup or proc file whose contents make no sense."""

    def __init__(self, path: Path, content: str, problem: str = "unexpected contents") -> None:
        shown = content if len(content) <= 60 else content[:57] + "..."
        super().__init__(f"{path}: {problem}: {shown!r}")
        self.path = path


@dataclass(frozen=True)
class CgroupLayout:
    version: Literal["v1", "v2", "hybrid", "none"]
    memory: Path | None
    cpu: Path | None
    cpuacct: Path | None
    cpuset: Path | None
    unified: Path | None


# memory.stat figures exported as the breakdown, by their v2 names. v1 spells them total_* (its
# hierarchical figures, which the limit applies to), with rss for anon and cache for file.
BREAKDOWN = (
    "anon",
    "file",
    "active_anon",
    "inactive_anon",
    "active_file",
    "inactive_file",
    "shmem",
    "unevictable",
    "slab_reclaimable",
    "kernel",
)
_V1_NAMES = {"anon": "rss", "file": "cache"}
# v2 kernels before 5.18 have no "kernel" line; these are its parts there.
_V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "percpu", "sock", "vmalloc", "slab")


@dataclass(frozen=True)
class MemoryStats:
    limit_bytes: int | None
    usage_bytes: int | None
    oom_kills: int | None
    # memory.stat by BREAKDOWN name; a figure the cgroup does not report is missing, not 0.
    breakdown: Mapping[str, int] = field(default_factory=dict)
    # "some avg10" of the memory cgroup's own memory.pressure (v2 only): the share of the last
    # 10 s in which a task waited for memory, in percent.
    stall_percent: float | None = None

    @property
    def inactive_file_bytes(self) -> int | None:
        return self.breakdown.get("inactive_file")

    @property
    def reclaimable_bytes(self) -> int | None:
        """What the kernel can take back without swap: page cache on the file LRU lists and
        reclaimable slab where the cgroup reports it. None when memory.stat does not say."""
        b = self.breakdown
        if "active_file" not in b or "inactive_file" not in b:
            return None
        return b["active_file"] + b["inactive_file"] + b.get("slab_reclaimable", 0)


@dataclass(frozen=True)
class CpuStats:
    quota_cores: float | None
    usage_seconds: float | None
    throttled_seconds: float | None
    throttled_periods: int | None
    cpuset_cpus: int | None


def read_memory(layout: CgroupLayout) -> MemoryStats:
    d = layout.memory
    if d is None:
        return MemoryStats(None, None, None)
    return _read_memory_v2(d) if d == layout.unified else _read_memory_v1(d)


def _read_memory_v2(d: Path) -> MemoryStats:
    stat = _read_keyed(_at(d, "memory.stat")) or {}
    breakdown = {name: stat[name] for name in BREAKDOWN if name in stat}
    parts = [stat[name] for name in _V2_KERNEL_PARTS if name in stat]
    if "kernel" not in breakdown and parts:
        breakdown["kernel"] = sum(parts)
    return MemoryStats(
        limit_bytes=_limit(_read_int_or_max(_at(d, "memory.max"))),
        usage_bytes=_read_int(_at(d, "memory.current")),
        oom_kills=(_read_keyed(_at(d, "memory.events")) or {}).get("oom_kill"),
        breakdown=breakdown,
        stall_percent=_read_stall_percent(_at(d, "memory.pressure")),
    )


def _read_memory_v1(d: Path) -> MemoryStats:
    stat = _read_keyed(_at(d, "memory.stat")) or {}
    breakdown: dict[str, int] = {}
    for name in BREAKDOWN:
        v1 = _V1_NAMES.get(name, name)
        # total_* covers the whole subtree, which is what the limit applies to.
        value = stat.get(f"total_{v1}", stat.get(v1))
        if value is not None:
            breakdown[name] = value
    # v1 keeps kernel memory apart from memory.stat; usage_in_bytes includes it.
    kernel = _read_int(_at(d, "memory.kmem.usage_in_bytes"))
    if kernel is not None:
        breakdown["kernel"] = kernel
    return MemoryStats(
        limit_bytes=_limit(_read_int(_at(d, "memory.limit_in_bytes"))),
        usage_bytes=_read_int(_at(d, "memory.usage_in_bytes")),
        oom_kills=(_read_keyed(_at(d, "memory.oom_control")) or {}).get("oom_kill"),
        breakdown=breakdown,
    )


def read_cpu(layout: CgroupLayout) -> CpuStats:
    quota: float | None = None
    throttled_seconds: float | None = None
    throttled_periods: int | None = None
    usage: float | None = None
    cpus: int | None = None
    v2 = layout.unified

    if (d := layout.cpu) is not None:
        stat = _read_keyed(_at(d, "cpu.stat")) or {}
        throttled_periods = stat.get("nr_throttled")
        if d == v2:
            quota = _read_cpu_max(_at(d, "cpu.max"))
            throttled_seconds = _scaled(stat.get("throttled_usec"), 1e6)
        else:
            quota = _read_cfs_quota(d)
            throttled_seconds = _scaled(stat.get("throttled_time"), 1e9)

    if (d := layout.cpuacct) is not None:
        if d == v2:
            usage = _scaled((_read_keyed(_at(d, "cpu.stat")) or {}).get("usage_usec"), 1e6)
        else:
            usage = _scaled(_read_int(_at(d, "cpuacct.usage")), 1e9)

    if (d := layout.cpuset) is not None:
        names = ["cpuset.cpus.effective"] if d == v2 else ["cpuset.effective_cpus", "cpuset.cpus"]
        for name in names:
            text = _read(_at(d, name))
            if text is not None:
                cpus = _count_cpus(_at(d, name), text)
                break

    return CpuStats(quota, usage, throttled_seconds, throttled_periods, cpus)


def read_pressure(
    layout: CgroupLayout, procfs: Path = Path("/proc")
) -> dict[tuple[str, str], float]:
    """Stall time in seconds by (resource, some|full): the cgroup's own, else the whole host's."""
    totals: dict[tuple[str, str], float] = {}
    for resource in ("cpu", "memory", "io"):
        # The v2 root cgroup has no *.pressure files; /proc/pressure is the same figure there.
        candidates = [_at(procfs, f"pressure/{resource}")]
        if layout.unified is not None:
            candidates.insert(0, _at(layout.unified, f"{resource}.pressure"))
        for path in candidates:
            text = _read(path)
            if text is not None:
                for kind, total in _parse_pressure(path, text).items():
                    totals[(resource, kind)] = total
                break
    return totals


def _read_stall_percent(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    some = _pressure_lines(path, text).get("some")
    try:
        return float(some["avg10"]) if some is not None else None
    except ValueError:
        raise CgroupError(path, text, "avg10 not a number") from None


@functools.lru_cache(maxsize=256)
def _at(directory: Path, name: str) -> Path:
    # The same few files are read on every scrape; joining paths anew each time cost more
    # than reading them.
    return directory / name


def _read(path: Path, allow_empty: bool = False) -> str | None:
    try:
        # Paths in mountinfo are raw bytes (a USB stick may be named in UTF-8 or not); keep them
        # byte-exact for Path. Numbers with stray bytes still fail as garbage when parsed.
        text = read_file(path).decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise CgroupError(path, exc.strerror or str(exc), "unreadable") from exc
    if not allow_empty and not text.strip():
        raise CgroupError(path, text, "empty file")
    return text


def _read_int(path: Path) -> int | None:
    text = _read(path)
    return None if text is None else _int(path, text.strip())


def _read_int_or_max(path: Path) -> int | None:
    text = _read(path)
    if text is None or text.strip() == "max":
        return None
    return _int(path, text.strip())


def _read_keyed(path: Path) -> dict[str, int] | None:
    """Files of "key value" lines: memory.stat, memory.events, cpu.stat, memory.oom_control."""
    text = _read(path)
    if text is None:
        return None
    if _KEYED.fullmatch(text):
        fields = text.split()
        return dict(zip(fields[::2], map(int, fields[1::2]), strict=True))
    values: dict[str, int] = {}  # a line that is wrong, to be named
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2 or not _INTEGER.fullmatch(fields[1]):
            raise CgroupError(path, line)
        values[fields[0]] = int(fields[1])
    return values


def _read_cpu_max(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2:
        raise CgroupError(path, text)
    period = _int(path, fields[1])
    if period <= 0:
        raise CgroupError(path, text, "period not positive")
    return None if fields[0] == "max" else _int(path, fields[0]) / period


def _read_cfs_quota(d: Path) -> float | None:
    quota = _read_int(_at(d, "cpu.cfs_quota_us"))
    if quota is None or quota < 0:
        return None
    period = _read_int(_at(d, "cpu.cfs_period_us"))
    if period is None:
        return None
    if period <= 0:
        raise CgroupError(_at(d, "cpu.cfs_period_us"), str(period), "period not positive")
    return quota / period


def _count_cpus(path: Path, text: str) -> int:
    """CPUs in a list like "0-3,8,10-11", which the kernel writes sorted and without overlaps."""
    count = 0
    for part in text.strip().split(","):
        bounds = part.split("-")
        low, high = _int(path, bounds[0]), _int(path, bounds[-1])
        if len(bounds) > 2 or high < low:
            raise CgroupError(path, text, "bad CPU range")
        count += high - low + 1
    return count


def _parse_pressure(path: Path, text: str) -> dict[str, float]:
    return {kind: _int(path, f["total"]) / 1e6 for kind, f in _pressure_lines(path, text).items()}


def _pressure_lines(path: Path, text: str) -> dict[str, dict[str, str]]:
    """The fields of a *.pressure file's lines by kind: {"some": {"avg10": "0.00", ...}}."""
    lines: dict[str, dict[str, str]] = {}
    for line in filter(str.strip, text.splitlines()):
        kind, *pairs = line.split()
        fields = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        if kind not in ("some", "full") or "total" not in fields or "avg10" not in fields:
            raise CgroupError(path, line)
        lines[kind] = fields
    return lines


def _int(path: Path, text: str) -> int:
    # Stricter than int(), which would take "1_000", " 7" or "+7" that no kernel writes.
    if not _INTEGER.fullmatch(text):
        raise CgroupError(path, text, "not an integer")
    return int(text)


def _limit(value: int | None) -> int | None:
    return None if value is None or value < 0 or value >= _UNLIMITED else value


def _scaled(value: int | None, per_second: float) -> float | None:
    return None if value is None else value / per_second
