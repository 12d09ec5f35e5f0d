"""The collector contract: one class per source, read into a typed value, then rendered."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar, cast, runtime_checkable

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.errors import CollectorError
from pixcrawler_exporter.collect.metrics import Desc

if TYPE_CHECKING:
    from pixcrawler_exporter.collect.registration import BuildContext
    from pixcrawler_exporter.config import Config

__all__ = [
    "Collector",
    "CollectorError",
    "ReportsError",
    "ReportsServices",
    "Source",
    "Taken",
    "reading_error",
]

R = TypeVar("R")


@runtime_checkable
class ReportsError(Protocol):
    """A reading that carries its own failure (the database's ``up 0`` must still be exported).

    ``error`` is None when the source was read fine, else one line saying why not; the scraper
    then reports the collector failed, renders the reading, and builds no derived fact on it.
    """

    @property
    def error(self) -> str | None: ...


@runtime_checkable
class ReportsServices(Protocol):
    """A reading that says how the services behind its source are: ``/health``'s ``services``
    in seed 002's shape (database, redis, celery, azure)."""

    def services(self) -> Mapping[str, str | None]:
        """Service name -> None when healthy, else one line saying why not."""
        ...


def reading_error(reading: object) -> str | None:
    """The failure a reading reports about itself, if it is one that can."""
    kind = type(reading)
    reports = _REPORTS_ERROR.get(kind)
    if reports is None:
        # isinstance() of a runtime-checkable protocol looks its members up again on every
        # call, about 15 µs: asked once per type of reading rather than on every scrape.
        reports = _REPORTS_ERROR[kind] = isinstance(reading, ReportsError)
    return cast(ReportsError, reading).error if reports else None


_REPORTS_ERROR: dict[type, bool] = {}


@dataclass(frozen=True)
class Taken:
    """One read, with its type erased for the scraper: the reading, its own failure, and how to
    render it (bound to the collector that read it, so no caller needs to know its type)."""

    reading: object
    error: str | None
    render: Callable[[], Iterable[Metric]]


class Source(ABC):
    """What the scraper, the renderer and the app see of any collector, whatever it reads."""

    name: ClassVar[str]
    descs: ClassVar[Sequence[Desc]]
    # True when ``take`` returns within its deadline by itself and in a fraction of a
    # millisecond (procfs and cgroup files, a result kept by a background thread): the scraper
    # then reads it on the scrape's own thread. A hand-off to a pool thread and back costs more
    # than such a read.
    inline: ClassVar[bool] = False
    # The services of seed 002's /health that this source answers for; each reads unhealthy
    # when the source gave no reading at all.
    services: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def build(cls, context: BuildContext) -> Source | None:
        """The factory its registration calls when the collector is on; None when the settings
        it needs are missing (it logs why). A collector needing no settings is just made."""
        return cls()

    @classmethod
    def settings(cls, config: Config) -> object:
        """The part of ``config`` that :meth:`build` reads: a reload rebuilds the collector when
        it changed and keeps the running one (its state, its background work) when not. The
        whole configuration unless a collector says less."""
        return config

    @abstractmethod
    def take(self, deadline: float) -> Taken:
        """Read by ``deadline`` (a ``time.monotonic()`` value); raise on failure."""

    def late(self, error: str) -> Taken | None:
        """What a scrape renders when this source's read did not finish by its deadline (a
        scrape that joined a collection opened with a later deadline): nothing by default. A
        source whose "up" figure must never vanish renders itself down, with ``error``."""
        return None

    def describe(self) -> Iterable[Metric]:
        # Registering with client_python calls this instead of collect(), so it must not read.
        return [d.family() for d in self.descs]

    def start(self) -> None:  # noqa: B027 - an optional hook: most sources have nothing to start
        """Start background work, if the source has any (called once, after config is valid)."""

    def close(self) -> None:  # noqa: B027 - an optional hook: most sources hold nothing open
        """Stop background work and release connections."""


class Collector(Source, Generic[R]):
    """Reads one source.

    ``read`` does the I/O and returns a small typed reading (``None`` fields mean unknown);
    ``metrics`` turns a reading into families without I/O, so ``/metrics`` and ``/status`` render
    the same reading. The scraper never runs ``read`` of one collector twice at once, so a
    collector needs no lock of its own for that.
    """

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

    def take(self, deadline: float) -> Taken:
        reading = self.read_until(deadline)
        return Taken(reading, reading_error(reading), lambda: self.metrics(reading))
