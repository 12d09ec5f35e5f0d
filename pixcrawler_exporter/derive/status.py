"""Derived facts: resource values, statuses and capacity, built from a snapshot's readings.

``/metrics``, ``/status`` and the status loop all go through :meth:`StatusTracker.update`, so
the three never disagree about a value.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.scraper import Snapshot
from pixcrawler_exporter.collectors.azure.collector import AzureReading
from pixcrawler_exporter.collectors.celery.reading import CeleryReading
from pixcrawler_exporter.collectors.cpu import CpuReading
from pixcrawler_exporter.collectors.database.reading import DatabaseReading
from pixcrawler_exporter.collectors.disk import DiskReading
from pixcrawler_exporter.collectors.memory import MemoryReading
from pixcrawler_exporter.collectors.temp_storage.reading import TempStorageReading
from pixcrawler_exporter.config import Config
from pixcrawler_exporter.derive import capacity, thresholds
from pixcrawler_exporter.derive.capacity import MIB, Capacity, TempQuota
from pixcrawler_exporter.derive.resources import Resource
from pixcrawler_exporter.derive.thresholds import Evaluation, Status

log = logging.getLogger(__name__)

# A CPU rate over less than this is mostly noise; the previous rate is kept instead.
MIN_CPU_INTERVAL_SECONDS = 1.0
# The collectors whose readings the capacity answer rests on. Where one is off (the database in a
# per-pod sidecar, temp storage in the cluster-wide exporter) the answer can never be known, and
# saying "unknown" for ever would only page.
CAPACITY_SOURCES = ("database", "temp_storage")


@dataclass(frozen=True)
class Pipeline:
    """The work pipeline beside capacity: the backlog, and whether the database's active chunks
    match what Celery holds. None where unknown (the celery collector off, or a part stale)."""

    queued: int | None  # waiting in the configured queues
    unacked: int | None
    workers_online: int | None
    chunks_unaccounted: int | None  # the database's active chunks minus Celery's in flight
    chunks_stuck: int | None

    @classmethod
    def of(cls, reading: CeleryReading | None) -> Pipeline:
        if reading is None:
            return cls(None, None, None, None, None)
        brk, events, rec = reading.broker, reading.events, reading.reconcile
        in_flight = reading.in_flight
        return cls(
            sum(brk.queues.values()) if brk is not None else None,
            brk.unacked if brk is not None else None,
            events.online if events is not None else None,
            rec.active_chunks - in_flight if rec is not None and in_flight is not None else None,
            rec.stuck if rec is not None else None,
        )


@dataclass(frozen=True)
class Facts:
    values: Mapping[Resource, float | None]  # per resource: a 0-1 ratio, or active chunks
    temp: TempQuota | None  # None where the temp storage collector is off
    evaluations: Mapping[str, Evaluation]
    capacity: Capacity
    environment: str
    timestamp: float
    pipeline: Pipeline

    @property
    def temp_storage_bytes(self) -> int | None:
        return self.temp.used_bytes if self.temp is not None else None


@dataclass(frozen=True)
class _CpuSample:
    timestamp: float
    usage_seconds: float
    limit_cores: float


class StatusTracker:
    """Keeps what a single snapshot cannot say (the CPU rate needs two) and logs status changes
    once each: ``RESOURCE WARNING``, ``RESOURCE ALERT`` and ``RESOURCE OK`` lines (seed 001)."""

    def __init__(self, config: Config, environment: str) -> None:
        self.config = config
        self.environment = environment
        self._lock = threading.Lock()
        self._cpu_base: _CpuSample | None = None
        self._cpu_ratio: float | None = None
        self._statuses: Changes[str, Status | None] = Changes(None)
        self._azure_fresh: Changes[str, bool] = Changes(True)

    def successor(self, config: Config, environment: str) -> StatusTracker:
        """A tracker for a reloaded configuration that remembers this one's CPU sample and
        logged statuses, so a reload logs only statuses that its new thresholds change."""
        new = StatusTracker(config, environment)
        with self._lock:
            new._cpu_base, new._cpu_ratio = self._cpu_base, self._cpu_ratio
            new._statuses = self._statuses.copy()
            new._azure_fresh = self._azure_fresh.copy()
        return new

    def update(self, snapshot: Snapshot) -> Facts:
        with self._lock:
            temp = snapshot.get(TempStorageReading)
            memory = memory_figure(snapshot.get(MemoryReading), temp)
            database = snapshot.get(DatabaseReading)
            active = database.active_chunks if database is not None else None
            temp_bytes = temp.total_bytes if temp is not None else None
            # The quota is the configuration's; where the temp collector is off it means nothing.
            quota = (
                capacity.temp_quota(self.config.capacity, temp_bytes)
                if "temp_storage" in snapshot.outcomes
                else None
            )
            values: dict[Resource, float | None] = {
                "disk": _disk_ratio(snapshot.get(DiskReading)),
                "memory": self._azure_or_local(
                    snapshot, "MemoryPercentage", memory.ratio if memory is not None else None
                ),
                "cpu": self._azure_or_local(snapshot, "CpuPercentage", self._cpu(snapshot)),
                "temp_storage": quota.usage_ratio if quota is not None else None,
                "chunks": active,
            }
            evaluations = thresholds.evaluate_all(values, self.config.thresholds)
            self._log_changes(evaluations)
        cap = capacity.capacity(
            self.config.capacity,
            active,
            temp_bytes,
            _memory_room(memory, temp),
            all(name in snapshot.outcomes for name in CAPACITY_SOURCES),
        )
        return Facts(
            values,
            quota,
            evaluations,
            cap,
            self.environment,
            snapshot.timestamp,
            Pipeline.of(snapshot.get(CeleryReading)),
        )

    def _azure_or_local(self, snapshot: Snapshot, metric: str, local: float | None) -> float | None:
        """In mode azure the plan's figure decides while fresh: inside App Service the OS does
        not know the plan's quota (seed 000). Falling back is logged once per change."""
        if self.config.mode != "azure":
            return local
        azure = snapshot.get(AzureReading)
        percent = azure.percent(metric) if azure is not None else None
        fresh = percent is not None
        if self._azure_fresh.update(metric, fresh) is not None:
            log.log(
                logging.INFO if fresh else logging.WARNING,
                "using Azure Monitor's %s again"
                if fresh
                else "no fresh Azure Monitor %s: using the container's own figure",
                metric,
                extra={"metric": metric},
            )
        return percent / 100 if percent is not None else local

    def _cpu(self, snapshot: Snapshot) -> float | None:
        reading = snapshot.get(CpuReading)
        if reading is None:
            return None
        now = _CpuSample(snapshot.timestamp, reading.usage_seconds, reading.limit_cores)
        base = self._cpu_base
        if base is None or now.usage_seconds < base.usage_seconds:
            self._cpu_base = now  # first sample, or the counter was reset
            return self._cpu_ratio
        elapsed = now.timestamp - base.timestamp
        if elapsed >= MIN_CPU_INTERVAL_SECONDS and now.limit_cores > 0:
            used = now.usage_seconds - base.usage_seconds
            self._cpu_ratio = used / elapsed / now.limit_cores
            self._cpu_base = now
        return self._cpu_ratio

    def _log_changes(self, evaluations: Mapping[str, Evaluation]) -> None:
        for resource, e in evaluations.items():
            change = self._statuses.update(resource, e.status)
            if resource == "overall" or e.status is None or change is None:
                continue
            if change.before is None and e.status is Status.OK:
                continue  # starting out fine is not news
            level = {Status.OK: logging.INFO, Status.WARNING: logging.WARNING}.get(
                e.status, logging.ERROR
            )
            severity = "critical" if e.status is Status.ALERT else "warning"
            log.log(
                level,
                "RESOURCE %s: %s at %s (%s threshold %s)",
                e.status.name,
                resource,
                _show(resource, e.value),
                severity,
                _show(resource, e.threshold),
                extra={
                    "resource": resource,
                    "status": e.status.name,
                    "value": e.value,
                    "threshold": e.threshold,
                },
            )


