"""The Celery collector beside Flower 2.x: same broker, same workers, same load, one run, as ratios.

    pip install 'flower>=2,<3'      # the peer; not a dependency of the exporter
    PYTHONPATH=. python bench/pipeline.py [--kills 5] [--task-rate 100] [--replay-rate 500]
        [--seconds 20] [--turns 3000] [--scrape-only [--processes 2]]

Starts a private redis-server and ``--workers`` Celery workers of the tests' miniature PixCrawler
(tests/helpers/redis_server.py, tests/helpers/celery_workers.py: prefork, task events on, a
heartbeat every 2 s), then, all on 127.0.0.1:

- ours "on": the exporter on its defaults plus the celery collector with task events
  (``PIXCRAWLER_CELERY_BROKER_URL``, ``PIXCRAWLER_CELERY_TASK_EVENTS=true``; every other celery
  setting at its default: refresh every 5 s, figures dropped after 15 s, workers forgotten after
  300 s);
- ours "on, no task events": the celery collector on its defaults (heartbeats only);
- ours "off": the same exporter without a broker URL;
- Flower (``celery -A tests.minicrawler flower --address=127.0.0.1 --port=N --logging=warning``,
  on its defaults otherwise: no persistence, 100,000 tasks kept in memory, offline workers never
  purged; ``FLOWER_UNAUTHENTICATED_API=true``, without which its API answers 401).

Every exporter runs its default collectors over a temp tree of 2,000 files. A thread of the
bench subscribed to the broker's ``celeryev`` channels counts every event published: the ground
truth. Then:

1. Time to notice a SIGKILLed worker, ``--kills`` times: a worker of its own is started, seen
   online by both, killed (its process group, SIGKILL) at a random point of its heartbeat
   period, and three pollers (every 20 ms) time how long until ours says
   ``pixcrawler_celery_worker_online{worker=...} 0``, Flower's API says it is not alive
   (``/api/workers?status=1``, Celery's ``Worker.alive``), and Flower's ``/metrics`` says
   ``flower_worker_online ... 0`` (giving up after ``--notice-timeout``). Celery's rule makes a
   worker offline two heartbeat intervals after its last heartbeat was received; the table
   gives the time from the kill, and from that deadline.
2. Task events of real tasks: a producer process (bench/celery_load.py) sends the chunk task with
   no images at ``--task-rate`` tasks/s for ``--seconds`` to the workers (4 task events each:
   sent, received, started, succeeded).
3. The same events replayed at ``--replay-rate`` tasks/s: Celery's own EventDispatcher publishes
   one real task's recorded events under new ids, as a producer and a worker do, without running
   tasks (two shared cores cannot run 500 tasks/s).
   For 2 and 3: task events published (the tap), handled by each (ours: the growth of
   ``pixcrawler_celery_events_received_total`` less the worker events the tap saw; Flower: the
   growth of ``flower_events_total``, which counts task events only), dropped (published less
   handled, once neither grows any more), handled per second of the producer's sending time,
   how long after the tap each had them all, and each process's CPU (utime + stime from
   /proc/PID/stat over the phase) per 1,000 task events.
4. Scrape of ours, collector on, on without task events, and off, ``--turns`` times each: one
   keep-alive connection to each, Prometheus's headers, one request at a time; each turn scrapes
   every exporter once, in an order shuffled anew, and each scrape is timed from its first byte
   sent to its last byte read. p50, p90 and p99 of each, CPU (utime + stime) per scrape, and the
   ratios to off. Interleaving the requests times every exporter at the same moments of the
   machine: on this shared VM the same process's p50 moves by a quarter between two 5 s wrk
   windows, which one-window-per-exporter rounds turned into ratios 8 % apart for two identical
   processes. With ``--scrape-only`` each of the three runs as ``--processes`` identical processes
   (``ours-off``, ``ours-off#2``, ...), its p50 the mean of theirs, and the ratio of two identical
   ones (``ours-off#2`` against ``ours-off``) is printed beside the table, as is the on / off
   ratio of each fifth of the turns: the method's own spread.
5. Resident memory (VmRSS) and threads of each at the end.
6. What the collector's part of a scrape costs, step by step: a CeleryCollector with task events
   in the bench's own process, after 3 real tasks, timed without HTTP (best of 20 x 500).

Needs redis-server, the test extra (``pip install -e '.[test]'``) and Flower 2.x.
``--scrape-only`` runs 4 to 6 alone, without Flower: ``--kills`` workers killed and
``--warm-tasks`` real tasks run first, unmeasured, so that ours holds what a full run leaves it.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.metadata
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.celery_load import TASK_EVENTS, template_fields  # noqa: E402
from bench.load import HEADERS, HOST, Process, temp_tree  # noqa: E402
from bench.scrape import loadavg, ours_env  # noqa: E402
from tests.conftest import free_port, stop_process, test_env  # noqa: E402
from tests.helpers.celery_workers import MiniCrawler, decode_events  # noqa: E402
from tests.helpers.redis_server import RedisServer, find_binary  # noqa: E402
from tests.minicrawler import TASK_NAME  # noqa: E402

POLL = 0.02  # seconds between two looks of a poller: the resolution of the notice times
CATCH_UP = 60.0  # seconds an exporter has to count what the tap saw, once the tap saw it all
Samples = list[tuple[str, dict[str, str], float]]
OURS, FLOWER = "ours (on)", "Flower"
Look = Callable[[str], bool | None]  # hostname -> offline? (None: the worker is unknown to it)


# --- the processes ------------------------------------------------------------------------------


@contextmanager
def serving(
    name: str, cmd: Sequence[str], env: Mapping[str, str], port: int, ready: str, logs: Path
) -> Iterator[Process]:
    """``cmd`` running until the block ends, once ``GET ready`` answers 200; output to a log."""
    log_path = logs / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), env=dict(env), cwd=logs, stdout=log, stderr=log)
    process = Process(name, proc, f"http://{HOST}:{port}/metrics")
    try:
        deadline = time.monotonic() + 60
        while get(port, ready, quiet=True) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not serve {ready} within 60 s")
            time.sleep(0.1)
        yield process
    finally:
        stop_process(proc)


def get(port: int, path: str, quiet: bool = False) -> bytes | None:
    """The body of ``GET path``; None when it fails and ``quiet``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"GET {path}: {resp.status}")
        return body
    except OSError:
        if quiet:
            return None
        raise
    finally:
        conn.close()


