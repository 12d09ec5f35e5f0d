"""OK / WARNING / ALERT per resource (seed 001). Pure functions of values and thresholds."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.config import Thresholds
from pixcrawler_exporter.derive.resources import RESOURCES, Resource


class Status(IntEnum):
    OK = 0
    WARNING = 1
    ALERT = 2


@dataclass(frozen=True)
class Evaluation:
    resource: str
    value: float | None  # None: unknown, so no status
    status: Status | None
    threshold: float | None  # the threshold crossed, or the warning one when OK


def evaluate(value: float | None, warning: float, critical: float) -> Status | None:
    if value is None:
        return None
    if value >= critical:
        return Status.ALERT
    if value >= warning:
        return Status.WARNING
    return Status.OK


def evaluate_all(
    values: Mapping[Resource, float | None], thresholds: Thresholds
) -> dict[str, Evaluation]:
    """One evaluation per resource plus ``overall``: the worst known status."""
    out: dict[str, Evaluation] = {}
    for resource in RESOURCES:
        pair = thresholds.pair(resource)
        value = values.get(resource)
        status = evaluate(value, pair.warning, pair.critical)
        crossed = pair.critical if status is Status.ALERT else pair.warning
        out[resource] = Evaluation(resource, value, status, crossed)
    known = [e.status for e in out.values() if e.status is not None]
    out["overall"] = Evaluation("overall", None, max(known) if known else None, None)
    return out


THRESHOLD = Desc(
    "pixcrawler_threshold",
    "Configured threshold per resource and severity: a ratio (0-1) for disk, memory, cpu and "
    "temp_storage, a count of active chunks for chunks.",
    "gauge",
    ("resource", "severity"),
)
STATUS = Desc(
    "pixcrawler_resource_status",
    '0 OK, 1 WARNING, 2 ALERT; resource="overall" is the worst. Absent while the resource\'s '
    "value is unknown.",
    "gauge",
    ("resource",),
)
USAGE_RATIO = Desc(
    "pixcrawler_resource_usage_ratio",
    "The figure each resource's status is evaluated from (0-1, above 1 when over a quota): the "
    "same number /status shows in percent and the log lines quote, whatever the mode; the "
    "shipped alerts read it. Absent while unknown.",
    "gauge",
    ("resource",),
)
DESCS = (THRESHOLD, STATUS, USAGE_RATIO)


def families(evaluations: Mapping[str, Evaluation], thresholds: Thresholds) -> Iterator[Metric]:
    threshold = _thresholds(thresholds)
    status = STATUS.family()
    for name, e in evaluations.items():
        if e.status is not None:
            add(status, int(e.status), name)
    # Chunks have no ratio: their status is evaluated from a count, pixcrawler_chunks_active.
    ratio = USAGE_RATIO.family()
    for name, e in evaluations.items():
        if e.value is not None and name not in ("chunks", "overall"):
            add(ratio, e.value, name)
    yield threshold
    yield status
    yield ratio


@functools.lru_cache(maxsize=4)
def _thresholds(thresholds: Thresholds) -> Metric:
    # Changes only with a reload: one family per configuration, yielded by every scrape (the
    # encoders only read it).
    threshold = THRESHOLD.family()
    for resource in RESOURCES:
        pair = thresholds.pair(resource)
        add(threshold, pair.warning, resource, "warning")
        add(threshold, pair.critical, resource, "critical")
    return threshold
