"""The celery collector against a miniature PixCrawler: a real redis-server, real Celery workers
running a chunk task that writes images and updates a real PostgreSQL ``crawl_jobs`` table, and
the exporter as a process, scraped over HTTP.

The alert scenarios (a worker killed mid-chunk through Prometheus and Alertmanager, evictions)
are in test_e2e_pipeline.py; the pure parts in test_celery_books.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Exporter, Samples, need_tool, parse_samples, run_cli, sample
from tests.helpers.celery_workers import MiniCrawler, MiniCrawlerFactory
from tests.helpers.redis_server import ODD_PASSWORD, RedisFactory, RedisServer
from tests.helpers.wait import wait_until
from tests.pg import PostgresServer

pytest_plugins = ["tests.helpers.celery_workers"]

HEARTBEAT = 2.0  # the workers' heartbeat interval, Celery's default
REFRESH = 0.5


def exporter_env(
    broker_url: str, tmp_path: Path, database: PostgresServer | None = None, **more: str
) -> dict[str, str]:
    env = {
        "PIXCRAWLER_CELERY_BROKER_URL": broker_url,
        "PIXCRAWLER_CELERY_REFRESH_INTERVAL_SECONDS": str(REFRESH),
        "PIXCRAWLER_CELERY_TIMEOUT_SECONDS": "1",
        "PIXCRAWLER_TEMP_DIRS": str(tmp_path),
        **more,
    }
    if database is not None:
        env["PIXCRAWLER_DB_URL"] = database.url
    return env


def settled(
    exp: Exporter, check: Callable[[Samples], object], what: str, timeout: float
) -> Samples:
    """The first scrape for which ``check`` holds."""
    found: list[Samples] = []

    def scrape() -> bool:
        found[:] = [exp.scrape()]
        return bool(check(found[0]))

    wait_until(what, scrape, timeout, lambda: _celery_lines(found[0]) if found else "")
    return found[0]


def _celery_lines(samples: Samples) -> str:
    return "\n".join(
        f"{name}{dict(labels)} {value}"
        for (name, labels), value in sorted(samples.items())
        if "celery" in name or "redis" in name
    )


def exactly(depth: int, unacked: int) -> Callable[[Samples], bool]:
    def check(s: Samples) -> bool:
        found = (
            sample(s, "pixcrawler_celery_queue_messages", queue="celery"),
            sample(s, "pixcrawler_celery_unacked_messages"),
        )
        return found == (depth, unacked)

    return check


def health(exp: Exporter) -> tuple[int, dict[str, object]]:
    status, _, body = exp.get("/health")
    return status, json.loads(body)


def test_200_chunks_for_two_workers_the_queue_depth_is_exact_and_drains(
    exporter_factory: Callable[..., Exporter],
    minicrawler_factory: MiniCrawlerFactory,
    crawl_jobs: PostgresServer,
    tmp_path: Path,
) -> None:
    crawler = minicrawler_factory(database=crawl_jobs)
    exp = exporter_factory(env=exporter_env(crawler.broker.url(), tmp_path, crawl_jobs))
    job_id, task_ids = crawler.start_job(400, chunk_size=2, sleep=0.05)
    assert len(task_ids) == 200
    settled(
        exp,
        lambda s: sample(s, "pixcrawler_celery_queue_messages", queue="celery") == 200,
        "all 200 chunks counted as waiting",
        10,
    )
    workers = crawler.start_workers(2)
    steps = 0
    while crawler.queue_length() > 20:
        time.sleep(1.5)
        # Held still, the broker's figures can be compared exactly with what Redis holds.
        for w in workers:
            w.freeze()
        try:
            expected = crawler.queue_length()
            unacked = len(crawler.unacked())
            s = settled(
                exp,
                exactly(expected, unacked),
                f"the depth {expected} and {unacked} unacknowledged exactly",
                5 * REFRESH + 2,
            )
            steps += 1
            # Each frozen worker holds at most its one chunk (prefetch 1, acks late); one caught
            # between two chunks holds none.
            assert unacked <= 2
            age = sample(s, "pixcrawler_celery_unacked_oldest_age_seconds")
            assert (age is not None) == (unacked > 0)
        finally:
            for w in workers:
                w.thaw()
    assert steps >= 2
    s = settled(
        exp,
        lambda s: (
            sample(s, "pixcrawler_celery_queue_messages", queue="celery") == 0
            and sample(s, "pixcrawler_celery_unacked_messages") == 0
        ),
        "the queue drained",
        120,
    )
    assert sample(s, "pixcrawler_celery_unacked_oldest_age_seconds") is None
    wait_until("the job completed", lambda: crawler.read_job(job_id).status == "completed", 30)
    # The heartbeats' running counts lag the database by up to an interval: both settle at 0.
    s = settled(
        exp,
        lambda s: (
            (
                sample(s, "pixcrawler_celery_reconcile_active_chunks"),
                sample(s, "pixcrawler_celery_chunks_unaccounted"),
                sample(s, "pixcrawler_celery_chunks_stuck"),
            )
            == (0, 0, 0)
        ),
        "the database and Celery agreeing on 0",
        2 * HEARTBEAT + 5,
    )
    assert sample(s, "pixcrawler_celery_workers_online") == 2


def test_a_worker_killed_mid_chunk_goes_offline_and_its_chunk_unaccounted(
    exporter_factory: Callable[..., Exporter],
    minicrawler_factory: MiniCrawlerFactory,
    crawl_jobs: PostgresServer,
    tmp_path: Path,
) -> None:
    crawler = minicrawler_factory(database=crawl_jobs)
    exp = exporter_factory(env=exporter_env(crawler.broker.url(), tmp_path, crawl_jobs))
    crawler.start_workers(2)
    settled(exp, lambda s: sample(s, "pixcrawler_celery_workers_online") == 2, "both online", 10)
    # One long chunk: it is running when its worker dies.
    job_id, (task_id,) = crawler.start_job(1, chunk_size=1, sleep=120)
    victim = crawler.worker_running(task_id)
    s = settled(
        exp,
        lambda s: sample(s, "pixcrawler_celery_worker_tasks_active", worker=victim.hostname) == 1,
        "the chunk running",
        10,
    )
    assert sample(s, "pixcrawler_celery_chunks_unaccounted") == 0
    victim.kill()
    killed = time.monotonic()
    s = settled(
        exp,
        lambda s: sample(s, "pixcrawler_celery_workers_online") == 1,
        "the killed worker offline",
        3 * HEARTBEAT + 2,
    )
    noticed = time.monotonic() - killed
    assert noticed <= 3 * HEARTBEAT, f"noticed after {noticed:.1f}s"
    assert sample(s, "pixcrawler_celery_worker_online", worker=victim.hostname) == 0
    # Its message stays taken and unacknowledged, older each scrape; the database still counts
    # the chunk active while no live worker will run it.
    s = settled(
        exp,
        lambda s: sample(s, "pixcrawler_celery_chunks_unaccounted") == 1,
        "the chunk counted by the database and held by no live worker",
        5,
    )
    assert sample(s, "pixcrawler_celery_unacked_messages") == 1
    age = sample(s, "pixcrawler_celery_unacked_oldest_age_seconds")
    assert age is not None and age >= noticed
    assert sample(s, "pixcrawler_celery_reconcile_active_chunks") == 1
    assert crawler.read_job(job_id).active_chunks == 1
    later = settled(
        exp,
        lambda t: (sample(t, "pixcrawler_celery_unacked_oldest_age_seconds") or 0) >= age + 1,
        "the unacknowledged message ageing",
        5,
    )
    assert sample(later, "pixcrawler_celery_unacked_messages") == 1


def test_a_pool_child_killed_leaves_the_chunk_stuck_in_the_database(
    exporter_factory: Callable[..., Exporter],
    minicrawler_factory: MiniCrawlerFactory,
    crawl_jobs: PostgresServer,
    tmp_path: Path,
) -> None:
    # Seed 003's "chunks stuck in active": the task ended (FAILURE, WorkerLostError) without the
    # completion callback, so only the result backend knows.
    crawler = minicrawler_factory(database=crawl_jobs)
    exp = exporter_factory(env=exporter_env(crawler.broker.url(), tmp_path, crawl_jobs))
    crawler.start_workers(1)
    job_id, (task_id,) = crawler.start_job(1, chunk_size=1, sleep=120)
    crawler.worker_running(task_id).kill_pool()
    wait_until("the chunk FAILURE", lambda: crawler.state(task_id) == "FAILURE", 30)
    # The worker's heartbeat may still count the chunk running for up to an interval.
    settled(
        exp,
        lambda s: (
            (
                sample(s, "pixcrawler_celery_chunks_stuck"),
                sample(s, "pixcrawler_celery_chunks_unaccounted"),
            )
            == (1, 1)
        ),
        "the chunk counted stuck and held by no worker",
        2 * HEARTBEAT + 8,
    )
    assert crawler.read_job(job_id).active_chunks == 1
    pipeline = json.loads(exp.get("/status")[2])["pipeline"]
    assert (pipeline["chunks_stuck"], pipeline["chunks_unaccounted"]) == (1, 1)


def test_tasks_that_raise_and_retry_are_counted_exactly(
    exporter_factory: Callable[..., Exporter], minicrawler: MiniCrawler, tmp_path: Path
) -> None:
    env = exporter_env(minicrawler.broker.url(), tmp_path, PIXCRAWLER_CELERY_TASK_EVENTS="1")
    exp = exporter_factory(env=env)
    minicrawler.start_workers(2, concurrency=2)
    settled(exp, lambda s: sample(s, "pixcrawler_celery_workers_online") == 2, "online", 10)
    ids = [minicrawler.send_chunk(1, fail="broken source") for _ in range(5)]
    ids += [minicrawler.send_chunk(1, retries=2, countdown=0.1) for _ in range(4)]
    ids += [minicrawler.send_chunk(1, retries=4, max_retries=2, countdown=0.1) for _ in range(3)]
    ids += [minicrawler.send_chunk(1) for _ in range(6)]
    finished = {"SUCCESS", "FAILURE"}
    wait_until("every task ended", lambda: all(minicrawler.state(i) in finished for i in ids), 60)
    name = "minicrawler.download_chunk"
    expected = {"succeeded": 4 + 6, "failed": 5 + 3, "retried": 4 * 2 + 3 * 2}

    def counts(s: Samples) -> dict[str, float | None]:
        return {
            o: sample(s, "pixcrawler_celery_tasks_total", task=name, outcome=o) for o in expected
        }

    s = settled(exp, lambda s: counts(s) == expected, f"the counts {expected}", 15)
    # Each succeeded or failed run is one run-time observation; each start after a sent event
    # one queue-wait observation (retries are sent again, by the worker).
    runs = sample(s, "pixcrawler_celery_task_runtime_seconds_count", task=name)
    assert runs == expected["succeeded"] + expected["failed"]
    waits = sample(s, "pixcrawler_celery_task_queue_wait_seconds_count", task=name)
    assert waits is not None and waits >= len(ids)


def test_the_broker_stopped_then_restarted(
    exporter_factory: Callable[..., Exporter], minicrawler: MiniCrawler, tmp_path: Path
) -> None:
    exp = exporter_factory(env=exporter_env(minicrawler.broker.url(), tmp_path))
    minicrawler.start_workers(1)
    settled(exp, lambda s: sample(s, "pixcrawler_celery_workers_online") == 1, "online", 10)
    minicrawler.broker.stop()
    # Within the scrape's own deadline: the answer comes, the collector says it failed, the
    # worker figures are absent (nothing can be said of them), the other collectors export.
    started = time.monotonic()
    s = settled(exp, lambda s: sample(s, "pixcrawler_redis_up") == 0, "redis down", 3)
    assert time.monotonic() - started < 3
    assert sample(s, "pixcrawler_exporter_collector_success", collector="celery") == 0
    assert sample(s, "pixcrawler_celery_workers_online") is None
    assert sample(s, "pixcrawler_celery_queue_messages", queue="celery") is None
    assert sample(s, "pixcrawler_exporter_collector_success", collector="memory") == 1
    status, doc = health(exp)
    assert status == 503
    services = doc["services"]
    assert isinstance(services, dict)
    assert services["redis"]["healthy"] is False
    assert "reading the broker" in services["redis"]["detail"]
    minicrawler.broker.start()
    minicrawler.start_workers(1)  # the old one may have given up its connection
    s = settled(
        exp,
        lambda s: (
            sample(s, "pixcrawler_redis_up") == 1
            and sample(s, "pixcrawler_celery_events_up") == 1
            and (sample(s, "pixcrawler_celery_workers_online") or 0) >= 1
        ),
        "recovered without a restart",
        75,  # the listener's back-off doubles up to a minute
    )
    status, doc = health(exp)
    assert status == 200, doc
    log = exp.log()
    assert "celery broker not readable" in log and "celery broker readable again" in log


def test_a_frozen_broker_fails_the_collector_within_the_scrape_deadline(
    exporter_factory: Callable[..., Exporter], minicrawler: MiniCrawler, tmp_path: Path
) -> None:
    exp = exporter_factory(env=exporter_env(minicrawler.broker.url(), tmp_path))
    settled(exp, lambda s: sample(s, "pixcrawler_redis_up") == 1, "redis up", 10)
    with minicrawler.broker.frozen():
        started = time.monotonic()
        for _ in range(5):
            status = exp.get("/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "2"})[0]
            assert status == 200
            assert time.monotonic() - started < 2 * 5
        s = settled(exp, lambda s: sample(s, "pixcrawler_redis_up") == 0, "redis read as down", 5)
        assert sample(s, "pixcrawler_celery_workers_online") is None
    settled(exp, lambda s: sample(s, "pixcrawler_redis_up") == 1, "redis back", 10)


def test_a_refused_password_is_never_shown_whatever_its_characters(
    exporter_factory: Callable[..., Exporter], redis_factory: RedisFactory, tmp_path: Path
) -> None:
    server: RedisServer = redis_factory(password=ODD_PASSWORD)
    wrong = ODD_PASSWORD[::-1] + "x"
    exp = exporter_factory(env=exporter_env(server.url(password=wrong), tmp_path))
    s = settled(exp, lambda s: sample(s, "pixcrawler_redis_up") == 0, "redis refusing", 10)
    assert sample(s, "pixcrawler_exporter_collector_success", collector="celery") == 0
    status, doc = health(exp)
    detail = json.dumps(doc)
    assert (status == 503 and "WRONGPASS" in detail) or "AuthenticationError" in detail, detail
    shown = [exp.log(), detail, exp.get("/")[2].decode(), exp.get("/status")[2].decode()]
    shown.append(exp.get("/metrics")[2].decode())
    for text in shown:
        for secret in (wrong, quote(wrong, safe=""), json.dumps(wrong)[1:-1]):
            assert secret not in text
    # The right password, from a file, works.
    (tmp_path / "pw").write_text(ODD_PASSWORD + "\n")
    bare = f"redis://127.0.0.1:{server.port}/0"
    env = exporter_env(bare, tmp_path, PIXCRAWLER_CELERY_PASSWORD_FILE=str(tmp_path / "pw"))
    good = exporter_factory(env=env)
    settled(good, lambda s: sample(s, "pixcrawler_redis_up") == 1, "redis up", 10)


def test_a_broker_url_that_cannot_work_exits_2_at_start(tmp_path: Path) -> None:
    run = run_cli(tmp_path, env={"PIXCRAWLER_CELERY_BROKER_URL": "redis://:s3cret@redis:63x9/0"})
    assert run.returncode == 2
    assert "PIXCRAWLER_CELERY_BROKER_URL" in run.stderr and "port" in run.stderr
    assert "s3cret" not in run.stderr and "Traceback" not in run.stderr


def test_odd_bytes_in_queue_and_task_names_keep_the_exposition_valid(
    exporter_factory: Callable[..., Exporter], minicrawler: MiniCrawler, tmp_path: Path
) -> None:
    odd_queue = 'chunks "eu"\\\nπ'
    odd_task = 'builder.download "gö"\\\nnext'
    env = exporter_env(
        minicrawler.broker.url(),
        tmp_path,
        PIXCRAWLER_CELERY_TASK_EVENTS="1",
        PIXCRAWLER_CELERY_QUEUES=f"celery,{odd_queue}",
    )
    exp = exporter_factory(env=env)
    minicrawler.send_chunk(1, queue=odd_queue)
    minicrawler.start_workers(1)
    # A task sent by a name no worker knows: rejected by the worker, named by its sent event.
    minicrawler.app.send_task(odd_task)
    s = settled(
        exp,
        lambda s: (
            sample(s, "pixcrawler_celery_queue_messages", queue=odd_queue) == 1
            and (sample(s, "pixcrawler_celery_events_received_total") or 0) > 0
        ),
        "the odd queue counted",
        10,
    )
    _, _, body = exp.get("/metrics")
    text = body.decode()
    assert parse_samples(text) == parse_samples(text)  # client_python's parser reads it back
    promtool = need_tool("promtool")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    problems = [line for line in check.stderr.decode().splitlines() if "celery" in line]
    assert check.returncode in (0, 1) and problems == [], check.stderr.decode()
    assert sample(s, "pixcrawler_celery_queue_messages", queue=odd_queue) == 1


def test_ten_thousand_worker_names_keep_the_series_capped(
    exporter_factory: Callable[..., Exporter], broker: RedisServer, tmp_path: Path
) -> None:
    env = exporter_env(broker.url(), tmp_path, PIXCRAWLER_CELERY_MAX_WORKERS="50")
    exp = exporter_factory(env=env)
    settled(exp, lambda s: sample(s, "pixcrawler_celery_events_up") == 1, "listening", 10)
    publish_heartbeats(broker, [f"pod-{i:05d}@crawler" for i in range(10_000)])
    s = settled(
        exp,
        lambda s: sample(s, "pixcrawler_celery_workers_unnamed_total") == 10_000 - 50,
        "every name heard",
        30,
    )
    named = [k for k in s if k[0] == "pixcrawler_celery_worker_online"]
    assert len(named) == 50
    # The named ones and ten times the cap more are counted online; beyond, only the counter.
    assert sample(s, "pixcrawler_celery_workers_online") == 50 + 500
    started = time.monotonic()
    exp.scrape()
    assert time.monotonic() - started < 1


def publish_heartbeats(server: RedisServer, hostnames: list[str]) -> None:
    """Worker heartbeats as Celery's event dispatcher publishes them on Redis (kombu's fanout
    exchange ``celeryev``), sent here without 10,000 workers."""
    from kombu.connection import Connection
    from kombu.entity import Exchange
    from kombu.messaging import Producer

    with Connection(server.url()) as conn:
        producer = Producer(conn.default_channel, exchange=Exchange("celeryev", type="fanout"))
        for hostname in hostnames:
            producer.publish(
                heartbeat(hostname),
                routing_key="worker.heartbeat",
                serializer="json",
                retry=True,
            )


def heartbeat(hostname: str) -> Mapping[str, object]:
    return {
        "type": "worker-heartbeat",
        "hostname": hostname,
        "timestamp": time.time(),
        "utcoffset": 0,
        "pid": 1,
        "clock": 1,
        "freq": 60.0,  # online for two minutes: publishing 10,000 takes a while
        "active": 1,
        "processed": 0,
    }


@pytest.mark.parametrize("task_events", ["0", "1"])
def test_without_task_events_only_worker_events_are_read(
    exporter_factory: Callable[..., Exporter],
    minicrawler: MiniCrawler,
    tmp_path: Path,
    task_events: str,
) -> None:
    env = exporter_env(
        minicrawler.broker.url(), tmp_path, PIXCRAWLER_CELERY_TASK_EVENTS=task_events
    )
    exp = exporter_factory(env=env)
    minicrawler.start_workers(1)
    ids = [minicrawler.send_chunk(1) for _ in range(20)]
    wait_until("done", lambda: all(minicrawler.state(i) == "SUCCESS" for i in ids), 30)
    time.sleep(HEARTBEAT)
    s = exp.scrape()
    total = sample(
        s, "pixcrawler_celery_tasks_total", task="minicrawler.download_chunk", outcome="succeeded"
    )
    if task_events == "1":
        assert total == 20
    else:
        # The listener binds worker.* only: the task events never reach it.
        assert total is None
        events = sample(s, "pixcrawler_celery_events_received_total")
        assert events is not None and events < 20
