"""End to end: the work pipeline's alerts through a real Prometheus and Alertmanager.

The miniature PixCrawler (tests/minicrawler: a real redis-server, real Celery workers, a real
PostgreSQL ``crawl_jobs`` table) is watched by the exporter as a process; Prometheus scrapes it
every second and evaluates the rules rendered from the exporter's own configuration; the alerts
must reach Alertmanager's webhook with their exact labels and annotations.

- A worker SIGKILLed mid-chunk: the database keeps counting the chunk active while no live
  worker holds it, and PixCrawlerChunksUnaccounted fires once that has lasted longer than a
  chunk can take (``rules.chunk_duration_seconds``, 10 s here, its real ``for:``), and resolves
  once the row is reconciled. While the chunk is lost, every query of the dashboard's *Work
  pipeline* row must return data from that Prometheus.
- Redis at ``maxmemory`` with ``allkeys-lru``, filled: PixCrawlerRedisEvictingKeys fires, and
  PixCrawlerRedisMemoryHigh with it.

The seconds from the kill, and from the first eviction, to the firing notification are printed
(``pytest -s``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path

import pytest

from grafana import dashboard as generator
from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import rules
from tests.conftest import Exporter, sample
from tests.helpers.alerting import (
    AlertStack,
    Webhook,
    assert_pages,
    assert_resolves,
    start_alertmanager,
    start_prometheus,
    write_prometheus_config,
)
from tests.helpers.celery_workers import MiniCrawlerFactory
from tests.helpers.dashboard import PIPELINE_ROW, exposed, fill, row_panels, source_metrics
from tests.helpers.processes import stop
from tests.helpers.redis_server import RedisFactory
from tests.helpers.wait import wait_until
from tests.pg import PostgresServer

pytest_plugins = ["tests.helpers.celery_workers"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = "pixcrawler"
CHUNK_SECONDS = 10  # rules.chunk_duration_seconds: the longest a chunk may take here
MIB = 1024 * 1024

StackFactory = Callable[[Mapping[str, str], float], AlertStack]


@pytest.fixture
def alert_stack(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> Iterator[StackFactory]:
    """``alert_stack(env, for_scale)``: an exporter with ``env``, and a Prometheus evaluating the
    rules rendered from that same configuration (every ``for:`` times ``for_scale``) and sending
    to an Alertmanager whose webhook the test reads."""
    webhook = Webhook()
    started: list[subprocess.Popen[bytes]] = []

    def factory(env: Mapping[str, str], for_scale: float) -> AlertStack:
        full = {
            "PIXCRAWLER_TEMP_DIRS": str(tmp_path),
            "PIXCRAWLER_SCRAPE_TIMEOUT_OFFSET_SECONDS": "0.2",
            "PIXCRAWLER_POLL_INTERVAL_SECONDS": "1",
            "PIXCRAWLER_CELERY_REFRESH_INTERVAL_SECONDS": "0.5",
            "PIXCRAWLER_CELERY_TIMEOUT_SECONDS": "1",
            "PIXCRAWLER_CELERY_TASK_EVENTS": "1",
            **env,
        }
        cfg = config.load(full, {}, None, dotenv_path=tmp_path / "absent.env").config
        rules_text = rules.render(cfg, job=JOB, for_scale=for_scale)
        (tmp_path / "rules.yml").write_text(rules_text)
        am = start_alertmanager(tmp_path, webhook.start())
        started.append(am.proc)
        exporter = exporter_factory(env=full)
        instance = exporter.url.removeprefix("http://")
        prom_config = write_prometheus_config(tmp_path, tmp_path / "rules.yml", JOB, [instance], am)
        prom = start_prometheus(tmp_path, prom_config)
        started.append(prom.proc)
        return AlertStack(
            exporter=exporter,
            prometheus=prom.url,
            alertmanager=am.url,
            webhook=webhook,
            rules_text=rules_text,
            logs={"alertmanager": am.log, "prometheus": prom.log},
            job=JOB,
        )

    try:
        yield factory
    finally:
        for proc in reversed(started):
            stop(proc)
        webhook.stop()


def scraped(stack: AlertStack, expr: str, what: str, timeout: float = 15) -> float:
    """The value of ``expr`` once Prometheus has one for this exporter."""
    found = wait_until(what, lambda: stack.query(expr), timeout, stack.detail)
    return float(found[0]["value"][1])


def test_a_worker_killed_mid_chunk_pages_the_database_against_celery(
    alert_stack: StackFactory,
    minicrawler_factory: MiniCrawlerFactory,
    redis_factory: RedisFactory,
    crawl_jobs: PostgresServer,
) -> None:
    # A memory limit only so that the dashboard's maxmemory line has a series; noeviction.
    broker = redis_factory(maxmemory=256 * MIB)
    crawler = minicrawler_factory(redis=broker, database=crawl_jobs)
    workers = [crawler.spawn_worker() for _ in range(2)]  # they start while the stack does
    stack = alert_stack(
        {
            "PIXCRAWLER_CELERY_BROKER_URL": broker.url(),
            "PIXCRAWLER_DB_URL": crawl_jobs.url,
            "PIXCRAWLER_ALERT_CHUNK_DURATION_SECONDS": str(CHUNK_SECONDS),
        },
        1.0,  # the rules' own for: durations, the configured chunk duration among them
    )
    for w in workers:
        w.wait_online()
    online = f'pixcrawler_celery_workers_online{{job="{JOB}"}} == 2'
    scraped(stack, online, "both workers online in Prometheus")

    # Some work done first, so that every panel has figures: chunks that succeed (a job of 3)
    # and one that fails, each sent while the exporter follows the events.
    done_id, _ = crawler.start_job(6, chunk_size=2)
    crawler.send_chunk(1, fail="no images found")
    wait_until(
        "the first job completes", lambda: crawler.read_job(done_id).status == "completed", 30
    )

    # One long chunk, running on a worker that is then killed.
    job_id, (task_id,) = crawler.start_job(100, chunk_size=100, sleep=0.5)
    victim = crawler.worker_running(task_id)
    scraped(
        stack,
        f'pixcrawler_celery_worker_tasks_active{{job="{JOB}", worker="{victim.hostname}"}} == 1',
        "the chunk running in the victim's heartbeat",
    )
    killed = 0.0

    def kill() -> None:
        nonlocal killed
        victim.kill()
        killed = time.monotonic()

    name = "PixCrawlerChunksUnaccounted"
    fired = assert_pages(stack, name, {"severity": "warning"}, "1", kill, timeout=60)
    took = time.monotonic() - killed
    print(f"\n{name}: firing notification {took:.1f}s after the SIGKILL")
    # Offline within two heartbeats (4 s), then the configured duration, never sooner.
    assert CHUNK_SECONDS <= took <= CHUNK_SECONDS + 20, took
    assert not stack.webhook.alerts("PixCrawlerCeleryNoWorkers", "firing")  # one is left
    assert crawler.read_job(job_id).active_chunks == 1

    check_the_pipeline_row(stack)

    def reconcile() -> None:  # seed 003's manual fix: the lost chunk counted failed
        crawl_jobs.execute(
            "UPDATE crawl_jobs SET active_chunks = 0, failed_chunks = 1, status = 'failed' "
            f"WHERE id = {job_id}"
        )

    assert_resolves(stack, name, fired, reconcile)


def check_the_pipeline_row(stack: AlertStack) -> None:
    """Every query of the dashboard's Work pipeline row returns data from this Prometheus."""
    panels = row_panels(generator.dashboard())[PIPELINE_ROW]
    assert panels
    have = exposed(stack.exporter)
    for panel in panels:
        for target in panel["targets"]:
            missing = source_metrics(target["expr"]) - have
            assert not missing, f"{panel['title']}: the exporter does not expose {missing}"
            expr = fill(target["expr"], JOB, stack.instance)
            what = f"{panel['title']}: {expr} returning data"
            wait_until(what, partial(stack.query, expr), 10, stack.detail)


