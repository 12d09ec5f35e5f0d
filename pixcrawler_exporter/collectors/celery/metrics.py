"""The work pipeline's metrics: declared once, rendered from a reading without I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.metrics import Desc, add, frozen, observe
from pixcrawler_exporter.collectors.celery.reading import (
    BrokerReading,
    CeleryReading,
    EventsReading,
    Histogram,
    TaskFigures,
    WorkerView,
)

T = TypeVar("T")

PARTS = ("broker", "events", "reconcile")

REDIS_UP = Desc(
    "pixcrawler_redis_up",
    "1 when the broker's Redis answered the last round trip, 0 when it failed or timed out.",
)
QUEUE = Desc(
    "pixcrawler_celery_queue_messages",
    "Messages waiting in the queue, its priority sub-queues summed.",
    "gauge",
    ("queue",),
)
UNACKED = Desc(
    "pixcrawler_celery_unacked_messages",
    "Messages delivered to a worker and not acknowledged yet, every queue's: running tasks "
    "(with acks_late), prefetched ones, and those of a worker that died.",
)
UNACKED_AGE = Desc(
    "pixcrawler_celery_unacked_oldest_age_seconds",
    "Seconds since the oldest unacknowledged message was delivered; absent when there is none.",
)
VISIBILITY = Desc(
    "pixcrawler_celery_visibility_timeout_seconds",
    "The broker's visibility timeout as configured (celery.visibility_timeout_seconds): an "
    "unacknowledged message older than this is delivered again.",
)
EVENTS_UP = Desc(
    "pixcrawler_celery_events_up",
    "1 while the workers' event stream is followed, 0 while it is being reconnected.",
)
EVENTS = Desc(
    "pixcrawler_celery_events_received_total",
    "Events received from the workers since the exporter started.",
    "counter",
)
ONLINE = Desc(
    "pixcrawler_celery_workers_online",
    "Workers whose last heartbeat is younger than two heartbeat intervals (Celery's rule).",
)
RUNNING = Desc(
    "pixcrawler_celery_tasks_running",
    "Tasks running on online workers, from their last heartbeats.",
)
WORKER_ONLINE = Desc(
    "pixcrawler_celery_worker_online",
    "1 while the worker is online, 0 once it is not; its series go after "
    "celery.worker_forget_seconds.",
    "gauge",
    ("worker",),
)
WORKER_ACTIVE = Desc(
    "pixcrawler_celery_worker_tasks_active",
    "Tasks the worker was running at its last heartbeat.",
    "gauge",
    ("worker",),
)
WORKER_PROCESSED = Desc(
    "pixcrawler_celery_worker_tasks_processed_total",
    "Tasks the worker has run since it started, at its last heartbeat.",
    "counter",
    ("worker",),
)
WORKER_HEARTBEAT = Desc(
    "pixcrawler_celery_worker_last_heartbeat_timestamp_seconds",
    "When the worker's last heartbeat reached the exporter, on the exporter's clock: "
    "time() minus this is the heartbeat's age.",
    "gauge",
    ("worker",),
)
UNNAMED = Desc(
    "pixcrawler_celery_workers_unnamed_total",
    "Workers seen beyond celery.max_workers, counted online but given no series of their own.",
    "counter",
)
TASKS = Desc(
    "pixcrawler_celery_tasks_total",
    "Task outcomes from task events (succeeded, failed, retried, rejected, revoked), by task "
    "name (celery.task_names; others are 'other'); every outcome of a name starts at 0 once "
    "the name is heard of.",
    "counter",
    ("task", "outcome"),
)
RUNTIME = Desc(
    "pixcrawler_celery_task_runtime_seconds",
    "Run time of tasks that succeeded or failed, from task events.",
    "histogram",
    ("task",),
)
QUEUE_WAIT = Desc(
    "pixcrawler_celery_task_queue_wait_seconds",
    "Time from a task being sent to it starting, from task events (needs "
    "task_send_sent_event on the producer).",
    "histogram",
    ("task",),
)
STUCK = Desc(
    "pixcrawler_celery_chunks_stuck",
    "Chunk tasks of running jobs whose Celery result is final (success, failure, revoked) "
    "beyond the chunks the job recorded completed or failed: the database still counts them "
    "active. Absent without the jobs table's task_ids column.",
)
UNACCOUNTED = Desc(
    "pixcrawler_celery_chunks_unaccounted",
    "The database's active chunks minus the tasks Celery holds for a live worker (waiting in "
    "the configured queues or running on an online worker). Above 0: the database counts "
    "chunks no live worker will run.",
)
DB_ACTIVE = Desc(
    "pixcrawler_celery_reconcile_active_chunks",
    "The database's active chunks over running jobs, as the last reconciliation read them.",
)
LEARNT = Desc(
    "pixcrawler_celery_last_success_timestamp_seconds",
    "When each part of the figures was last learnt, on the exporter's clock: broker (its last "
    "round trip), events (the stream last known flowing), reconcile (its last reconciliation). "
    "A part older than celery.max_age_seconds is left out of the figures.",
    "gauge",
    ("part",),
)
REDIS_INFO = Desc(
    "pixcrawler_redis_info",
    "Always 1; the labels give the broker's Redis version and its maxmemory-policy.",
    "gauge",
    ("version", "eviction_policy"),
)
REDIS_USED = Desc("pixcrawler_redis_memory_used_bytes", "Memory Redis has allocated (used_memory).")
REDIS_MAX = Desc(
    "pixcrawler_redis_memory_max_bytes",
    "Redis's maxmemory; absent when it has none (maxmemory 0).",
)
REDIS_EVICTED = Desc(
    "pixcrawler_redis_evicted_keys_total",
    "Keys Redis evicted to stay under maxmemory: with a broker, lost messages or results.",
    "counter",
)
REDIS_REJECTED = Desc(
    "pixcrawler_redis_rejected_connections_total",
    "Connections Redis refused (maxclients reached).",
    "counter",
)
REDIS_CLIENTS = Desc("pixcrawler_redis_connected_clients", "Clients connected to Redis.")

DESCS = (
    REDIS_UP,
    QUEUE,
    UNACKED,
    UNACKED_AGE,
    VISIBILITY,
    EVENTS_UP,
    EVENTS,
    ONLINE,
    RUNNING,
    WORKER_ONLINE,
    WORKER_ACTIVE,
    WORKER_PROCESSED,
    WORKER_HEARTBEAT,
    UNNAMED,
    TASKS,
    RUNTIME,
    QUEUE_WAIT,
    STUCK,
    UNACCOUNTED,
    DB_ACTIVE,
    LEARNT,
    REDIS_INFO,
    REDIS_USED,
    REDIS_MAX,
    REDIS_EVICTED,
    REDIS_REJECTED,
    REDIS_CLIENTS,
)


class Families:
    """Renders readings. The families of each part are kept, frozen so that the encoders write
    them once, and served again while what they are made from is equal. Nothing moves by itself
    (times are exported as timestamps, not ages), so most scrapes make no family at all.

    What a family says is decided by the reading alone: a part older than its maximum age is
    left out of the reading (``CeleryCollector.read``), and a worker's being online is decided
    at each reading, so nothing kept here outlives what the reading says. Scrapes may render at
    once: the worst a race costs is a part made twice.
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[object, tuple[Metric, ...]]] = {}
        # The collector hands the same reading again while nothing changed: all of it is kept.
        self._last: tuple[CeleryReading | None, tuple[Metric, ...]] = (None, ())
        # The workers' part is keyed by what it shows of them, not by when each was heard.
        self._workers: tuple[tuple[WorkerView, ...], tuple[object, ...]] = ((), ())

    def render(self, reading: CeleryReading) -> tuple[Metric, ...]:
        last, families = self._last
        if reading is not last:
            families = tuple(self._render(reading))
            self._last = reading, families
        return families

    def _render(self, reading: CeleryReading) -> Iterable[Metric]:
        broker_up, events_up = "broker" not in reading.problems, "events" not in reading.problems
        yield from self._part(
            "up", (broker_up, events_up, reading.visibility_timeout_seconds), _up, reading
        )
        yield from self._part("learnt", tuple(reading.learnt.items()), _learnt, reading)
        if reading.broker is not None:
            yield from self._part("broker", reading.broker, _broker_metrics, reading.broker)
        if (e := reading.events) is not None:
            yield from self._part("events", e.events_total, _events_metrics, e)
            seen, key = self._workers
            if seen is not e.workers:
                key = tuple(
                    (w.hostname, w.online, w.active, w.processed, w.heard) for w in e.workers
                )
                self._workers = e.workers, key
            workers = (e.online, e.running, e.unnamed_workers_total, key)
            yield from self._part("workers", workers, _workers_metrics, e)
            if e.tasks is not None:
                yield from self._part("tasks", e.tasks, _tasks_metrics, e.tasks)
        if reading.reconcile is not None:
            compared = (reading.reconcile, reading.in_flight)
            yield from self._part("reconcile", compared, _reconcile_metrics, reading)

    def _part(
        self, name: str, key: object, make: Callable[[T], Iterable[Metric]], source: T
    ) -> tuple[Metric, ...]:
        kept = self._kept.get(name)
        if kept is not None and kept[0] == key:
            return kept[1]
        families = tuple(frozen(f) for f in make(source))
        self._kept[name] = (key, families)
        return families


