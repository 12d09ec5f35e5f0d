"""Runs the collectors for a scrape: single-flight, bounded by the scrape's deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Source
from pixcrawler_exporter.collect.errors import describe
from pixcrawler_exporter.collect.lane import Lane

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """One collector's result in one collection: a reading, or why there is none.

    A failed outcome may still hold a reading when the source reports its own failure (the
    database collector's ``up=0``): it is rendered, but no derived fact is built on it.
    """

    collector: str
    reading: object  # None when there is none
    error: str | None
    duration_seconds: float
    render: Callable[[], Iterable[Metric]] | None = None  # the reading's families, if any

    @property
    def success(self) -> bool:
        return self.error is None

    def families(self) -> Iterable[Metric]:
        return self.render() if self.render is not None else ()


@dataclass(frozen=True)
class Snapshot:
    """Everything one collection read: what ``/metrics``, ``/status`` and ``/health`` render."""

    outcomes: Mapping[str, Outcome]
    timestamp: float  # wall-clock time the collection started

    def get(self, kind: type[T]) -> T | None:
        """The successful reading of type ``kind`` (e.g. ``MemoryReading``), or None when its
        collector is disabled or failed. Each collector reads its own type, so there is one."""
        for outcome in self.outcomes.values():
            if outcome.success and isinstance(outcome.reading, kind):
                return outcome.reading
        return None


class _InlineRead:
    """An inline source's read in one collection: its outcome, once the scrape that opened the
    collection has it.

    Every source is read on every scrape, and a Future costs two locks to make, to set and to
    read (about 8 µs a source): here the reading thread assigns ``outcome`` once, and a scrape
    that joined waits on ``finished``, the collection's event, set when every inline read of
    that collection has ended.
    """

    __slots__ = ("finished", "outcome")

    def __init__(self, finished: threading.Event) -> None:
        self.finished = finished
        self.outcome: Outcome | None = None

    def done(self) -> bool:
        return self.outcome is not None


_Read = Future[Outcome] | _InlineRead


class _Collection:
    def __init__(
        self,
        reads: dict[str, _Read],
        inline: list[tuple[Source, _InlineRead]],
        finished: threading.Event,
    ) -> None:
        self.reads = reads
        self.inline = inline  # read on the thread of the scrape that opened the collection
        self.finished = finished
        self.started = time.monotonic()
        self.timestamp = time.time()


class Scraper:
    """Collects every enabled collector.

    Scrapes that arrive while a collection is under way join it instead of reading every source
    again. Collectors marked ``inline`` are read by the scrape that opens the collection, on its
    own thread, after the others have been handed to their threads (a :class:`Lane` each, which
    never holds the process's exit). A collector still running when a scrape's deadline passes
    is reported failed for that scrape (rendered as its :meth:`Source.late` says); its read goes
    on in its own thread, and later collections wait on that same read rather than starting
    another, so a hung source holds one thread, not one per scrape.
    """

    def __init__(self, collectors: Sequence[Source], previous: Scraper | None = None) -> None:
        self.collectors = list(collectors)
        self._lanes = {c.name: Lane(f"collector-{c.name}") for c in self.collectors if not c.inline}
        self._lock = threading.Lock()
        self._open: _Collection | None = None
        self._running: dict[str, _Read] = {}
        self._failing: Changes[str, bool] = Changes(False)
        self.reads: dict[str, int] = {c.name: 0 for c in self.collectors}
        if previous is not None:
            self._take_over(previous)

    def collect(self, timeout: float) -> Snapshot:
        deadline = time.monotonic() + timeout
        with self._lock:
            collection = self._open
            opened = collection is None
            if collection is None:
                collection = self._open = self._start(deadline)
        if opened:
            self._read_inline(collection, deadline)
        self._wait(collection, deadline)
        with self._lock:
            if self._open is collection:
                # The first scrape to answer closes the collection: later scrapes read afresh.
                self._open = None
        outcomes = {c.name: self._outcome(c, collection, timeout) for c in self.collectors}
        self._log_changes(outcomes)
        return Snapshot(outcomes, collection.timestamp)

    def close(self) -> None:
        self.retire()
        for collector in self.collectors:
            collector.close()

    def retire(self) -> None:
        """Stop taking work after a reload; reads under way finish, collectors stay open."""
        for lane in self._lanes.values():
            lane.close()

    def _take_over(self, previous: Scraper) -> None:
        # After a reload, a collector kept from the previous configuration keeps its read under
        # way (a hung source still holds one thread, not two) and its logged failure state.
        with previous._lock:
            self._failing = previous._failing.copy()
            for collector in previous.collectors:
                running = previous._running.get(collector.name)
                if collector in self.collectors and running is not None and _under_way(running):
                    self._running[collector.name] = running

    def _start(self, deadline: float) -> _Collection:
        reads: dict[str, _Read] = {}
        inline: list[tuple[Source, _InlineRead]] = []
        finished = threading.Event()
        for collector in self.collectors:
            running = self._running.get(collector.name)
            if running is None or running.done():
                if collector.inline:
                    mine = _InlineRead(finished)
                    inline.append((collector, mine))
                    running = mine
                else:
                    running = self._lanes[collector.name].submit(
                        partial(self._read, collector, deadline)
                    )
                self._running[collector.name] = running
            reads[collector.name] = running
        return _Collection(reads, inline, finished)

    def _read_inline(self, collection: _Collection, deadline: float) -> None:
        try:
            for collector, read in collection.inline:
                read.outcome = self._read(collector, deadline)
        finally:
            # Interrupted (KeyboardInterrupt, SystemExit): no later collection may wait on a
            # read that will never finish.
            for collector, read in collection.inline:
                if read.outcome is None:
                    read.outcome = Outcome(collector.name, None, "read interrupted", 0.0)
            collection.finished.set()

    @staticmethod
    def _wait(collection: _Collection, deadline: float) -> None:
        """Until every read of the collection has ended, or ``deadline``."""
        reads = collection.reads.values()
        lanes = [r for r in reads if isinstance(r, Future) and not r.done()]
        if lanes:
            wait_futures(lanes, timeout=max(0.0, deadline - time.monotonic()))
        # Inline reads under way: the opener's, for a scrape that joined, or a read still
        # running from an earlier collection, which this one waits on rather than repeat.
        for event in {r.finished for r in reads if isinstance(r, _InlineRead) and not r.done()}:
            event.wait(max(0.0, deadline - time.monotonic()))

    def _read(self, collector: Source, deadline: float) -> Outcome:
        start = time.perf_counter()
        self.reads[collector.name] += 1
        try:
            taken = collector.take(deadline)
        except Exception as exc:  # noqa: BLE001 - any failure of a source is that collector's failure
            return Outcome(collector.name, None, describe(exc), time.perf_counter() - start)
        # A reading may carry its own failure (the database's up=0 must still be exported).
        took = time.perf_counter() - start
        return Outcome(collector.name, taken.reading, taken.error, took, taken.render)

    @staticmethod
    def _outcome(collector: Source, collection: _Collection, timeout: float) -> Outcome:
        read = collection.reads[collector.name]
        if isinstance(read, _InlineRead):
            if read.outcome is not None:
                return read.outcome
        elif read.done():
            try:
                return read.result()
            except Exception as exc:  # noqa: BLE001 - no thread for the read, or it was cancelled
                return Outcome(collector.name, None, describe(exc), 0.0)
        error = f"did not finish within the scrape deadline of {timeout:.2f}s"
        took = time.monotonic() - collection.started
        late = collector.late(error)
        if late is None:
            return Outcome(collector.name, None, error, took)
        return Outcome(collector.name, late.reading, error, took, late.render)

    def _log_changes(self, outcomes: Mapping[str, Outcome]) -> None:
        with self._lock:
            for name, outcome in outcomes.items():
                if outcome.reading is not None and outcome.error is not None:
                    continue  # a source that reports its own failure logs its own changes
                if (change := self._failing.update(name, not outcome.success)) is None:
                    continue
                if change.now:
                    log.warning(
                        "collector failed",
                        extra={"collector": name, "error": outcome.error},
                    )
                else:
                    log.info("collector recovered", extra={"collector": name})


def _under_way(read: _Read) -> bool:
    """A read running now: a lane's read not yet started is cancelled with its lane instead."""
    return read.running() if isinstance(read, Future) else not read.done()