def families(facts: Facts, config: Config) -> Iterator[Metric]:
    yield from thresholds.families(facts.evaluations, config.thresholds)
    yield from capacity.families(facts.capacity)
    yield from capacity.temp_families(facts.temp)


class StatusMetrics(TypedDict):
    disk_pct: float | None
    memory_pct: float | None
    cpu_pct: float | None
    temp_storage_mb: float | None
    active_chunks: int | None


class StatusCapacity(TypedDict):
    active_chunks: int | None
    max_chunks: int
    available: int | None
    utilization: float | None
    environment: str
    can_start_chunk: bool | None


class StatusPipeline(TypedDict):
    queued: int | None
    unacked: int | None
    workers_online: int | None
    chunks_unaccounted: int | None
    chunks_stuck: int | None


class StatusDocument(TypedDict):
    metrics: StatusMetrics
    statuses: dict[str, str | None]  # per resource and "overall": OK, WARNING, ALERT or null
    capacity: StatusCapacity
    pipeline: StatusPipeline
    last_updated: str


def status_document(facts: Facts) -> StatusDocument:
    """Seed 001's ``/metrics`` JSON (served here as ``/status``) with seed 003's capacity block.
    Percentages (``*_pct``, ``utilization``) are 0-100 as the seeds' were; unknown values are
    null."""
    v, c, p = facts.values, facts.capacity, facts.pipeline
    return {
        "metrics": {
            "disk_pct": percent(v["disk"]),
            "memory_pct": percent(v["memory"]),
            "cpu_pct": percent(v["cpu"]),
            "temp_storage_mb": megabytes(facts.temp_storage_bytes),
            "active_chunks": c.active,
        },
        "statuses": {
            name: e.status.name if e.status is not None else None
            for name, e in facts.evaluations.items()
        },
        "capacity": {
            "active_chunks": c.active,
            "max_chunks": c.effective_max,
            "available": c.available,
            # Seed 003's scale: percent to one decimal, 71.4 for 25 of 35 chunks.
            "utilization": round(c.utilization * 100, 1) if c.utilization is not None else None,
            "environment": facts.environment,
            "can_start_chunk": c.can_start,
        },
        # Beside seed 003's capacity: the backlog, and how far the database's active chunks
        # are from what Celery holds (null without the celery collector).
        "pipeline": {
            "queued": p.queued,
            "unacked": p.unacked,
            "workers_online": p.workers_online,
            "chunks_unaccounted": p.chunks_unaccounted,
            "chunks_stuck": p.chunks_stuck,
        },
        "last_updated": datetime.fromtimestamp(facts.timestamp, UTC).isoformat(),
    }