def _up(reading: CeleryReading) -> Iterable[Metric]:
    yield REDIS_UP.value(0 if "broker" in reading.problems else 1)
    yield VISIBILITY.value(reading.visibility_timeout_seconds)
    yield EVENTS_UP.value(0 if "events" in reading.problems else 1)


def _learnt(reading: CeleryReading) -> Iterable[Metric]:
    learnt = LEARNT.family()
    for part in PARTS:
        if part in reading.learnt:
            add(learnt, reading.learnt[part], part)
    yield learnt


def _broker_metrics(b: BrokerReading) -> Iterable[Metric]:
    queue = QUEUE.family()
    for name, depth in b.queues.items():
        add(queue, depth, name)
    yield queue
    yield UNACKED.value(b.unacked)
    if b.unacked_oldest_seconds is not None:
        yield UNACKED_AGE.value(b.unacked_oldest_seconds)
    r = b.redis
    yield REDIS_INFO.value(1, r.version, r.eviction_policy)
    yield REDIS_USED.value(r.used_memory_bytes)
    if r.max_memory_bytes is not None:
        yield REDIS_MAX.value(r.max_memory_bytes)
    yield REDIS_EVICTED.value(r.evicted_keys)
    yield REDIS_REJECTED.value(r.rejected_connections)
    yield REDIS_CLIENTS.value(r.connected_clients)


