"""Pressure stall information: how long tasks waited for CPU, memory or I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext, register
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.collectors.watched import Watched

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

STALL = Desc(
    "pixcrawler_pressure_stall_seconds_total",
    "Time some (or all, kind=full) tasks were stalled waiting for the resource; the cgroup's "
    "figures where the kernel keeps them, else the host's /proc/pressure.",
    "counter",
    ("resource", "kind"),
)

PressureReading = Mapping[tuple[str, str], float]


class PressureCollector(Collector[PressureReading]):
    name = "pressure"
    inline = True
    descs = (STALL,)

    def __init__(self, watched: Watched, procfs: Path) -> None:
        self.watched = watched
        self.procfs = procfs

    @classmethod
    def settings(cls, config: Config) -> object:
        return None  # the cgroup layout and paths only, which a reload does not change

    @classmethod
    def build(cls, context: BuildContext) -> PressureCollector:
        return cls(context.watched, context.procfs)

    def read(self) -> PressureReading:
        return cgroup.read_pressure(self.watched.layout(), self.procfs)

    def metrics(self, reading: PressureReading) -> Iterable[Metric]:
        fam = STALL.family()
        for (resource, kind), seconds in sorted(reading.items()):
            add(fam, seconds, resource, kind)
        yield fam


register(
    "pressure",
    help="Pressure stall information (PSI) for cpu, memory and io.",
    load=lambda: PressureCollector,
)
