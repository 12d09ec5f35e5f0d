"""The collector contract: one class per source, read into a typed value, then rendered."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import ClassVar, Generic, TypeVar

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.metrics import Desc

R = TypeVar("R")


class CollectorError(Exception):
    """A source could not be read. The message names what was read and why it failed."""


class Collector(ABC, Generic[R]):
    """Reads one source.

    ``read`` does the I/O and returns a small typed reading (``None`` fields mean unknown);
    ``metrics`` turns a reading into families without I/O, so ``/metrics`` and ``/status`` render
    the same reading. The scraper never runs ``read`` of one collector twice at once, so a
    collector needs no lock of its own for that.
    """

    name: ClassVar[str]
    descs: ClassVar[Sequence[Desc]]

    @abstractmethod
    def read(self) -> R:
        """Read the source; raise :class:`CollectorError` (or any exception) on failure."""

    def read_until(self, deadline: float) -> R:
        """Read, giving up by ``deadline`` (a ``time.monotonic()`` value) where the source can;
        a source that cannot be cut short is bounded by the scraper instead."""
        return self.read()

    @abstractmethod
    def metrics(self, reading: R) -> Iterable[Metric]:
        """Render a reading as metric families."""

    def describe(self) -> Iterable[Metric]:
        # Registering with client_python calls this instead of collect(), so it must not read.
        return [d.family() for d in self.descs]

    def start(self) -> None:
        """Start background work, if the source has any (called once, after config is valid)."""

    def close(self) -> None:
        """Stop background work and release connections."""
