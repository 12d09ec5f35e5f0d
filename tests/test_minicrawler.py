"""The miniature PixCrawler the Celery collector is tested against: its parts, really running.

A real redis-server (tests/helpers/redis_server.py), real ``celery worker`` processes running
tests/minicrawler (tests/helpers/celery_workers.py) and a real PostgreSQL ``crawl_jobs`` table
(tests/pg.py). Each test says what the collector's scenarios rely on: queues drain, a SIGKILLed
worker leaves its chunk unacknowledged and counted active, failures and retries are recorded
where the collector reads them.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import redis as redispy

from tests.helpers.celery_workers import (
    UNACKED,
    UNACKED_INDEX,
    MiniCrawler,
    MiniCrawlerFactory,
    result_key,
)
from tests.helpers.redis_server import ODD_PASSWORD, RedisFactory, RedisServer
from tests.helpers.wait import wait_until
from tests.minicrawler.chunk import chunk_dir, fake_jpeg
from tests.minicrawler.jobs import split
from tests.pg import PostgresServer

pytest_plugins = ["tests.helpers.celery_workers"]


@pytest.fixture
def crawler(minicrawler_factory: MiniCrawlerFactory, crawl_jobs: PostgresServer) -> MiniCrawler:
    return minicrawler_factory(database=crawl_jobs)


@pytest.mark.slow
def test_twenty_chunks_drain_through_two_workers(crawler: MiniCrawler) -> None:
    images_per_chunk = 5
    tap = crawler.event_tap()
    job_id, task_ids = crawler.start_job(100, chunk_size=images_per_chunk, sleep=0.02)
    job = crawler.read_job(job_id)
    assert (job.status, job.total_chunks, job.active_chunks) == ("running", 20, 20)
    assert list(job.task_ids) == task_ids
    assert crawler.queue_length() == 20  # nobody consumes yet: the depth is exact

    crawler.start_workers(2)
    depths: list[int] = []
    held: list[int] = []

    def drained() -> bool:
        with crawler.broker.client() as client:
            pipe = client.pipeline(transaction=True)  # one snapshot of both
            pipe.llen("celery")
            pipe.hlen(UNACKED)
            depth, unacked = pipe.execute()
        depths.append(int(depth))
        held.append(int(unacked))
        return crawler.read_job(job_id).status == "completed"

    wait_until("the job completes", drained, 60, crawler.logs)

    assert depths[-1] == 0
    assert all(a >= b for a, b in itertools.pairwise(depths)), depths
    # Prefetch 1 with one process per worker: at most one message each is taken and unacked.
    assert max(held) <= 2, held
    wait_until("the last acknowledgement", lambda: not crawler.unacked(), 5)
    job = crawler.read_job(job_id)
    assert (job.active_chunks, job.completed_chunks, job.failed_chunks) == (0, 20, 0)
    assert {crawler.state(t) for t in task_ids} == {"SUCCESS"}
    assert len(crawler.images()) == 100
    assert chunk_dir(crawler.temp_dir, job_id, 19).joinpath("4.jpg").read_bytes() == fake_jpeg(1024)
    wait_until("every task-succeeded event", lambda: len(tap.events("task-succeeded")) == 20, 5)
    assert {e["uuid"] for e in tap.events("task-sent")} == set(task_ids)
    by_worker = {e["hostname"] for e in tap.events("task-succeeded")}
    assert by_worker == {w.hostname for w in crawler.workers}


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_leaves_its_chunk_unacknowledged(crawler: MiniCrawler) -> None:
    tap = crawler.event_tap()
    workers = crawler.start_workers(2)
    sent = time.time()
    job_id, (task_id,) = crawler.start_job(100, chunk_size=100, sleep=0.1)  # 10 s
    owner = crawler.worker_running(task_id)
    other = next(w for w in workers if w is not owner)
    wait_until("the first image", lambda: crawler.images(), 5)

    owner.kill()
    killed_at = time.monotonic()

    assert not owner.alive and owner.pool_pids() == []
    with crawler.broker.client() as client:
        unacked = client.hgetall(UNACKED)
        index = client.zrange(UNACKED_INDEX, 0, -1, withscores=True)
    assert len(unacked) == 1 and len(index) == 1
    ((tag, raw),) = unacked.items()
    ((index_tag, taken_at),) = index
    assert index_tag == tag
    assert sent <= taken_at <= time.time()
    message, exchange, routing_key = json.loads(raw)
    assert message["headers"]["id"] == task_id
    assert (exchange, routing_key) == ("", "celery")
    assert crawler.queue_length() == 0
    assert crawler.state(task_id) == "STARTED"  # nobody will ever say otherwise
    job = crawler.read_job(job_id)
    assert (job.status, job.active_chunks, job.completed_chunks) == ("running", 1, 0)
    # The survivor keeps its heartbeats (every 2 s); the dead one's stop.
    wait_until(
        "a heartbeat of the survivor after the kill",
        lambda: any(e["_received"] > killed_at + 2 for e in tap.events(hostname=other.hostname)),
        5,
    )
    late = [e for e in tap.events(hostname=owner.hostname) if e["_received"] > killed_at + 0.1]
    assert late == []


@pytest.mark.slow
def test_a_survivor_redelivers_the_chunk_after_the_visibility_timeout(
    minicrawler_factory: MiniCrawlerFactory, crawl_jobs: PostgresServer
) -> None:
    # kombu sweeps for expired messages every interval x throttle seconds (10 x 10 by default).
    options = {
        "visibility_timeout": 3,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    crawler = minicrawler_factory(database=crawl_jobs, transport_options=options)
    crawler.start_workers(2)
    job_id, (task_id,) = crawler.start_job(20, chunk_size=20, sleep=0.1)  # 2 s: under 3 s
    crawler.worker_running(task_id).kill()
    killed_at = time.monotonic()

    def completed() -> bool:
        return crawler.read_job(job_id).status == "completed"

    wait_until("the job completes", completed, 15, crawler.logs)
    assert time.monotonic() - killed_at > 2  # not before the visibility timeout
    job = crawler.read_job(job_id)
    assert (job.active_chunks, job.completed_chunks, job.failed_chunks) == (0, 1, 0)
    result = crawler.result(task_id)
    assert result is not None and result["status"] == "SUCCESS"
    assert crawler.unacked() == {}


@pytest.mark.slow
def test_a_pool_process_killed_mid_chunk_fails_the_chunk_but_not_its_row(
    crawler: MiniCrawler,
) -> None:
    (worker,) = crawler.start_workers(1)
    job_id, (task_id,) = crawler.start_job(100, chunk_size=100, sleep=0.1)
    assert crawler.worker_running(task_id) is worker

    assert len(worker.kill_pool()) == 1

    wait_until("the result", lambda: crawler.state(task_id) == "FAILURE", 10, crawler.logs)
    result = crawler.result(task_id)
    assert result is not None and result["result"]["exc_type"] == "WorkerLostError"
    # Acknowledged (task_reject_on_worker_lost is off), just after the result is stored.
    wait_until("the message acknowledged", lambda: crawler.unacked() == {}, 10, crawler.logs)
    assert worker.alive
    job = crawler.read_job(job_id)  # final in Celery, still active in the database: stuck
    assert (job.status, job.active_chunks, job.failed_chunks) == ("running", 1, 0)


@pytest.mark.slow
def test_failures_and_retries_are_counted(crawler: MiniCrawler) -> None:
    tap = crawler.event_tap()
    crawler.start_workers(2)
    failing, failing_ids = crawler.start_job(4, chunk_size=2, fail="no images found")
    retried, retried_ids = crawler.start_job(4, chunk_size=2, retries=2, countdown=0.1)
    exhausted, exhausted_ids = crawler.start_job(
        2, chunk_size=2, retries=5, max_retries=1, countdown=0.1
    )

    def done() -> bool:
        return all(crawler.read_job(j).active_chunks == 0 for j in (failing, retried, exhausted))

    wait_until("every chunk ends", done, 30, crawler.logs)

    job = crawler.read_job(failing)
    assert (job.status, job.completed_chunks, job.failed_chunks) == ("failed", 0, 2)
    for task_id in failing_ids:
        result = crawler.result(task_id)
        assert result is not None and result["status"] == "FAILURE"
        assert result["result"] == {
            "exc_type": "ChunkFailedError",
            "exc_message": ["no images found"],
            "exc_module": "tests.minicrawler.chunk",
        }
    assert len(list(chunk_dir(crawler.temp_dir, failing, 0).glob("*.jpg"))) == 2  # left behind

    job = crawler.read_job(retried)
    assert (job.status, job.completed_chunks, job.failed_chunks) == ("completed", 2, 0)
    assert {crawler.state(t) for t in retried_ids} == {"SUCCESS"}

    job = crawler.read_job(exhausted)
    assert (job.status, job.completed_chunks, job.failed_chunks) == ("failed", 0, 1)
    result = crawler.result(exhausted_ids[0])
    assert result is not None and result["result"]["exc_type"] == "MaxRetriesExceededError"

    def count(type_: str, ids: list[str]) -> int:
        return sum(1 for e in tap.events(type_) if e["uuid"] in ids)

    wait_until("the last events", lambda: count("task-failed", exhausted_ids) == 1, 5)
    assert count("task-retried", retried_ids) == 2 * 2
    assert count("task-retried", exhausted_ids) == 1
    assert count("task-failed", failing_ids) == 2
    assert count("task-succeeded", retried_ids) == 2
    # Each retry is a new message with the same task id: received and started once per attempt.
    assert count("task-received", retried_ids) == 2 * 3


def test_priorities_go_to_kombus_sub_queues(minicrawler: MiniCrawler) -> None:
    for priority in range(10):
        minicrawler.send_chunk(priority=priority)
    minicrawler.send_chunk()  # no priority
    minicrawler.send_chunk(queue="odd queue")

    lists = {k: t for k, t in minicrawler.broker.keys().items() if t == "list"}
    priorities = {b"celery", b"celery\x06\x163", b"celery\x06\x166", b"celery\x06\x169"}
    assert set(lists) == priorities | {b"odd queue"}
    with minicrawler.broker.client() as client:
        depths = {key: client.llen(key) for key in minicrawler.queue_keys()}
    assert depths == {"celery": 4, "celery\x06\x163": 3, "celery\x06\x166": 3, "celery\x06\x169": 1}
    assert minicrawler.queue_length() == 11
    assert minicrawler.queue_length("odd queue") == 1


@pytest.mark.slow
def test_a_password_with_odd_characters_reaches_broker_and_backend(
    redis_factory: RedisFactory, minicrawler_factory: MiniCrawlerFactory
) -> None:
    server = redis_factory(password=ODD_PASSWORD)
    with pytest.raises(redispy.AuthenticationError):
        redispy.Redis.from_url(server.url(password="wrong"), socket_timeout=2).ping()
    crawler = minicrawler_factory(redis=server)
    crawler.start_workers(1)
    task_id = crawler.send_chunk(3)
    wait_until("the chunk succeeds", lambda: crawler.state(task_id) == "SUCCESS", 20, crawler.logs)
    with server.client() as client:
        assert client.exists(result_key(task_id))


@pytest.mark.slow
def test_a_worker_stopped_gracefully_says_so(minicrawler: MiniCrawler) -> None:
    tap = minicrawler.event_tap()
    (worker,) = minicrawler.start_workers(1)
    tap.wait_for("worker-online", hostname=worker.hostname)
    worker.stop()
    assert worker.proc.returncode == 0
    tap.wait_for("worker-offline", timeout=5, hostname=worker.hostname)


@pytest.mark.slow
def test_workers_come_back_after_the_broker_restarts(minicrawler: MiniCrawler) -> None:
    minicrawler.start_workers(1)
    minicrawler.broker.restart()
    assert minicrawler.broker.keys() == {}  # no persistence: the restarted broker is empty
    task_id = minicrawler.send_chunk()

    def done() -> bool:
        return minicrawler.state(task_id) == "SUCCESS"

    wait_until("a chunk after the restart", done, 20, minicrawler.logs)


def test_redis_server_controls(redis_factory: RedisFactory) -> None:
    server = redis_factory(maxmemory=2_000_000, maxmemory_policy="allkeys-lru")
    with server.client() as client:
        assert client.config_get("maxmemory")["maxmemory"] == "2000000"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        for n in range(100):
            client.set(f"filler-{n}", b"x" * 50_000)
        assert int(client.info("stats")["evicted_keys"]) > 0
    assert server.started_in is not None and server.started_in < 5

    hung = redispy.Redis.from_url(server.url(), socket_timeout=0.3)
    with server.frozen(), pytest.raises(redispy.TimeoutError):
        hung.ping()
    assert hung.ping()

    port = server.port
    server.stop()
    assert not server.running
    with pytest.raises(redispy.ConnectionError):
        redispy.Redis.from_url(server.url(), socket_connect_timeout=1).ping()
    server.start()
    assert server.port == port and hung.ping()


def check_clean_then_dirty(broker: RedisServer) -> None:
    broker.thaw()
    with broker.client() as client:
        assert client.dbsize() == 0
        assert client.config_get("maxmemory")["maxmemory"] == "0"
        client.set("left", "behind")
        client.config_set("maxmemory", 1_000_000)
    broker.freeze()


def test_the_broker_fixture_is_empty_unlimited_and_running(broker: RedisServer) -> None:
    check_clean_then_dirty(broker)


def test_the_broker_fixture_undoes_what_the_last_test_did(broker: RedisServer) -> None:
    check_clean_then_dirty(broker)
    broker.stop()


def test_the_broker_fixture_starts_a_stopped_server(broker: RedisServer) -> None:
    check_clean_then_dirty(broker)


def test_chunks_split_as_the_orchestrator_does() -> None:
    assert split(2000, 500) == [500] * 4
    assert split(2001, 500) == [500] * 4 + [1]
    assert split(0, 500) == []
    with pytest.raises(ValueError, match="chunk_size"):
        split(10, 0)


def test_fake_jpeg_is_the_size_asked() -> None:
    for size in (26, 27, 100, 1024, 65563, 65564, 65567, 500_000):
        body = fake_jpeg(size)
        assert len(body) == size and body.startswith(b"\xff\xd8") and body.endswith(b"\xff\xd9")
