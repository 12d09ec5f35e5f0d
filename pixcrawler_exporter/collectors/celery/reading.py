"""What the work pipeline's collector reads: frozen values, ``None`` where a figure is unknown.

Each part comes from its own background source (the broker's round trip, the event listener,
the reconciliation) and carries the time it was learnt; a part older than its maximum age is
left out of the reading, so its figures are absent rather than stale.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Moment:
    """When something was learnt, on both clocks: the monotonic one to age it by (a wall clock
    set back or forward must not age or rejuvenate a figure), the wall clock to export it by.
    Exported as a timestamp, as Prometheus advises for "time since" figures, a moment does not
    change from scrape to scrape, so neither do its families: ``time() - metric`` gives the age.
    Both are read when it happens, so a wall clock stepped later moves no moment already taken.
    """

    monotonic: float
    wall: float

    @classmethod
    def now(cls) -> Moment:
        return cls(time.monotonic(), time.time())


@dataclass(frozen=True)
class RedisInfo:
    """From Redis's INFO: what says whether the broker itself is healthy."""

    version: str
    used_memory_bytes: int
    max_memory_bytes: int | None  # None: no limit (maxmemory 0)
    eviction_policy: str
    evicted_keys: int
    rejected_connections: int
    connected_clients: int


@dataclass(frozen=True)
class BrokerReading:
    """One pipelined round trip to the broker."""

    queues: Mapping[str, int]  # waiting messages per configured queue, priorities summed
    unacked: int  # messages delivered to a worker and not acknowledged yet, all queues
    unacked_oldest_seconds: float | None  # None when there are none
    redis: RedisInfo
    learnt: Moment  # when the round trip ended


@dataclass(frozen=True)
class WorkerView:
    hostname: str
    online: bool  # a heartbeat within two of its intervals, Celery's own rule
    active: int | None  # tasks running, from its last heartbeat
    processed: int | None  # tasks it has run since it started, from its last heartbeat
    heard: float  # wall-clock time its last heartbeat reached the exporter


@dataclass(frozen=True)
class TaskCount:
    task: str
    outcome: str  # succeeded, failed, retried, rejected
    count: int


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound, count), ending with +Inf, and the sum."""

    buckets: tuple[tuple[float, int], ...]
    total: float


@dataclass(frozen=True)
class TaskFigures:
    """From task events (opt-in): counts per task name and outcome, and two histograms."""

    counts: tuple[TaskCount, ...]
    runtime: Mapping[str, Histogram]  # per task name
    queue_wait: Mapping[str, Histogram]  # per task name


@dataclass(frozen=True)
class EventsReading:
    connected: bool
    workers: tuple[WorkerView, ...]  # at most celery.max_workers, online first
    online: int  # every worker online, named or not
    running: int  # tasks running on every online worker, named or not
    unnamed_workers_total: int  # workers never given a series because of the cap
    tasks: TaskFigures | None  # None unless task events are counted
    events_total: int  # events received since start
    learnt: Moment  # when the listener last knew the stream was flowing


@dataclass(frozen=True)
class ReconcileReading:
    """The database's running jobs against Celery's result backend (seed 003's reconcile)."""

    active_chunks: int  # the database's active chunks over running jobs
    # Chunk tasks whose result is final that the database still counts active; None where
    # the jobs table has no task_ids column.
    stuck: int | None
    task_ids: int  # task ids of running jobs looked up
    learnt: Moment


@dataclass(frozen=True)
class CeleryReading:
    """The last of each part, the ones older than their maximum age left out."""

    broker: BrokerReading | None
    events: EventsReading | None
    reconcile: ReconcileReading | None
    visibility_timeout_seconds: float
    # Part -> why it is missing or failing; the reading's own error is the broker's (the
    # collector is "up" when the broker answers).
    problems: Mapping[str, str] = field(default_factory=dict)
    # Part -> the wall-clock time it was learnt, for the parts in the reading.
    learnt: Mapping[str, float] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.problems.get("broker")

    def services(self) -> Mapping[str, str | None]:
        """Seed 002's ``services.redis`` and ``services.celery``: the broker answers, and a
        worker is online to take work."""
        celery = self.problems.get("events") or self.problems.get("broker")
        if celery is None and self.events is not None and self.events.online == 0:
            celery = "no worker online"
        return {"redis": self.problems.get("broker"), "celery": celery}

    @property
    def in_flight(self) -> int | None:
        """Chunks Celery holds anywhere a live worker will run them: waiting in the configured
        queues and running on online workers. None when either part is missing."""
        if self.broker is None or self.events is None:
            return None
        return sum(self.broker.queues.values()) + self.events.running
