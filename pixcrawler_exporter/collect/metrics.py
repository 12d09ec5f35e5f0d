"""Metric descriptions declared once per module and turned into families on each scrape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)


@dataclass(frozen=True)
class Desc:
    """One metric's name, type, help and label names.

    Counters are declared with their ``_total`` name; client_python strips the suffix for the
    family and adds it back to the sample, so the exposed name is the declared one.
    """

    name: str
    help: str
    type: str = "gauge"  # "gauge" or "counter"
    labels: Sequence[str] = field(default_factory=tuple)

    def family(self) -> Metric:
        """An empty family: what ``describe()`` returns, and the start of a scrape's family."""
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    def value(self, value: float, *label_values: str) -> Metric:
        """A family holding one sample."""
        fam = self.family()
        add(fam, value, *label_values)
        return fam


def add(fam: Metric, value: float, *label_values: str) -> None:
    """Add one sample to a gauge or counter family built by :meth:`Desc.family`."""
    fam.add_metric(list(label_values), value)  # type: ignore[attr-defined]