def test_redis_evicting_at_maxmemory_pages(
    alert_stack: StackFactory, redis_factory: RedisFactory
) -> None:
    redis = redis_factory(maxmemory=8 * MIB, maxmemory_policy="allkeys-lru")
    # for: divided by 60: PixCrawlerRedisMemoryHigh's 5m is 5 s.
    stack = alert_stack({"PIXCRAWLER_CELERY_BROKER_URL": redis.url()}, 1 / 60)
    evicted = f'pixcrawler_redis_evicted_keys_total{{job="{JOB}"}}'
    # A count before the evictions: increase() needs the rise, not a first sample already up.
    assert scraped(stack, evicted, "the eviction count in Prometheus") == 0
    first_eviction = 0.0

    def fill() -> None:
        nonlocal first_eviction
        value = b"x" * 16 * 1024
        with redis.client() as client:
            for batch in range(100):  # 16 MiB at most, twice the limit
                pipe = client.pipeline(transaction=False)
                for i in range(64):
                    pipe.set(f"filler:{batch}:{i}", value)
                pipe.execute()
                if int(client.info("stats")["evicted_keys"]) > 0:
                    first_eviction = time.monotonic()
                    return
        raise AssertionError("Redis evicted nothing at twice its maxmemory")

    assert_pages(stack, "PixCrawlerRedisEvictingKeys", {"severity": "critical"}, None, fill)
    took = time.monotonic() - first_eviction
    print(f"\nPixCrawlerRedisEvictingKeys: firing notification {took:.1f}s after an eviction")
    samples = stack.exporter.scrape()
    used = sample(samples, "pixcrawler_redis_memory_used_bytes")
    assert used is not None and used >= 0.9 * 8 * MIB
    policies = {dict(labels).get("eviction_policy") for (n, labels) in samples if "redis_info" in n}
    assert policies == {"allkeys-lru"}
    wait_until(
        "a firing PixCrawlerRedisMemoryHigh notification",
        lambda: stack.webhook.alerts("PixCrawlerRedisMemoryHigh", "firing"),
        30,
        stack.detail,
    )
