"""What a scrape gets from the Azure collector: the cached values as they were at one moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class AzureValue:
    resource: str  # the resource id as configured
    resource_type: str
    metric: str
    aggregation: str
    unit: str
    value: float
    timestamp: float  # Unix time the value's time grain began
    fetched: float  # Unix time of the refresh that returned it
    instance: str = ""  # the App Service instance; "" for a metric not split by instance


@dataclass(frozen=True)
class LogValue:
    query: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class AzureReading:
    """The cache as it was at ``time``; only values fresher than ``max_age_seconds`` are in it."""

    values: tuple[AzureValue, ...]
    log_values: tuple[LogValue, ...]
    up: bool
    last_success: float | None
    requests: Mapping[str, int]
    ratelimit_remaining: Mapping[str, float]
    error: str | None  # None unless the last refresh failed: the collector is then reported failed
    time: float
    preset_values: tuple[LogValue, ...] = ()  # one per log preset, ``query`` its name

    def services(self) -> Mapping[str, str | None]:
        return {"azure": self.error}

    def percent(self, metric: str) -> float | None:
        """A fresh ``CpuPercentage`` or ``MemoryPercentage`` (0-100, as Azure reports it) of the
        first App Service plan configured that has one, from its busiest instance: a plan whose
        instances run at 40, 45 and 95 % is at 95 %, not at their average. None when there is
        none."""
        found = self.worst(metric, "Microsoft.Web/serverfarms")
        return found.value if found is not None else None

    def worst(self, metric: str, resource_type: str | None = None) -> AzureValue | None:
        """The highest fresh value of ``metric`` among the instances of the first resource (in
        configuration order) that has one."""
        found = [
            v
            for v in self.values
            if v.metric.lower() == metric.lower()
            and (resource_type is None or v.resource_type.lower() == resource_type.lower())
        ]
        if not found:
            return None
        first = found[0].resource.lower()
        return max((v for v in found if v.resource.lower() == first), key=lambda v: v.value)
