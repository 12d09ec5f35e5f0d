"""How many chunks can run and whether one more can start (seeds 000 and 003). Pure functions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.config import Capacity as CapacityConfig

MIB = 1024 * 1024  # the seeds' "MB"


@dataclass(frozen=True)
class Capacity:
    max_concurrent: int
    max_by_storage: int
    effective_max: int
    active: int | None  # None while the database count is unknown
    available: int | None
    utilization: float | None  # active / effective max, 0-1 and above when over-committed
    can_start: bool | None  # None while active chunks or temp usage is unknown
    # False where can_start can never be known: a source it rests on is not collected here.
    answerable: bool = True


def chunk_bytes(cfg: CapacityConfig) -> float:
    """Temp storage one chunk is expected to fill."""
    return cfg.chunk_size_images * cfg.estimated_image_size_mb * MIB


def temp_limit_bytes(cfg: CapacityConfig) -> int:
    return round(cfg.max_temp_storage_mb * MIB)


@dataclass(frozen=True)
class TempQuota:
    """The temp storage quota and what the temp storage collector counted against it. The
    collector reports bytes only; the quota is configuration, so the share is a derived fact."""

    limit_bytes: int
    used_bytes: int | None  # None while the temp usage is unknown (the collector failed)

    @property
    def usage_ratio(self) -> float | None:
        """Used over the limit, above 1 when over it: the temp_storage status's figure."""
        return None if self.used_bytes is None else self.used_bytes / self.limit_bytes


def temp_quota(cfg: CapacityConfig, used_bytes: int | None) -> TempQuota:
    return TempQuota(temp_limit_bytes(cfg), used_bytes)


def capacity(
    cfg: CapacityConfig,
    active: int | None,
    temp_used_bytes: int | None,
    memory_room_bytes: float | None = math.inf,
    answerable: bool = True,
) -> Capacity:
    """``memory_room_bytes``: memory left for temp files where they are in RAM (tmpfs), infinite
    where they are on disk, None when they are in RAM and the memory left is unknown.
    ``answerable``: whether the sources the answer rests on are collected at all."""
    by_storage = math.floor(
        cfg.max_temp_storage_mb / cfg.estimated_image_size_mb / cfg.chunk_size_images
    )
    effective = min(cfg.max_concurrent_chunks, by_storage)
    if active is None:
        return Capacity(
            cfg.max_concurrent_chunks, by_storage, effective, None, None, None, None, answerable
        )
    available = max(0, effective - active)
    # With no room for even one chunk the pool is full whatever is active.
    utilization = active / effective if effective else 1.0
    can_start = None
    if temp_used_bytes is not None and memory_room_bytes is not None:
        room = min(temp_limit_bytes(cfg) - temp_used_bytes, memory_room_bytes)
        can_start = available > 0 and room >= chunk_bytes(cfg)
    return Capacity(
        cfg.max_concurrent_chunks,
        by_storage,
        effective,
        active,
        available,
        utilization,
        can_start,
        answerable,
    )


MAX_CONCURRENT = Desc(
    "pixcrawler_chunks_max_concurrent", "Configured maximum of chunks running at once."
)
MAX_BY_STORAGE = Desc(
    "pixcrawler_chunks_max_by_storage",
    "Chunks the temp storage quota holds: floor(max_temp_storage_mb / estimated_image_size_mb "
    "/ chunk_size_images).",
)
EFFECTIVE_MAX = Desc(
    "pixcrawler_chunks_effective_max",
    "The smaller of the configured maximum and the storage-bound maximum.",
)
AVAILABLE = Desc(
    "pixcrawler_chunks_available",
    "Chunk slots free: effective maximum minus active chunks, never below 0; absent while the "
    "active count is unknown.",
)
UTILIZATION = Desc(
    "pixcrawler_capacity_utilization_ratio",
    "Active chunks divided by the effective maximum; absent while the active count is unknown.",
)
CAN_START = Desc(
    "pixcrawler_can_start_chunk",
    "1 when a chunk slot is free and temp storage (and memory, where temp files are on tmpfs) "
    "has room for one more chunk, else 0; absent while active chunks or temp usage is unknown.",
)
# Unknown is neither yes nor no: a made-up 0 or 1 would lie, and an absent series alone cannot be
# told from a target that is gone or a query that is wrong.
CAN_START_KNOWN = Desc(
    "pixcrawler_can_start_chunk_known",
    "1 while pixcrawler_can_start_chunk is known, 0 while it is unknown (and absent): active "
    "chunks (the database), temp usage or, with temp files in RAM, the memory left cannot be "
    "read. Absent where it can never be known: the database or temp storage collector is off.",
)
TEMP_LIMIT = Desc(
    "pixcrawler_temp_storage_limit_bytes",
    "Configured limit of the temp storage of all directories together.",
)
TEMP_USAGE_RATIO = Desc(
    "pixcrawler_temp_storage_usage_ratio",
    "Bytes of all temp directories divided by the limit (above 1 when over it), "
    "from the background scan.",
)
DESCS = (
    MAX_CONCURRENT,
    MAX_BY_STORAGE,
    EFFECTIVE_MAX,
    AVAILABLE,
    UTILIZATION,
    CAN_START,
    CAN_START_KNOWN,
    TEMP_LIMIT,
    TEMP_USAGE_RATIO,
)


def families(c: Capacity) -> Iterator[Metric]:
    yield MAX_CONCURRENT.value(c.max_concurrent)
    yield MAX_BY_STORAGE.value(c.max_by_storage)
    yield EFFECTIVE_MAX.value(c.effective_max)
    if c.available is not None:
        yield AVAILABLE.value(c.available)
    if c.utilization is not None:
        yield UTILIZATION.value(c.utilization)
    if c.can_start is not None:
        yield CAN_START.value(1 if c.can_start else 0)
    if c.answerable:
        yield CAN_START_KNOWN.value(0 if c.can_start is None else 1)


def temp_families(quota: TempQuota | None) -> Iterator[Metric]:
    """The quota while the temp storage collector runs (``quota`` None: it is off), and the share
    in use while its reading is good: the figure the temp_storage status is evaluated from, never
    one built on a directory that could not be read."""
    if quota is None:
        return
    yield TEMP_LIMIT.value(quota.limit_bytes)
    if quota.usage_ratio is not None:
        yield TEMP_USAGE_RATIO.value(quota.usage_ratio)