@dataclass(frozen=True)
class MemoryFigure:
    used_bytes: int  # what the memory status counts as used
    limit_bytes: int

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.limit_bytes


def memory_figure(
    memory: MemoryReading | None, temp: TempStorageReading | None
) -> MemoryFigure | None:
    """The memory status's figure: what the kernel cannot reclaim (MemoryReading.status_bytes),
    plus temp files in RAM (tmpfs) the watched cgroup's shmem does not already hold: tmpfs pages
    are charged to the cgroup that wrote them, which need not be the watched one."""
    if memory is None or not memory.limit_bytes:
        return None
    used = memory.status_bytes
    if temp is not None:
        used += max(0, temp.in_memory_bytes - memory.breakdown.get("shmem", 0))
    return MemoryFigure(used, memory.limit_bytes)


def _memory_room(figure: MemoryFigure | None, temp: TempStorageReading | None) -> float | None:
    """Memory left for temp files: unlimited while none is in RAM, unknown without a figure."""
    if temp is None or not any(temp.in_memory.values()):
        return math.inf
    return figure.limit_bytes - figure.used_bytes if figure is not None else None


def _disk_ratio(reading: DiskReading | None) -> float | None:
    # The fullest configured filesystem decides: any one of them filling stops the crawl.
    if reading is None or not reading.usage:
        return None
    return max(u.usage_ratio for u in reading.usage.values())


def percent(ratio: float | None) -> float | None:
    """A ratio as ``/status`` and the landing page show it: percent, to two decimals."""
    return round(ratio * 100, 2) if ratio is not None else None


def megabytes(count: int | None) -> float | None:
    """Bytes as ``/status`` and the landing page show them: the seeds' MB (MiB), two decimals."""
    return round(count / MIB, 2) if count is not None else None


def _show(resource: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:g}" if resource == "chunks" else f"{value * 100:.1f}%"
