"""What the miniature PixCrawler does on the wire: timings and the exact Redis keys and records.

Starts the tests' parts (tests/helpers/redis_server.py, tests/helpers/celery_workers.py,
tests/pg.py) and prints what the Celery collector's author needs to know about them:

- redis-server start time (spawn to first PONG) and Celery worker start time (spawn to "ready"
  in its log, and to its worker-online event), median of ``--runs``;
- one chunk of 500 images at the task's defaults (no sleep, 1 KiB images, crawl_jobs updated),
  from ``apply_async`` to SUCCESS in the result backend;
- the heartbeat interval observed over ``--seconds`` seconds;
- the key of each priority 0-9 on the ``celery`` queue;
- every key (name, type, TTL, content) left in Redis after a worker is SIGKILLed mid-chunk;
- the result backend's JSON for STARTED, SUCCESS, FAILURE, RETRY, REVOKED and WorkerLostError;
- the pub/sub channels events are published on.

    PYTHONPATH=. python bench/minicrawler_facts.py [--runs 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.celery_workers import MiniCrawler  # noqa: E402
from tests.helpers.redis_server import RedisServer, find_binary  # noqa: E402
from tests.pg import CRAWL_JOBS_TABLE, PostgresServer, find_binaries  # noqa: E402


def wait(check: Callable[[], bool], timeout: float = 30.0) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError("condition not met")
        time.sleep(0.002)
    return time.monotonic() - began


def describe(server: RedisServer) -> list[str]:
    lines = []
    with server.client() as client:
        for key, kind in sorted(server.keys().items()):
            content: Any
            if kind == "hash":
                content = {
                    k.decode(): v.decode()[:120] + "..." for k, v in client.hgetall(key).items()
                }
            elif kind == "zset":
                content = client.zrange(key, 0, -1, withscores=True)
            elif kind == "set":
                content = sorted(client.smembers(key))
            elif kind == "list":
                content = f"{client.llen(key)} items"
            else:
                content = (client.get(key) or b"")[:100]
            lines.append(f"  {key!r:70} {kind:6} ttl={client.ttl(key)} {content}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    binary, bindir = find_binary(), find_binaries()
    assert binary is not None and bindir is not None, "needs redis-server and PostgreSQL"
    pg = PostgresServer(bindir)
    server = RedisServer(binary)
    root = Path(tempfile.mkdtemp(prefix="minicrawler-facts-"))
    crawlers: list[MiniCrawler] = []
    try:
        starts = []
        for _ in range(args.runs):
            server.stop()
            server.start()
            assert server.started_in is not None
            starts.append(server.started_in)
        print(
            f"redis-server start to PONG: median {statistics.median(starts) * 1000:.0f} ms "
            f"(min {min(starts) * 1000:.0f}, max {max(starts) * 1000:.0f}, {args.runs} runs)"
        )

        pg.init()
        pg.execute(CRAWL_JOBS_TABLE)
        ready, online = [], []
        for run in range(args.runs):
            server.reset()
            crawler = MiniCrawler(server, root / f"run{run}", database=pg)
            crawlers.append(crawler)
            tap = crawler.event_tap()
            (worker,) = crawler.start_workers(1)
            event = tap.wait_for("worker-online", hostname=worker.hostname)
            assert worker.online_in is not None
            ready.append(worker.online_in)
            online.append(event["_received"] - worker.started)
            if run < args.runs - 1:
                crawler.close()
        print(
            f"worker spawn to 'ready' in its log: median {statistics.median(ready):.2f} s "
            f"(min {min(ready):.2f}, max {max(ready):.2f}); to its worker-online event: "
            f"median {statistics.median(online):.2f} s"
        )

        listener = server.client()  # lives as long as its pubsub: it owns the connection pool
        pubsub = listener.pubsub()  # type: ignore[no-untyped-call]
        pubsub.psubscribe("*")
        chunk_times = []
        for _ in range(args.runs):
            began = time.monotonic()
            job_id, (task_id,) = crawler.start_job(500)
            wait(lambda: crawler.state(task_id) == "SUCCESS")  # noqa: B023 - called at once
            chunk_times.append(time.monotonic() - began)
        job = crawler.read_job(job_id)
        print(
            f"one 500-image chunk (defaults, row updated), apply_async to SUCCESS: median "
            f"{statistics.median(chunk_times):.3f} s (min {min(chunk_times):.3f}); "
            f"row: {job.status} {job.completed_chunks}/{job.total_chunks}"
        )

        time.sleep(args.seconds)
        beats = [e["_received"] for e in tap.events("worker-heartbeat")]
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        print(
            f"heartbeat interval over {args.seconds:.0f} s: mean {statistics.mean(gaps):.3f} s "
            f"(min {min(gaps):.3f}, max {max(gaps):.3f}, {len(gaps)} gaps); fields: "
            f"{sorted(k for k in tap.events('worker-heartbeat')[-1] if k != '_received')}"
        )

        print("results (GET celery-task-meta-<task id>, JSON):")
        task_id = crawler.send_chunk(20, sleep=0.05)
        wait(lambda: crawler.state(task_id) == "STARTED")
        print("  STARTED", json.dumps(crawler.result(task_id)))
        wait(lambda: crawler.state(task_id) == "SUCCESS")
        print("  SUCCESS", json.dumps(crawler.result(task_id)))
        task_id = crawler.send_chunk(1, fail="no images found")
        wait(lambda: crawler.state(task_id) == "FAILURE")
        print("  FAILURE", json.dumps(crawler.result(task_id))[:400], "...")
        task_id = crawler.send_chunk(1, retries=1, countdown=2)
        wait(lambda: crawler.state(task_id) == "RETRY")
        print("  RETRY", json.dumps(crawler.result(task_id))[:300], "...")
        time.sleep(0.5)
        print(
            f"  while a retry waits its countdown: queue {crawler.queue_length()}, "
            f"unacked {len(crawler.unacked())} (the worker holds the ETA message)"
        )
        wait(lambda: crawler.state(task_id) == "SUCCESS")
        blocker = crawler.send_chunk(20, sleep=0.05)
        task_id = crawler.send_chunk(1)
        time.sleep(0.3)
        crawler.revoke(task_id)
        wait(lambda: crawler.state(task_id) == "REVOKED")
        print("  REVOKED", json.dumps(crawler.result(task_id)))
        wait(lambda: crawler.state(blocker) == "SUCCESS")
        task_id = crawler.send_chunk(100, sleep=0.1)
        wait(lambda: crawler.state(task_id) == "STARTED")
        worker.kill_pool()
        wait(lambda: crawler.state(task_id) == "FAILURE")
        print("  pool child SIGKILLed", json.dumps(crawler.result(task_id)))

        channels: set[bytes] = set()
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            if message["type"] == "pmessage":
                channels.add(message["channel"])
        pubsub.close()
        listener.close()

        crawler.close()  # no worker takes a message while the priorities are counted
        server.reset()
        idle = MiniCrawler(server, root / "idle")
        crawlers.append(idle)
        for priority in range(10):
            idle.send_chunk(priority=priority)
        lists = [key for key, kind in server.keys().items() if kind == "list"]
        with server.client() as client:
            keys = {key: client.llen(key) for key in sorted(lists)}
        print(f"priority 0-9, one message each: {keys}")

        server.reset()

        crawler = MiniCrawler(server, root / "kill", database=pg)
        crawlers.append(crawler)
        crawler.start_workers(2)
        job_id, (task_id,) = crawler.start_job(100, chunk_size=100, sleep=0.1)
        owner = crawler.worker_running(task_id)
        owner.kill()
        print(f"after SIGKILL of {owner.hostname} mid-chunk (job row: {crawler.read_job(job_id)}):")
        print("\n".join(describe(server)))
        meta = {c for c in channels if c.startswith(b"celery-task-meta-")}
        print(f"pub/sub channels: {sorted(channels - meta)} and {len(meta)} celery-task-meta-<id>")
    finally:
        for crawler in crawlers:
            crawler.close()
        server.destroy()
        pg.destroy()


if __name__ == "__main__":
    main()