def _workers_metrics(e: EventsReading) -> Iterable[Metric]:
    yield ONLINE.value(e.online)
    yield RUNNING.value(e.running)
    yield UNNAMED.value(e.unnamed_workers_total)
    online, active, processed, heard = (
        d.family() for d in (WORKER_ONLINE, WORKER_ACTIVE, WORKER_PROCESSED, WORKER_HEARTBEAT)
    )
    for w in e.workers:
        add(online, 1 if w.online else 0, w.hostname)
        if w.active is not None:
            add(active, w.active, w.hostname)
        if w.processed is not None:
            add(processed, w.processed, w.hostname)
        add(heard, w.heard, w.hostname)
    yield from (online, active, processed, heard)


def _events_metrics(e: EventsReading) -> Iterable[Metric]:
    yield EVENTS.value(e.events_total)


def _tasks_metrics(t: TaskFigures) -> Iterable[Metric]:
    tasks = TASKS.family()
    for count in t.counts:
        add(tasks, count.count, count.task, count.outcome)
    yield tasks
    yield _histogram(RUNTIME, t.runtime)
    yield _histogram(QUEUE_WAIT, t.queue_wait)


def _reconcile_metrics(reading: CeleryReading) -> Iterable[Metric]:
    rec = reading.reconcile
    assert rec is not None
    yield DB_ACTIVE.value(rec.active_chunks)
    if rec.stuck is not None:
        yield STUCK.value(rec.stuck)
    if reading.in_flight is not None:
        yield UNACCOUNTED.value(rec.active_chunks - reading.in_flight)


def _histogram(desc: Desc, by_task: Mapping[str, Histogram]) -> Metric:
    family = desc.family()
    for task, h in by_task.items():
        observe(family, h.buckets, h.total, task)
    return family
