"""Worker heartbeats and task events, followed by a listener thread on the broker's event stream.

The stream is read with kombu, the library Celery talks to its broker with, exactly as Celery's
own ``EventReceiver`` (and Flower) read it: an exchange named ``celeryev``, fanout on Redis (its
pub/sub) and topic elsewhere, a transient queue bound to ``worker.#`` (heartbeats only) or ``#``
(task events too). Nothing is asked of the workers but one heartbeat at connect, the broadcast
Celery's receiver also sends, so that workers show up at once instead of within their interval.

A connection that fails or closes is made again after a back-off that doubles up to a minute; a
server that stops answering is found by the client's health check and socket timeout. Handling
an event is a few dictionary updates: the listener keeps up with thousands of events a second.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.errors import describe, scrub
from pixcrawler_exporter.collect.worker import Worker
from pixcrawler_exporter.collectors.celery.reading import EventsReading, Moment
from pixcrawler_exporter.collectors.celery.tasks import TaskBook
from pixcrawler_exporter.collectors.celery.workers import WorkerBook

if TYPE_CHECKING:
    from kombu.connection import Connection

log = logging.getLogger(__name__)

EXCHANGE = "celeryev"  # Celery's event_exchange
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
DRAIN_SECONDS = 1.0  # how long one wait for events lasts: the bound on noticing a stop


class Listener:
    """Follows the event stream on a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        timeout: float,
        workers: WorkerBook,
        tasks: TaskBook | None,
        secret: str | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.workers = workers
        self.tasks = tasks
        self.secret = secret
        self._lock = threading.Lock()
        self._next_backoff = BACKOFF_FIRST
        # One session per run: it returns only when the connection failed (or on stop).
        self._worker = Worker(
            "celery-events", self._listen, 0.0, lambda exc: self._lost(describe(exc)), self._backoff
        )
        self._stopping = self._worker.stopping
        self._connected = False
        self._learnt = Moment.now()  # when the stream was last known to be flowing
        self._events = 0
        self.error: str | None = "not connected yet"
        self.connections = 0  # connections made, for the tests and the log
        # The last reading, and what it was made from: a scrape with nothing new takes it.
        self._kept: tuple[tuple[object, ...], EventsReading] | None = None

    # --- what the scrape reads -------------------------------------------------------------

    def reading(self, now: float) -> EventsReading:
        with self._lock:
            view = self.workers.view(now)
            # Every event counts, and the task figures and unnamed workers change only by one.
            key = (view, self._connected, self._events, self._learnt)
            if self._kept is not None and self._kept[0] == key:
                return self._kept[1]
            workers, online, running = view
            made = EventsReading(
                connected=self._connected,
                workers=workers,
                online=online,
                running=running,
                unnamed_workers_total=self.workers.unnamed_total,
                tasks=self.tasks.figures() if self.tasks is not None else None,
                events_total=self._events,
                learnt=self._learnt,
            )
            self._kept = key, made
            return made

    # --- life --------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float) -> None:
        self._worker.stop(timeout)

    def _backoff(self, _interval: float, took: float) -> float:
        """The rest after a session that ended after ``took`` seconds: doubling from a second up
        to a minute, back to a second after a session that lasted a good while."""
        if took > BACKOFF_MAX:
            self._next_backoff = BACKOFF_FIRST
        rest, self._next_backoff = self._next_backoff, min(self._next_backoff * 2, BACKOFF_MAX)
        # Jitter: exporters restarted together must not reconnect in step.
        return rest * random.uniform(0.5, 1.0)  # noqa: S311 - not cryptography

    def _listen(self) -> None:
        from kombu.connection import Connection
        from kombu.entity import Exchange, Queue
        from kombu.messaging import Consumer

        conn = Connection(
            self.url,
            connect_timeout=self.timeout,
            transport_options={
                "socket_timeout": self.timeout,
                "socket_connect_timeout": self.timeout,
                # redis-py pings a silent pub/sub connection this often: a frozen server is
                # then a timeout, not a stream that merely went quiet.
                "health_check_interval": max(1, round(self.timeout * 2)),
            },
        )
        try:
            conn.connect()
            redis = conn.transport.driver_type == "redis"
            exchange = Exchange(EXCHANGE, type="fanout" if redis else "topic")
            queue = Queue(
                f"{EXCHANGE}.pixcrawler-exporter.{uuid.uuid4().hex}",
                exchange=exchange,
                routing_key="#" if self.tasks is not None else "worker.#",
                auto_delete=True,
                durable=False,
                message_ttl=5.0,  # Celery's event_queue_ttl and _expires: nothing piles up
                expires=60.0,
            )
            with Consumer(
                conn, queues=[queue], callbacks=[self._receive], no_ack=True, accept=["json"]
            ):
                _wake_workers(conn)
                self._up()
                while not self._stopping.is_set():
                    # No event this second is no failure: the connection is checked each time.
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=DRAIN_SECONDS)
                    learnt = Moment.now()
                    with self._lock:
                        self._learnt = learnt
        finally:
            conn.release()

    def _receive(self, body: object, _message: object) -> None:
        # Celery 4+ sends a worker's buffered task events as one list.
        events = body if isinstance(body, list) else [body]
        now = Moment.now()
        with self._lock:
            for event in events:
                if isinstance(event, Mapping):
                    self._handle(event, now)

    def _handle(self, event: Mapping[str, object], now: Moment) -> None:
        self._events += 1
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        if kind.startswith("worker-"):
            self.workers.heard(event, now)
        elif kind.startswith("task-") and self.tasks is not None:
            self.tasks.heard(event)

    def _up(self) -> None:
        with self._lock:
            self._connected, self._learnt = True, Moment.now()
            was, self.error = self.error, None
            self.connections += 1
        if was is not None and self.connections > 1:
            log.info("celery event stream followed again")

    def _lost(self, error: str) -> None:
        error = scrub(error, self.secret)
        with self._lock:
            was_connected, self._connected = self._connected, False
            changed, self.error = self.error != error, error
        if was_connected or changed:
            log.warning("celery event stream lost", extra={"error": error})


def _wake_workers(conn: Connection) -> None:
    """Ask every worker for a heartbeat now (Celery's ``heartbeat`` control command), as
    ``EventReceiver.wakeup_workers`` does: a broadcast that waits for no reply."""
    from kombu.pidbox import Mailbox

    mailbox = Mailbox("celery", type="fanout", accept=["json"], serializer="json")
    mailbox(conn)._broadcast("heartbeat", arguments={}, reply=False)
