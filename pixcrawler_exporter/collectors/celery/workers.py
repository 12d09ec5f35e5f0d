"""Workers as their heartbeats tell them: online by Celery's own rule, departed ones forgotten.

Celery calls a worker alive while its last heartbeat is younger than twice its heartbeat interval
(``celery.events.state.HEARTBEAT_EXPIRE_WINDOW``, 200 %), and offline at once on a
``worker-offline`` event (a warm shutdown). Ages are taken from when the exporter received each
heartbeat, not from the worker's clock, so a skewed clock on a worker does not make it look dead;
that moment is exported on the exporter's wall clock.
The series are capped: a broker shared with thousands of short-lived workers (autoscaled pods
named by their pod) must not grow ``/metrics`` without bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pixcrawler_exporter.collectors.celery.reading import Moment, WorkerView

EXPIRE_WINDOW = 2.0  # heartbeat intervals without a heartbeat before a worker is offline
DEFAULT_FREQUENCY = 2.0  # Celery's worker_heartbeat... event frequency, seconds


@dataclass
class _Worker:
    received: float  # monotonic time of the last heartbeat or online event
    received_wall: float  # the same on the wall clock, for the export
    frequency: float
    active: int | None
    processed: int | None
    offline: bool  # said so itself (worker-offline)


class WorkerBook:
    """Not locked: the listener thread writes, and :meth:`view` is called under its lock.

    Past ``max_workers`` named workers, others are still counted online (up to ten times the
    cap, so that a flood of names cannot grow memory either) but get no series of their own.
    """

    def __init__(self, max_workers: int, forget_after: float) -> None:
        self.max_workers = max_workers
        self.forget_after = forget_after
        self._named: dict[str, _Worker] = {}
        self._unnamed: dict[str, _Worker] = {}
        self.unnamed_total = 0  # distinct workers kept out of the named ones by the cap
        self._swept = float("-inf")  # when a full book was last swept of departed workers
        # The last view, and the span of time it holds for: from when it was made until just
        # before a worker's online state or its being forgotten changes with time alone.
        self._view: tuple[tuple[tuple[WorkerView, ...], int, int], float, float] | None = None

    def heard(self, event: Mapping[str, object], at: Moment) -> None:
        """A worker-heartbeat, worker-online or worker-offline event, received ``at``."""
        hostname = event.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            return
        self._view = None
        now = at.monotonic
        entry = _Worker(
            received=now,
            received_wall=at.wall,
            frequency=_number(event.get("freq")) or DEFAULT_FREQUENCY,
            active=_count(event.get("active")),
            processed=_count(event.get("processed")),
            offline=event.get("type") == "worker-offline",
        )
        if hostname in self._named or self._room(self._named, self.max_workers, now):
            self._named[hostname] = entry
            return
        if hostname not in self._unnamed:
            self.unnamed_total += 1
            if not self._room(self._unnamed, 10 * self.max_workers, now):
                return
        self._unnamed[hostname] = entry

    def view(self, now: float) -> tuple[tuple[WorkerView, ...], int, int]:
        """The named workers (online first, then by name), how many workers are online in all,
        and how many tasks they run.

        Made again only after a heartbeat or when time alone changes it: a scrape with nothing
        new (most of them) takes the last one. Each change still comes from the rule itself,
        applied at the first view past the moment it can change (less a microsecond, so that
        rounding cannot put a view that is still kept past it).
        """
        kept = self._view
        if kept is not None and kept[1] <= now < kept[2]:
            return kept[0]
        self._forget(self._named, now)
        self._forget(self._unnamed, now)
        views = []
        for hostname, w in self._named.items():
            views.append(
                WorkerView(hostname, _online(w, now), w.active, w.processed, w.received_wall)
            )
        views.sort(key=lambda v: (not v.online, v.hostname))
        every = (*self._named.values(), *self._unnamed.values())
        live = [w for w in every if _online(w, now)]
        found = tuple(views), len(live), sum(w.active or 0 for w in live)
        changes = [w.received + self.forget_after for w in every]
        changes += [w.received + w.frequency * EXPIRE_WINDOW for w in live]
        self._view = found, now, min(changes, default=math.inf) - 1e-6
        return found

    def _room(self, book: dict[str, _Worker], cap: int, now: float) -> bool:
        if len(book) < cap:
            return True
        # A flood of new names would otherwise sweep a full book once per event.
        if now - self._swept >= 1.0:
            self._swept = now
            self._forget(self._named, now)
            self._forget(self._unnamed, now)
        return len(book) < cap

    def _forget(self, book: dict[str, _Worker], now: float) -> None:
        for hostname in [h for h, w in book.items() if now - w.received >= self.forget_after]:
            del book[hostname]


def _online(w: _Worker, now: float) -> bool:
    return not w.offline and now - w.received < w.frequency * EXPIRE_WINDOW


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
