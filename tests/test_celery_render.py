"""The celery collector's scrape side without a broker: what it learnt is put in by hand (the
listener's own entry points, a recorded broker round trip) and the clock is the test's.

Families of what did not change are served again as they were, so that a scrape reads a cache;
these tests hold that the kept families never outlive what the reading says: a part older than
``celery.max_age`` still goes on time, a worker still goes offline at its deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric

from pixcrawler_exporter.collectors.celery import collector as collector_module
from pixcrawler_exporter.collectors.celery import reading as reading_module
from pixcrawler_exporter.collectors.celery.collector import CeleryCollector
from pixcrawler_exporter.collectors.celery.reading import BrokerReading, Moment, RedisInfo
from pixcrawler_exporter.collectors.celery.settings import CelerySettings

MAX_AGE = 15.0
WALL = 1_700_000_000.0  # the wall clock, this far ahead of the monotonic one


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return WALL + self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1000.0)
    for module in (collector_module, reading_module):
        monkeypatch.setattr(module, "time", clock)
    return clock


@pytest.fixture
def collector(clock: Clock) -> Iterator[CeleryCollector]:
    # Never started: nothing connects to this address.
    cfg = CelerySettings(
        broker_url="redis://127.0.0.1:9/0", task_events=True, max_age_seconds=MAX_AGE
    )
    made = CeleryCollector(cfg)
    made._first.set()  # as after a first round trip: a scrape waits for none
    yield made
    made.close()


def broker_reading(learnt: float, depth: int = 3) -> BrokerReading:
    redis = RedisInfo("7.0.15", 1_000_000, None, "noeviction", 0, 0, 4)
    return BrokerReading({"celery": depth}, 1, 2.5, redis, Moment(learnt, WALL + learnt))


def scrape(collector: CeleryCollector) -> dict[str, Metric]:
    taken = collector.take(1e9)  # the first round trip is over: no wait
    return {f.name: f for f in taken.render()}


def value(families: dict[str, Metric], name: str, **labels: str) -> float | None:
    family = families.get(name.removesuffix("_total"))
    found = [
        s.value
        for s in (family.samples if family else [])
        if s.name == name and labels.items() <= s.labels.items()
    ]
    return found[0] if found else None


def heartbeat(collector: CeleryCollector, hostname: str, active: int = 0) -> None:
    collector._listener._receive(
        {"type": "worker-heartbeat", "hostname": hostname, "freq": 2.0, "active": active}, None
    )


def one_busy_worker(collector: CeleryCollector, clock: Clock) -> float:
    """The broker read, the stream followed and a heartbeat of a worker running a task: when."""
    collector._record("broker", broker_reading(clock.now), None)
    collector._listener._up()
    heartbeat(collector, "w1@host", active=1)
    return clock.now


def task(collector: CeleryCollector, uuid: str, *kinds: str) -> None:
    for kind in kinds:
        collector._listener._receive(
            {"type": kind, "uuid": uuid, "name": "chunk", "timestamp": 5.0, "runtime": 0.2}, None
        )


def test_unchanged_parts_are_served_as_they_were_with_their_moments(
    collector: CeleryCollector, clock: Clock
) -> None:
    collector._record("broker", broker_reading(clock.now), None)
    collector._listener._up()
    heartbeat(collector, "w1@host")
    task(collector, "a", "task-sent", "task-started", "task-succeeded")
    first = scrape(collector)
    beat = clock.now
    clock.now += 1.0
    second = scrape(collector)
    for kept in (
        "pixcrawler_celery_queue_messages",
        "pixcrawler_redis_up",
        "pixcrawler_celery_worker_online",
        "pixcrawler_celery_worker_last_heartbeat_timestamp_seconds",
        "pixcrawler_celery_last_success_timestamp_seconds",
        "pixcrawler_celery_tasks",
        "pixcrawler_celery_task_runtime_seconds",
        "pixcrawler_celery_events_received",  # no event in between
    ):
        assert second[kept] is first[kept], kept
    heard = "pixcrawler_celery_worker_last_heartbeat_timestamp_seconds"
    assert value(second, heard, worker="w1@host") == WALL + beat
    learnt = "pixcrawler_celery_last_success_timestamp_seconds"
    assert value(second, learnt, part="broker") == WALL + beat
    assert value(second, learnt, part="events") == WALL + beat
    # Something new: made again, and says so.
    task(collector, "b", "task-sent", "task-started", "task-failed")
    heartbeat(collector, "w1@host", active=1)
    third = scrape(collector)
    assert third["pixcrawler_celery_tasks"] is not second["pixcrawler_celery_tasks"]
    assert value(third, "pixcrawler_celery_tasks_total", outcome="failed") == 1
    assert value(third, "pixcrawler_celery_worker_tasks_active", worker="w1@host") == 1
    assert value(third, "pixcrawler_celery_events_received_total") == 8


def test_a_part_older_than_its_maximum_age_goes_on_time(
    collector: CeleryCollector, clock: Clock
) -> None:
    learnt = clock.now
    collector._record("broker", broker_reading(learnt), None)
    for _ in range(3):  # kept
        assert value(scrape(collector), "pixcrawler_celery_queue_messages", queue="celery") == 3
    clock.now = learnt + MAX_AGE
    assert value(scrape(collector), "pixcrawler_celery_queue_messages", queue="celery") == 3
    clock.now = learnt + MAX_AGE + 0.01
    late = scrape(collector)
    assert "pixcrawler_celery_queue_messages" not in late
    assert value(late, "pixcrawler_redis_up") == 0
    # The next round trip brings it back, with what it says now.
    collector._record("broker", broker_reading(clock.now, depth=5), None)
    again = scrape(collector)
    assert value(again, "pixcrawler_redis_up") == 1
    assert value(again, "pixcrawler_celery_queue_messages", queue="celery") == 5


def test_a_worker_goes_offline_at_its_deadline_however_often_it_was_scraped(
    collector: CeleryCollector, clock: Clock
) -> None:
    beat = one_busy_worker(collector, clock)
    for step in range(1, 14):
        clock.now = beat + 0.3 * step  # up to 3.9 s after
        collector._record("broker", broker_reading(clock.now), None)  # the broker stays fresh
        families = scrape(collector)
        assert value(families, "pixcrawler_celery_worker_online", worker="w1@host") == 1
    clock.now = beat + 4.0  # two heartbeat intervals: Celery's rule
    families = scrape(collector)
    assert value(families, "pixcrawler_celery_worker_online", worker="w1@host") == 0
    assert value(families, "pixcrawler_celery_workers_online") == 0
    assert value(families, "pixcrawler_celery_tasks_running") == 0


def test_a_scrape_with_nothing_new_takes_the_last_reading_until_the_clock_changes_it(
    collector: CeleryCollector, clock: Clock
) -> None:
    beat = one_busy_worker(collector, clock)
    first = collector.take(1e9)
    kept = tuple(first.render())
    clock.now = beat + 3.9
    second = collector.take(1e9)
    assert second.reading is first.reading
    assert all(a is b for a, b in zip(second.render(), kept, strict=True))
    # Nothing new but time: the worker's two heartbeat intervals are up, so it is made again.
    clock.now = beat + 4.0
    third = collector.take(1e9)
    assert third.reading is not first.reading
    families = {f.name: f for f in third.render()}
    assert value(families, "pixcrawler_celery_worker_online", worker="w1@host") == 0
    # A heartbeat is new: made again, with its moment.
    heartbeat(collector, "w1@host", active=2)
    families = scrape(collector)
    assert value(families, "pixcrawler_celery_worker_tasks_active", worker="w1@host") == 2
    heard = "pixcrawler_celery_worker_last_heartbeat_timestamp_seconds"
    assert value(families, heard, worker="w1@host") == WALL + beat + 4.0
