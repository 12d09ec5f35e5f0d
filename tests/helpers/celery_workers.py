"""Real Celery workers running tests/minicrawler on the tests' redis-server, and what they leave.

Take the fixtures as a plugin: ``pytest_plugins = ["tests.helpers.celery_workers"]`` (it brings
tests/helpers/redis_server.py's and tests/pg.py's along).

Fixtures
    ``minicrawler`` (function)
        A :class:`MiniCrawler` on the ``broker`` fixture's Redis, without a database.
    ``minicrawler_factory`` (function)
        ``minicrawler_factory(database=crawl_jobs, redis=..., transport_options=...)``: one on
        another Redis (``redis_factory``'s, with a password or a memory limit), and/or whose
        chunks update the ``crawl_jobs`` table of tests/pg.py's ``crawl_jobs`` fixture.
    Each crawler's workers are SIGKILLed (their whole process groups) and its event taps closed
    at the end of the test, whatever happened in it.

:class:`MiniCrawler`
    ``start_workers(count, concurrency=1, pool="prefork", queues=("celery",), heartbeat=2)``
    starts ``count`` workers (``w1@<host>``, ``w2@<host>`` ... in the order started, each its own
    process group) together and returns when each has logged "ready"; ``start_job(total_images,
    chunk_size=..., queue=, priority=, **chunk_options)`` creates and starts a ``crawl_jobs`` job
    (tests/minicrawler/jobs.py), ``send_chunk(...)`` sends one chunk without a job row;
    ``read_job(id)``; ``queue_length(queue)`` (LLEN over the queue and its priority sub-queues),
    ``queue_keys(queue)`` (the sub-queue keys); ``unacked()`` (kombu's unacknowledged messages);
    ``result(task_id)`` (the result backend's JSON), ``state(task_id)``; ``worker_running(task_id)``
    (the :class:`Worker` whose pool runs it, once STARTED); ``images()``; ``event_tap()`` (an
    :class:`EventTap`, closed at teardown); ``revoke(task_id)``. ``app`` is the test process's
    Celery app on the same broker; ``temp_dir`` is where chunks write their images.

:class:`Worker`
    ``hostname``; ``stop()`` (SIGTERM: Celery's warm shutdown, which lets running chunks end);
    ``kill()`` (SIGKILL to the process group, main process and pool children together, as a
    crashed container: a running chunk's message stays unacknowledged); ``kill_pool()`` (SIGKILL
    to the pool children only, as the kernel's OOM killer picks the biggest process: the main
    process records the chunk as failed with WorkerLostError, acknowledges it and forks a new
    child; the chunk's row is never told); ``freeze()``/``thaw()`` (SIGSTOP/SIGCONT the group: a
    hung worker whose heartbeats stop); ``pool_pids()``; ``log()``.

:class:`EventTap`
    A thread subscribed to the broker's event channel (PSUBSCRIBE ``/<db>.celeryev/*``): every
    event the workers and the producer publish, decoded (task events come batched as
    ``task.multi`` lists and are unbatched here). ``events(type)``, ``wait_for(type, **fields)``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as redispy
from celery import Celery
from psycopg.conninfo import make_conninfo

from tests.conftest import test_env
from tests.helpers.processes import die_with_parent
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_until
from tests.minicrawler import Job, create_job, make_app, read_job, start_job
from tests.minicrawler.jobs import TASK_NAME
from tests.pg import DATABASE, SUPERUSER, PostgresServer

pytest_plugins = ["tests.helpers.redis_server", "tests.pg"]

# kombu's Redis transport: a message of priority p goes to the list "<queue>\x06\x16<step>" where
# step is the largest of priority_steps not above p, and to "<queue>" itself for step 0.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = b"unacked"
UNACKED_INDEX = b"unacked_index"


def result_key(task_id: str) -> str:
    """Where Celery's Redis result backend keeps a task's state."""
    return f"celery-task-meta-{task_id}"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in the process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


@dataclass
class Worker:
    """One ``celery worker`` process and its pool, in a process group of their own."""

    name: str
    hostname: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float  # time.monotonic() at spawn
    online_in: float | None = None  # seconds from spawn to "ready" in its log

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def pool_pids(self) -> list[int]:
        return [pid for pid in group_members(self.pid) if pid != self.pid]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_online(self, timeout: float = 60.0) -> None:
        deadline = self.started + timeout
        ready = f"{self.hostname} ready."
        while ready not in self.log():
            if not self.alive:
                raise AssertionError(f"worker {self.hostname} exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.hostname} not ready in {timeout}s\n{self.log()}")
            time.sleep(0.05)
        if self.online_in is None:
            self.online_in = time.monotonic() - self.started

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once; wait until all are gone."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while group_members(self.pid):
            assert time.monotonic() < deadline, f"{self.hostname}: pool children survive"
            time.sleep(0.02)

    def kill_pool(self) -> list[int]:
        """SIGKILL the pool children only; the pids killed."""
        children = self.pool_pids()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return children

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: Celery's warm shutdown (running chunks end, prefetched ones go back to the
        queue); SIGKILL to the group after ``timeout``."""
        if self.alive:
            self.thaw()
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def freeze(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_group(signal.SIGCONT)


@dataclass
class EventTap:
    """Celery events as published on a Redis broker, collected by a thread until ``close()``."""

    server: RedisServer
    db: int = 0
    _events: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> EventTap:
        # The client owns the connection pool: it must live as long as its pubsub does.
        client = self.server.client(self.db, timeout=1.0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.psubscribe(f"/{self.db}.celeryev/*")
        self._thread = threading.Thread(target=self._run, args=(client, pubsub), daemon=True)
        self._thread.start()
        return self

    def _run(self, client: redispy.Redis, pubsub: Any) -> None:
        try:
            while not self._stop.is_set():
                try:
                    message = pubsub.get_message(timeout=0.1)
                except Exception:  # noqa: BLE001 - the broker is being stopped or frozen
                    time.sleep(0.1)
                    continue
                if message is None:
                    continue
                received = time.monotonic()
                with self._lock:
                    for event in decode_events(message["data"]):
                        event["_received"] = received
                        self._events.append(event)
        finally:
            pubsub.close()
            client.close()

    def events(self, type_: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Events so far, of ``type_`` (``task-succeeded`` ...) and with ``fields``, in order."""
        with self._lock:
            found = list(self._events)
        return [
            e
            for e in found
            if (type_ is None or e.get("type") == type_)
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def wait_for(self, type_: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(type_, **fields)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                seen = sorted({str(e.get("type")) for e in self.events()})
                raise AssertionError(f"no {type_} {fields} event in {timeout}s; saw {seen}")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def decode_events(raw: bytes) -> list[dict[str, Any]]:
    """The events in one kombu message published on the Redis fanout channel."""
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded = json.loads(body)
    return decoded if isinstance(decoded, list) else [decoded]


def database_conninfo(postgres: PostgresServer) -> str:
    """The superuser over the server's Unix socket: workers write the rows the exporter reads."""
    return make_conninfo(
        host=str(postgres.socket_dir), port=postgres.port, user=SUPERUSER, dbname=DATABASE
    )


class MiniCrawler:
    """A broker, its workers and (optionally) a ``crawl_jobs`` table: see the module docstring."""

    def __init__(
        self,
        broker: RedisServer,
        root: Path,
        *,
        database: PostgresServer | None = None,
        transport_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.broker = broker
        self.root = root
        self.temp_dir = root / "temp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.conninfo = database_conninfo(database) if database is not None else None
        self.transport_options = dict(transport_options or {})
        self.app: Celery = make_app(
            broker.url(),
            temp_dir=str(self.temp_dir),
            database=self.conninfo,
            transport_options=self.transport_options,
        )
        self.workers: list[Worker] = []
        self._taps: list[EventTap] = []

    # --- workers --------------------------------------------------------------------------------

    def worker_env(self) -> dict[str, str]:
        env = test_env(
            {
                "MINICRAWLER_BROKER_URL": self.broker.url(),
                "MINICRAWLER_TEMP_DIR": str(self.temp_dir),
                "MINICRAWLER_DATABASE": self.conninfo or "",
                "MINICRAWLER_TRANSPORT_OPTIONS": json.dumps(self.transport_options),
            }
        )
        env.pop("MINICRAWLER_RESULT_BACKEND", None)
        return env

    def spawn_worker(
        self,
        name: str | None = None,
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        queues: Sequence[str] = ("celery",),
        heartbeat: int = 2,
        extra_args: Sequence[str] = (),
    ) -> Worker:
        """Start one worker without waiting for it (see ``start_workers``)."""
        name = name or f"w{len(self.workers) + 1}"
        hostname = f"{name}@{socket.gethostname()}"
        log_path = self.root / f"worker-{name}.log"
        args = [
            sys.executable, "-m", "celery", "-A", "tests.minicrawler", "worker",
            "--hostname", hostname,
            "--concurrency", str(concurrency),
            "--pool", pool,
            "--queues", ",".join(queues),
            "--task-events",
            "--heartbeat-interval", str(heartbeat),
            # Mingle asks the other workers for their state at startup and waits a second for
            # answers; gossip makes every worker consume every other one's events. Neither is
            # what the tests look at, and mingle would add a second to every start.
            "--without-mingle", "--without-gossip",
            "--loglevel", "INFO",
            *extra_args,
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.worker_env(),
                cwd=self.root,
                start_new_session=True,  # its own process group: kill() takes the pool along
                preexec_fn=die_with_parent,
            )
        worker = Worker(name, hostname, proc, log_path, time.monotonic())
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int = 1, timeout: float = 60.0, **options: Any) -> list[Worker]:
        """Start ``count`` workers together; return once each has logged that it is ready."""
        started = [self.spawn_worker(**options) for _ in range(count)]
        for worker in started:
            worker.wait_online(timeout)
        return started

    # --- work -----------------------------------------------------------------------------------

    def _db(self) -> PostgresServer:
        assert self.database is not None, "this crawler has no database: minicrawler_factory(...)"
        return self.database

    def start_job(
        self, total_images: int, *, chunk_size: int = 500, **options: Any
    ) -> tuple[int, list[str]]:
        """Create a job row and start it (tests/minicrawler/jobs.py); its id and task ids."""
        with self._db().connect() as conn:
            job_id = create_job(conn, total_images)
            ids = start_job(
                conn, job_id, total_images, app=self.app, chunk_size=chunk_size, **options
            )
        return job_id, ids

    def read_job(self, job_id: int) -> Job:
        with self._db().connect() as conn:
            return read_job(conn, job_id)

    def send_chunk(
        self,
        images: int = 1,
        *,
        job_id: int = 0,
        chunk_index: int = 0,
        queue: str | None = None,
        priority: int | None = None,
        **chunk_options: Any,
    ) -> str:
        """Send one chunk task outside any job (no row is updated for job 0); its task id."""
        routing: dict[str, Any] = {}
        if queue is not None:
            routing["queue"] = queue
        if priority is not None:
            routing["priority"] = priority
        task = self.app.tasks[TASK_NAME]
        sent = task.apply_async((job_id, chunk_index, images), chunk_options, **routing)
        return str(sent.id)

    def revoke(self, task_id: str, terminate: bool = False) -> None:
        self.app.control.revoke(task_id, terminate=terminate)

    # --- what is in Redis -----------------------------------------------------------------------

    def queue_keys(self, queue: str = "celery") -> list[str]:
        """The lists kombu keeps a queue in: the queue itself and its priority sub-queues."""
        return [queue] + [f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS[1:]]

    def queue_length(self, queue: str = "celery") -> int:
        """Messages waiting in ``queue``, its priority sub-queues summed."""
        with self.broker.client() as client:
            pipe = client.pipeline(transaction=False)
            for key in self.queue_keys(queue):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def unacked(self) -> dict[str, list[Any]]:
        """kombu's unacknowledged messages: delivery tag -> [message, exchange, routing key]."""
        with self.broker.client() as client:
            raw = client.hgetall(UNACKED)
        return {tag.decode(): json.loads(value) for tag, value in raw.items()}

    def result(self, task_id: str) -> dict[str, Any] | None:
        """The result backend's record of a task, or None while it has none (PENDING)."""
        with self.broker.client() as client:
            raw = client.get(result_key(task_id))
        return None if raw is None else dict(json.loads(raw))

    def state(self, task_id: str) -> str:
        found = self.result(task_id)
        return "PENDING" if found is None else str(found["status"])

    def worker_running(self, task_id: str, timeout: float = 10.0) -> Worker:
        """The worker running ``task_id``, once the result backend says STARTED (its hostname is
        in the record)."""

        def started() -> dict[str, Any] | None:
            found = self.result(task_id)
            return found if found is not None and found["status"] == "STARTED" else None

        record = wait_until(f"{task_id} starts", started, timeout, self.logs)
        return next(w for w in self.workers if w.hostname == record["result"]["hostname"])

    def images(self) -> list[Path]:
        return sorted(self.temp_dir.rglob("*.jpg"))

    def event_tap(self) -> EventTap:
        tap = EventTap(self.broker).start()
        self._taps.append(tap)
        return tap

    def logs(self) -> str:
        """Every worker's log, for an assertion's message."""
        return "\n".join(f"--- {w.hostname}\n{w.log()}" for w in self.workers)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        for tap in self._taps:
            tap.close()
        self.app.close()


MiniCrawlerFactory = Callable[..., MiniCrawler]


@pytest.fixture
def minicrawler_factory(broker: RedisServer, tmp_path: Path) -> Iterator[MiniCrawlerFactory]:
    made: list[MiniCrawler] = []

    def factory(
        *,
        redis: RedisServer | None = None,
        database: PostgresServer | None = None,
        transport_options: Mapping[str, Any] | None = None,
    ) -> MiniCrawler:
        crawler = MiniCrawler(
            redis or broker,
            tmp_path / f"minicrawler-{len(made)}",
            database=database,
            transport_options=transport_options,
        )
        made.append(crawler)
        return crawler

    yield factory
    for crawler in made:
        crawler.close()


@pytest.fixture
def minicrawler(minicrawler_factory: MiniCrawlerFactory) -> MiniCrawler:
    return minicrawler_factory()
