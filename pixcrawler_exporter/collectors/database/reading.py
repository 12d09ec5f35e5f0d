"""What the database collector reads, apart from the collector: derived facts type-check against it
without importing psycopg (~20 MB), which a exporter without a database never needs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

Sample = tuple[tuple[str, ...], float]  # label values in the query's label order, value


@dataclass(frozen=True)
class DatabaseReading:
    up: bool
    active_chunks: int | None  # pixcrawler_chunks_active; None when down or not queried
    samples: Mapping[str, tuple[Sample, ...]]  # metric name -> samples; empty when down
    errors_total: Mapping[str, int]  # reason -> failed collections since start
    error: str | None = None  # the scraper reports the collector failed when this is set
    reason: str | None = None
    cached: bool = False
    checked_at: float = field(default_factory=time.time)

    def services(self) -> Mapping[str, str | None]:
        return {"database": self.error}