def port_of(process: Process) -> int:
    return int(process.url.split(":")[2].split("/")[0])


def samples(process: Process) -> Samples:
    body = get(port_of(process), "/metrics") or b""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    ]


def total(found: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lbl, v in found if n == name and labels.items() <= lbl.items())


def series(process: Process) -> int:
    return len(samples(process))


class Tap:
    """Every event published on the broker's ``celeryev`` channels, counted by type by a thread:
    the ground truth. It also keeps each worker's last heartbeat, and every event of the task
    ids in ``keep``."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.keep: set[str] = set()
        self.beats: dict[str, tuple[float, float]] = {}  # hostname -> (received, freq)
        self._kept: list[dict[str, Any]] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tap", daemon=True)

    def start(self) -> Tap:
        self._thread.start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the event tap did not subscribe within 10 s")
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        client = self.server.client(timeout=5.0)  # owns the pool: lives as long as the pubsub
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.psubscribe("/0.celeryev/*")
        self._subscribed.set()
        try:
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.1)
                if message is not None:
                    self._heard(decode_events(message["data"]), time.monotonic())
        finally:
            pubsub.close()
            client.close()

    def _heard(self, events: list[dict[str, Any]], received: float) -> None:
        with self._lock:
            for event in events:
                kind = str(event.get("type"))
                self._counts[kind] += 1
                if kind in ("worker-heartbeat", "worker-online"):
                    freq = float(event.get("freq") or 2.0)
                    self.beats[str(event.get("hostname"))] = (received, freq)
                if event.get("uuid") in self.keep:
                    self._kept.append(event)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def task_events(self, task_id: str) -> list[dict[str, Any]]:
        """The events of ``task_id`` (in ``keep`` before it was sent), once it succeeded."""

        def kept() -> list[dict[str, Any]]:
            with self._lock:
                return [e for e in self._kept if e["uuid"] == task_id]

        wait_for(f"task {task_id}", lambda: any(e["type"] == "task-succeeded" for e in kept()))
        return kept()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


# --- 1. a SIGKILLed worker ----------------------------------------------------------------------


@dataclass
class Notice:
    """When each observer first said the worker is offline, seconds after the kill."""

    seconds: dict[str, float | None]
    deadline: float | None  # Celery's: the last heartbeat's receipt + 2 intervals, after the kill


def observers(ours: Process, flower: Process) -> dict[str, Look]:
    def metric(process: Process, name: str) -> Look:
        def look(host: str) -> bool | None:
            # One line looked for, not the whole answer parsed: both pollers then take about
            # as long as an answer takes to arrive (hostnames here need no escaping).
            line = f'{name}{{worker="{host}"}} '.encode()
            body = get(port_of(process), "/metrics") or b""
            at = body.find(line)
            if at < 0:
                return None
            return float(body[at + len(line) :].split(b"\n", 1)[0]) == 0

        return look

    def flower_api(host: str) -> bool | None:
        body = get(port_of(flower), "/api/workers?status=1") or b"{}"
        alive = json.loads(body).get(host)
        return None if alive is None else not alive

    return {
        "ours: /metrics pixcrawler_celery_worker_online": metric(
            ours, "pixcrawler_celery_worker_online"
        ),
        "Flower: /api/workers?status=1": flower_api,
        "Flower: /metrics flower_worker_online": metric(flower, "flower_worker_online"),
    }


def online_everywhere(host: str, looks: Mapping[str, Look]) -> None:
    wait_for(f"{host} online", lambda: all(look(host) is False for look in looks.values()))


def kill_once(
    crawler: MiniCrawler,
    tap: Tap,
    name: str,
    looks: Mapping[str, Look],
    timeout: float,
    rng: random.Random,
) -> Notice:
    victim = crawler.spawn_worker(name, concurrency=1)
    victim.wait_online()
    online_everywhere(victim.hostname, looks)
    time.sleep(rng.uniform(0, 2.0))  # anywhere in the heartbeat period
    noticed: dict[str, float | None] = dict.fromkeys(looks)
    killed = time.monotonic()
    os.killpg(victim.pid, signal.SIGKILL)

    def poll(label: str, look: Look) -> None:
        while time.monotonic() - killed < timeout:
            if look(victim.hostname):
                noticed[label] = time.monotonic() - killed
                return
            time.sleep(POLL)

    threads = [threading.Thread(target=poll, args=item) for item in looks.items()]
    for thread in threads:
        thread.start()
    victim.kill()  # reaps it and waits until the pool child is gone too
    for thread in threads:
        thread.join()
    beat = tap.beats.get(victim.hostname)
    return Notice(noticed, None if beat is None else beat[0] + 2 * beat[1] - killed)


# --- 2, 3. task events --------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """Every figure of a load phase, at one moment."""

    at: float
    published_task: int  # task events the tap saw
    published_worker: int  # worker events (heartbeats, online, offline) the tap saw
    succeeded: int  # task-succeeded events the tap saw
    ours_events: float  # pixcrawler_celery_events_received_total: every event
    flower_task: float  # flower_events_total summed: task events only
    ours_cpu: float
    flower_cpu: float

    def side(self, name: str) -> tuple[float, float]:
        """(task events handled, CPU seconds) of ``OURS`` or ``FLOWER``."""
        if name == OURS:
            return self.ours_events - self.published_worker, self.ours_cpu
        return self.flower_task, self.flower_cpu


def _worker_events(counts: Counter[str]) -> int:
    return sum(n for kind, n in counts.items() if kind.startswith("worker-"))


def count(tap: Tap, ours: Process, flower: Process) -> Count:
    for _ in range(10):
        before = tap.counts()
        mine, theirs = samples(ours), samples(flower)
        after = tap.counts()
        if _worker_events(after) == _worker_events(before):
            break  # no heartbeat arrived while ours was read: the subtraction is exact
    return Count(
        at=time.monotonic(),
        published_task=sum(after[kind] for kind in TASK_EVENTS),
        published_worker=_worker_events(after),
        succeeded=after["task-succeeded"],
        ours_events=total(mine, "pixcrawler_celery_events_received_total"),
        flower_task=total(theirs, "flower_events_total"),
        ours_cpu=ours.cpu_seconds(),
        flower_cpu=flower.cpu_seconds(),
    )


@dataclass(frozen=True)
class Handled:
    name: str
    handled: float  # task events
    per_second: float  # of the producer's sending time
    lag: float | None  # seconds after the tap had every event; None: not within CATCH_UP
    cpu: float  # seconds over the phase


@dataclass(frozen=True)
class Phase:
    label: str
    producer: dict[str, float]
    published: int
    succeeded: int
    drained: float  # seconds from the producer's exit until the tap had every event
    ours: Handled
    flower: Handled


def load_phase(
    label: str, producer: Sequence[str], tap: Tap, ours: Process, flower: Process, settle: float
) -> Phase:
    """Run ``producer`` to its end; wait until the tap, then ours and Flower, have every event."""
    with subprocess.Popen(
        list(producer), env=test_env(), stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "go":
                raise RuntimeError(f"the producer failed: {proc.wait()}")
            start = count(tap, ours, flower)  # it sends its first task half a second after "go"
            out = proc.communicate()[0]
        finally:
            proc.kill()  # only if the bench itself failed or was interrupted
    if proc.returncode != 0:
        raise RuntimeError(f"the producer failed: {proc.returncode}")
    sent = count(tap, ours, flower)
    report = json.loads(out.strip().splitlines()[-1])
    expected = len(TASK_EVENTS) * int(report["sent"])
    now = sent
    deadline = time.monotonic() + settle  # workers may still be working a backlog off
    while now.published_task - start.published_task < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        now = count(tap, ours, flower)
    tap_done = now.at
    reached: dict[str, float | None] = {OURS: None, FLOWER: None}
    deadline = time.monotonic() + CATCH_UP
    while None in reached.values() and time.monotonic() < deadline:
        now = count(tap, ours, flower)
        for name, lag in reached.items():
            if lag is None and now.side(name)[0] - start.side(name)[0] >= (
                now.published_task - start.published_task
            ):
                reached[name] = max(0.0, now.at - tap_done)
        time.sleep(0.05)
    sending = float(report["seconds"])

    def handled(name: str) -> Handled:
        (before, cpu_before), (at_end, _), (after, cpu_after) = (
            c.side(name) for c in (start, sent, now)
        )
        return Handled(
            name, after - before, (at_end - before) / sending, reached[name], cpu_after - cpu_before
        )

    return Phase(
        label,
        report,
        now.published_task - start.published_task,
        now.succeeded - start.succeeded,
        tap_done - sent.at,
        handled(OURS),
        handled(FLOWER),
    )


def record_templates(crawler: MiniCrawler, tap: Tap, path: Path) -> None:
    """One real chunk task's four task events: the replay's templates."""
    task_id = str(uuid.uuid4())
    tap.keep.add(task_id)
    crawler.app.tasks[TASK_NAME].apply_async((0, 0, 0), task_id=task_id)
    path.write_text(json.dumps(template_fields(tap.task_events(task_id))))


# --- 4. scrapes ---------------------------------------------------------------------------------


class Scraping:
    """One keep-alive connection to an exporter, sending what Prometheus sends; each answer read
    whole (its Content-Length) and timed from the first byte sent to the last byte read."""

    def __init__(self, process: Process) -> None:
        port = port_of(process)
        self.process = process
        lines = ["GET /metrics HTTP/1.1", f"Host: {HOST}:{port}"]
        lines += [f"{k}: {v}" for k, v in HEADERS.items()]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._sock = socket.create_connection((HOST, port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def once(self) -> float:
        start = time.perf_counter()
        self._sock.sendall(self._request)
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._buffer += self._recv()
        status, *fields = self._buffer[:end].decode("latin-1").split("\r\n")
        if status.split()[1] != "200":
            raise RuntimeError(f"{self.process.name} answered {status!r}")
        length = next(
            int(f.split(":", 1)[1]) for f in fields if f.lower().startswith("content-length:")
        )
        whole = end + 4 + length
        while len(self._buffer) < whole:
            self._buffer += self._recv()
        took = (time.perf_counter() - start) * 1000
        self._buffer = self._buffer[whole:]
        return took

    def _recv(self) -> bytes:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError(f"{self.process.name} closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class Scraped:
    ms: dict[str, list[float]]  # each process's scrape latencies, in turn order
    cpu_ms: dict[str, float]  # each process's CPU (utime + stime) per scrape


def scrape_turns(targets: Sequence[Process], turns: int, rng: random.Random) -> Scraped:
    """``turns`` scrapes of each target, one request at a time: each turn scrapes every target
    once, in an order shuffled anew, so all of them are timed at the same moments of the
    machine. After 100 turns unmeasured."""
    scrapings = [Scraping(p) for p in targets]
    try:
        for _ in range(100):
            for scraping in scrapings:
                scraping.once()
        cpu = {p.name: p.cpu_seconds() for p in targets}
        ms: dict[str, list[float]] = {p.name: [] for p in targets}
        order = list(scrapings)
        for _ in range(turns):
            rng.shuffle(order)
            for scraping in order:
                ms[scraping.process.name].append(scraping.once())
        cpu_ms = {p.name: 1000 * (p.cpu_seconds() - cpu[p.name]) / turns for p in targets}
    finally:
        for scraping in scrapings:
            scraping.close()
    return Scraped(ms, cpu_ms)


# --- 6. the collector's part of a scrape -------------------------------------------------------


@dataclass(frozen=True)
class Part:
    take: float  # microseconds: CeleryCollector.take, the read of what the threads learnt
    # The families, kept (nothing changed since the last scrape: served as they were) and
    # afresh (what the first scrape after a change costs), all and the histograms alone.
    build: float
    build_afresh: float
    build_histograms: float
    # OpenMetrics, as Prometheus asks for it, by the exporter's own encoder; kept families are
    # written once and their text served after.
    encode: float
    encode_afresh: float
    encode_histograms: float
    samples: int
    histogram_samples: int


def collector_part(server: RedisServer, crawler: MiniCrawler, tasks: int = 3) -> Part:
    """The celery collector (task events on) in this process, after ``tasks`` real tasks: what
    each step of a scrape costs it, best of 20 x 500 (no HTTP, no other collector)."""
    from pixcrawler_exporter.collectors.celery.collector import CeleryCollector
    from pixcrawler_exporter.collectors.celery.metrics import (
        QUEUE_WAIT,
        RUNTIME,
        Families,
        _histogram,
    )
    from pixcrawler_exporter.collectors.celery.reading import CeleryReading
    from pixcrawler_exporter.collectors.celery.settings import CelerySettings
    from pixcrawler_exporter.web import exposition, routes

    collector = CeleryCollector(CelerySettings(broker_url=server.url(), task_events=True))
    collector.start()
    try:
        wait_for("the collector's first round trip", lambda: not collector.read().problems)
        for _ in range(tasks):
            crawler.send_chunk(0)

        def counted() -> int:
            found = collector.read().events
            return sum(c.count for c in found.tasks.counts) if found and found.tasks else 0

        wait_for(f"{tasks} tasks counted", lambda: counted() >= tasks)
        chosen, content_type = routes.negotiate(HEADERS["Accept"])
        encode = exposition.encoder(content_type, chosen)
        reading = collector.read()
        assert isinstance(reading, CeleryReading)
        families = list(collector.metrics(reading))
        assert reading.events is not None and reading.events.tasks is not None
        figures = reading.events.tasks
        # The same families as made anew, not marked as kept: what the encoder writes in full.
        afresh = list(Families().render(reading))
        for family in afresh:
            vars(family).pop("encoded", None)
        histograms = [
            _histogram(RUNTIME, figures.runtime),
            _histogram(QUEUE_WAIT, figures.queue_wait),
        ]

        def best(step: Callable[[], object]) -> float:
            return 1e6 * min(timeit.repeat(step, number=500, repeat=20)) / 500

        return Part(
            take=best(lambda: collector.take(time.monotonic() + 10)),
            build=best(lambda: list(collector.metrics(reading))),
            build_afresh=best(lambda: list(Families().render(reading))),
            build_histograms=best(
                lambda: [
                    _histogram(RUNTIME, figures.runtime),
                    _histogram(QUEUE_WAIT, figures.queue_wait),
                ]
            ),
            encode=best(lambda: encode(families)),
            encode_afresh=best(lambda: encode(afresh)),
            encode_histograms=best(lambda: encode(histograms)),
            samples=sum(len(f.samples) for f in families),
            histogram_samples=sum(len(f.samples) for f in histograms),
        )
    finally:
        collector.close()


# --- the report ---------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def print_kills(notices: Sequence[Notice], timeout: float) -> float | None:
    """The table of section 1; the median per-kill ratio ours / Flower's API."""
    print(
        f"\n## 1. A worker SIGKILLed: seconds until each says it is offline, {len(notices)} kills"
    )
    print("| observer | median s | min s | max s | median after Celery's deadline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    labels = list(notices[0].seconds)
    for label in labels:
        got = [t for n in notices if (t := n.seconds[label]) is not None]
        late = [
            t - d
            for n in notices
            if (t := n.seconds[label]) is not None and (d := n.deadline) is not None
        ]
        if not got:
            print(f"| {label} | not within {timeout:g} s, {len(notices)} times | | | |")
            continue
        missed = len(notices) - len(got)
        note = f" ({missed} not within {timeout:g} s)" if missed else ""
        print(
            f"| {label} | {med(got):.2f}{note} | {min(got):.2f} | {max(got):.2f} | "
            f"{med(late):+.2f} |"
        )
    deadlines = [n.deadline for n in notices if n.deadline is not None]
    if deadlines:
        print(
            f"# Celery's deadline (last heartbeat received + 2 x 2 s) came {med(deadlines):.2f} "
            f"s after the kill (median; {min(deadlines):.2f} to {max(deadlines):.2f})"
        )
    ours, flower = labels[0], labels[1]
    ratios = [
        a / b for n in notices if (a := n.seconds[ours]) is not None and (b := n.seconds[flower])
    ]
    return med(ratios) if ratios else None


def print_phase(phase: Phase) -> None:
    p = phase.producer
    print(
        f"\n## {phase.label}\n# producer: {int(p['sent'])} tasks in {p['seconds']:.1f} s "
        f"({p['rate']:.0f}/s, at most {p['late_max']:.2f} s behind its schedule); published: "
        f"{phase.published} task events, {phase.succeeded} task-succeeded, the last "
        f"{phase.drained:.1f} s after the producer's end"
    )
    print(
        "| | task events handled | dropped | handled/s while sending | all in, after the tap "
        "| CPU s | CPU ms per 1,000 events |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for h in (phase.ours, phase.flower):
        lag = f"not within {CATCH_UP:g} s" if h.lag is None else f"{h.lag:.2f} s"
        print(
            f"| {h.name} | {h.handled:.0f} | {phase.published - h.handled:.0f} | "
            f"{h.per_second:.0f} | {lag} | {h.cpu:.2f} | "
            f"{1e6 * h.cpu / max(h.handled, 1):.0f} |"
        )


def print_scrapes(targets: Sequence[Process], turns: int, rng: random.Random) -> dict[str, float]:
    """The table of section 4; each exporter's p50 over ours-off's, its p50 the mean of its
    identical processes' (``name``, ``name#2``, ...) where it runs as several."""
    sizes = {p.name: series(p) for p in targets}
    found = scrape_turns(targets, turns, rng)
    kinds: dict[str, list[str]] = {}
    for target in targets:
        kinds.setdefault(target.name.split("#")[0], []).append(target.name)

    def of(
        kind: str, figure: Callable[[list[float]], float], start: int = 0, stop: int = turns
    ) -> float:
        return statistics.fmean(figure(found.ms[name][start:stop]) for name in kinds[kind])

    def pct(q: int) -> Callable[[list[float]], float]:
        return lambda ms: statistics.quantiles(ms, n=100)[q - 1]

    print(
        f"\n## 4. Scrapes of ours: {turns} turns, each scraping every process once (one request "
        "at a time, keep-alive, Prometheus's headers), the order shuffled each turn"
    )
    print(
        "| exporter | processes | series | p50 ms | p90 ms | p99 ms | CPU ms/scrape | p50 / off "
        "| CPU / off |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    off_p50 = of("ours-off", med)
    off_cpu = statistics.fmean(found.cpu_ms[name] for name in kinds["ours-off"])
    ratios = {}
    for kind, names in kinds.items():
        cpu = statistics.fmean(found.cpu_ms[name] for name in names)
        ratios[kind] = of(kind, med) / off_p50
        print(
            f"| {kind} | {len(names)} | {sizes[names[0]]} | {of(kind, med):.2f} | "
            f"{of(kind, pct(90)):.2f} | {of(kind, pct(99)):.2f} | {cpu:.3f} | {ratios[kind]:.3f} | "
            f"{cpu / off_cpu:.2f} |"
        )
    off = kinds["ours-off"]
    if len(off) > 1:
        twins = med(found.ms[off[1]]) / med(found.ms[off[0]])
        print(f"# two identical processes, p50 {off[1]} / {off[0]}: {twins:.3f}")
    step = max(turns // 5, 1)
    blocks = [
        of("ours-on", med, start, start + step) / of("ours-off", med, start, start + step)
        for start in range(0, turns - step + 1, step)
    ]
    shown = ", ".join(f"{x:.3f}" for x in blocks)
    print(f"# p50 ours-on / ours-off by fifth of the turns: {shown}")
    return ratios


def print_part(part: Part) -> None:
    print(
        "\n## 6. The celery collector's part of one scrape: in the bench's process, task events "
        "on, 2 workers and 1 task name, best of 20 x 500"
    )
    print(
        "| step | µs, nothing changed (kept) | µs after a change (afresh) | of which the two "
        "histograms, afresh |\n| --- | ---: | ---: | ---: |"
    )
    print(f"| take: read what the background threads learnt | {part.take:.0f} | | |")
    print(
        f"| build the families | {part.build:.0f} | {part.build_afresh:.0f} | "
        f"{part.build_histograms:.0f} |"
    )
    print(
        f"| encode them (OpenMetrics) | {part.encode:.0f} | {part.encode_afresh:.0f} | "
        f"{part.encode_histograms:.0f} |"
    )
    print(f"| samples | {part.samples} | | {part.histogram_samples} |")


def print_memory(processes: Sequence[Process]) -> dict[str, float]:
    """The table of section 5; each process's VmRSS in MB."""
    print("\n## 5. Memory at the end\n| process | VmRSS MB | threads |\n| --- | ---: | ---: |")
    rss = {}
    for p in processes:
        rss[p.name] = p.status("VmRSS") / 1024
        print(f"| {p.name} | {rss[p.name]:.1f} | {p.status('Threads')} |")
    return rss


def warm(crawler: MiniCrawler, on: Process, kills: int, tasks: int) -> None:
    """What a full run leaves ours with, without Flower and without timing anything: ``kills``
    workers seen online and SIGKILLed, and ``tasks`` real tasks counted, so that the scrapes of
    section 4 carry the same workers' series and task histograms."""
    look = observers(on, on)["ours: /metrics pixcrawler_celery_worker_online"]

    def says(host: str, offline: bool) -> None:
        wait_for(f"{host} {'offline' if offline else 'online'}", lambda: look(host) is offline)

    for worker in crawler.workers:
        says(worker.hostname, False)
    victims = [crawler.spawn_worker(f"victim{i + 1}", concurrency=1) for i in range(kills)]
    for victim in victims:
        victim.wait_online()
        says(victim.hostname, False)
    for victim in victims:
        victim.kill()
    for _ in range(tasks):
        crawler.send_chunk(0)

    def succeeded() -> float:
        return total(samples(on), "pixcrawler_celery_tasks_total", outcome="succeeded")

    wait_for(f"{tasks} tasks counted", lambda: succeeded() >= tasks, timeout=60)
    for victim in victims:
        says(victim.hostname, True)
    print(
        f"# warmed: {kills} workers killed, {tasks} real tasks counted by ours; "
        f"series of ours-on: {series(on)}"
    )


def versions(redis_binary: str) -> str:
    words = subprocess.run(
        [redis_binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    redis_version = next((w.split("=")[1] for w in words if w.startswith("v=")), "?")
    parts = [f"python {sys.version.split()[0]}", f"redis-server {redis_version}"]
    for dist in ("celery", "kombu", "redis", "flower", "tornado", "prometheus-client"):
        with suppress(importlib.metadata.PackageNotFoundError):
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
    return ", ".join(parts)


def missing(flower: bool = True) -> list[str]:
    problems = []
    if find_binary() is None:
        problems.append("redis-server is not installed (apt-get install redis-server)")
    if not flower:
        return problems
    try:
        if not importlib.metadata.version("flower").startswith("2."):
            problems.append("Flower is not 2.x (pip install 'flower>=2,<3')")
    except importlib.metadata.PackageNotFoundError:
        problems.append("Flower is not installed (pip install 'flower>=2,<3')")
    return problems


# --- the run ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers running the tasks")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--notice-timeout", type=float, default=10.0)
    parser.add_argument("--task-rate", type=float, default=100, help="real tasks a second")
    parser.add_argument("--replay-rate", type=float, default=500, help="replayed tasks a second")
    parser.add_argument("--seconds", type=float, default=20, help="of each load")
    parser.add_argument("--settle", type=float, default=120, help="the most a load may drain for")
    parser.add_argument("--turns", type=int, default=3000, help="scrapes of each of ours")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument(
        "--scrape-only",
        action="store_true",
        help="no Flower: only sections 4-6, after --kills workers are killed and --warm-tasks "
        "real tasks are run, so ours knows what a full run leaves it with",
    )
    parser.add_argument(
        "--warm-tasks", type=int, default=20, help="real tasks run first with --scrape-only"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="identical processes of each of ours with --scrape-only (section 4)",
    )
    args = parser.parse_args(argv)
    problems = missing(flower=not args.scrape_only)
    if problems:
        print("\n".join(problems))
        return 2
    redis_binary = find_binary()
    assert redis_binary is not None

    command = ["python", "bench/pipeline.py", *(sys.argv[1:] if argv is None else argv)]
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC: {shlex.join(command)}")
    print(f"# {versions(redis_binary)}; cores: {os.cpu_count()}; load average before: {loadavg()}")
    rng = random.Random(args.seed)  # noqa: S311 - when to kill, not a secret
    scratch = Path(tempfile.mkdtemp(prefix="pixcrawler-pipeline-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, True)
        server = RedisServer(redis_binary)
        stack.callback(server.destroy)
        server.start()
        crawler = MiniCrawler(server, scratch / "crawler")
        stack.callback(crawler.close)
        tap = Tap(server).start()
        stack.callback(tap.close)
        crawler.start_workers(args.workers, concurrency=args.concurrency)

        temp_tree(scratch / "temp")
        logs = scratch / "logs"
        logs.mkdir()
        off_env = ours_env(scratch)
        defaults_env = {**off_env, "PIXCRAWLER_CELERY_BROKER_URL": server.url()}
        on_env = {**defaults_env, "PIXCRAWLER_CELERY_TASK_EVENTS": "true"}
        ours = {}
        copies = max(args.processes, 1) if args.scrape_only else 1
        for name, env in (
            ("ours-on", on_env),
            ("ours-on-no-task-events", defaults_env),
            ("ours-off", off_env),
        ):
            for copy in range(1, copies + 1):
                named = name if copy == 1 else f"{name}#{copy}"
                port = free_port()
                cmd = [sys.executable, "-m", "pixcrawler_exporter", "--listen", f"{HOST}:{port}"]
                ours[named] = stack.enter_context(serving(named, cmd, env, port, "/metrics", logs))
        on = ours["ours-on"]
        if args.scrape_only:
            warm(crawler, on, args.kills, args.warm_tasks)
            p50_ratio = print_scrapes(list(ours.values()), max(args.turns, 1), rng)
            rss = print_memory(list(ours.values()))
            print_part(collector_part(server, crawler))
            print(
                f"\n## Ratios\n- scrape p50, collector on / off: {p50_ratio['ours-on']:.3f}x "
                f"with task events, {p50_ratio['ours-on-no-task-events']:.3f}x without "
                f"(target <= 1.1)\n- RSS: ours on / off {rss['ours-on'] / rss['ours-off']:.2f}x"
            )
            print(f"# load average after: {loadavg()}")
            return 0
        flower_env = {
            k: v
            for k, v in crawler.worker_env().items()
            if not k.startswith(("FLOWER_", "CELERY_"))
        }
        # Flower 2.x answers its API only with authentication or this; it listens on loopback.
        flower_env["FLOWER_UNAUTHENTICATED_API"] = "true"
        port = free_port()
        flower_cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.minicrawler",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
            "--logging=warning",
        ]
        flower = stack.enter_context(
            serving("flower", flower_cmd, flower_env, port, "/healthcheck", logs)
        )
        print(
            "# ours: PIXCRAWLER_CELERY_BROKER_URL=redis://127.0.0.1:PORT/0 "
            "PIXCRAWLER_CELERY_TASK_EVENTS=true python -m pixcrawler_exporter (on); without "
            "the second variable (on, no task events); without either (off)"
        )
        print(
            f"# Flower: FLOWER_UNAUTHENTICATED_API=true celery {shlex.join(flower_cmd[3:-3])} "
            "--address=127.0.0.1 --port=PORT --logging=warning"
        )
        print(
            f"# workers: {args.workers} x prefork concurrency {args.concurrency}, -E, heartbeat "
            "2 s, tests/minicrawler (acks late, prefetch 1, task_send_sent_event)"
        )

        looks = observers(on, flower)
        for worker in crawler.workers:
            online_everywhere(worker.hostname, looks)
        notices = [
            kill_once(crawler, tap, f"victim{i + 1}", looks, args.notice_timeout, rng)
            for i in range(args.kills)
        ]
        notice_ratio = print_kills(notices, args.notice_timeout) if notices else None

        templates = scratch / "events.json"
        record_templates(crawler, tap, templates)
        load = [sys.executable, str(REPO / "bench" / "celery_load.py")]
        common = ["--broker", server.url(), "--seconds", f"{args.seconds:g}"]
        runs = []
        if args.task_rate > 0:
            runs.append(
                (
                    f"2. Task events of real tasks, {args.task_rate:g} tasks/s for "
                    f"{args.seconds:g} s",
                    ["tasks", "--rate", f"{args.task_rate:g}"],
                )
            )
        if args.replay_rate > 0:
            runs.append(
                (
                    f"3. Task events replayed, {args.replay_rate:g} tasks/s "
                    f"({len(TASK_EVENTS) * args.replay_rate:g} events/s) for {args.seconds:g} s",
                    ["replay", "--rate", f"{args.replay_rate:g}", "--templates", str(templates)],
                )
            )
        phases = []
        for label, what in runs:
            phases.append(load_phase(label, [*load, *what, *common], tap, on, flower, args.settle))
            print_phase(phases[-1])

        targets = list(ours.values())
        p50_ratio = print_scrapes(targets, args.turns, rng) if args.turns else {}

        rss = print_memory([*targets, flower])

        if args.turns:
            print_part(collector_part(server, crawler))

        print("\n## Ratios: ours / Flower, unless said")
        if notice_ratio is not None:
            print(
                f"- time to notice a SIGKILLed worker, against Flower's API: {notice_ratio:.2f}x "
                "(median of the per-kill ratios)"
            )
        for phase in phases:
            o, f = phase.ours, phase.flower
            print(
                f"- {phase.label.split('. ', 1)[1]}: events handled {o.handled / f.handled:.3f}x"
                f", per second while sending {o.per_second / f.per_second:.2f}x, CPU per event "
                f"{(o.cpu / o.handled) / (f.cpu / f.handled):.2f}x"
            )
        if p50_ratio:
            print(
                f"- scrape p50, collector on / off: {p50_ratio['ours-on']:.3f}x with task events, "
                f"{p50_ratio['ours-on-no-task-events']:.3f}x without (target <= 1.1)"
            )
        print(
            f"- RSS: ours on / Flower {rss['ours-on'] / rss['flower']:.2f}x; ours on / off "
            f"{rss['ours-on'] / rss['ours-off']:.2f}x"
        )
        print(f"# load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
