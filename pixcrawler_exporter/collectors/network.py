"""Bytes received and sent per network interface of the exporter's network namespace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil
from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import register

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

    def read(self) -> NetworkReading:
        # psutil reads <procfs>/net/dev (psutil.PROCFS_PATH is set from --path.procfs).
        counters = psutil.net_io_counters(pernic=True)
        return {
            nic: InterfaceCounters(c.bytes_recv, c.bytes_sent)
            for nic, c in counters.items()
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
