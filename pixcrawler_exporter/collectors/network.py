"""Bytes received and sent per network interface of the exporter's network namespace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext, register
from pixcrawler_exporter.collectors import procfs

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

RECEIVE = Desc(
    "pixcrawler_network_receive_bytes_total",
    "Bytes received on the interface.",
    "counter",
    ("interface",),
)
TRANSMIT = Desc(
    "pixcrawler_network_transmit_bytes_total",
    "Bytes sent on the interface.",
    "counter",
    ("interface",),
)


@dataclass(frozen=True)
class InterfaceCounters:
    receive_bytes: int
    transmit_bytes: int


NetworkReading = Mapping[str, InterfaceCounters]


class NetworkCollector(Collector[NetworkReading]):
    name = "network"
    inline = True
    descs = (RECEIVE, TRANSMIT)

    @classmethod
    def settings(cls, config: Config) -> object:
        return None  # every interface, always: nothing a reload could change

    def __init__(self, procfs_path: Path = Path("/proc")) -> None:
        self.procfs = procfs_path

    @classmethod
    def build(cls, context: BuildContext) -> NetworkCollector:
        return cls(context.procfs)

    def read(self) -> NetworkReading:
        return {
            nic: InterfaceCounters(received, sent)
            for nic, (received, sent) in procfs.net_dev(self.procfs).items()
            if nic != "lo"
        }

    def metrics(self, reading: NetworkReading) -> Iterable[Metric]:
        receive, transmit = RECEIVE.family(), TRANSMIT.family()
        for nic, c in sorted(reading.items()):
            add(receive, c.receive_bytes, nic)
            add(transmit, c.transmit_bytes, nic)
        yield from (receive, transmit)


register(
    "network",
    help="Bytes received and sent per network interface, loopback excluded.",
    load=lambda: NetworkCollector,
)
