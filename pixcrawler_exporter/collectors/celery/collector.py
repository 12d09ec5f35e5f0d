"""The work pipeline: Celery's queues, workers and Redis broker, reconciled with the database.

Nothing here runs on the scrape path. Three background sources each keep their last result:
the refresher reads the broker in one pipelined round trip every ``celery.refresh_interval``
(queue depths, the unacknowledged messages, Redis's INFO); the listener follows the workers'
heartbeats and, where enabled, task events; the reconciler compares the database's running jobs
with the result backend. A scrape copies what they last learnt and leaves out what is older than
``celery.max_age``, so a figure is absent, never stale. While the broker cannot be read, the
worker figures are left out too: a stream that stopped with its broker says nothing about the
workers, and "no worker online" must not be claimed on that ground.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.errors import describe, scrub
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collect.worker import Worker
from pixcrawler_exporter.collectors.celery import broker, metrics
from pixcrawler_exporter.collectors.celery.events import Listener
from pixcrawler_exporter.collectors.celery.reading import (
    BrokerReading,
    CeleryReading,
    ReconcileReading,
)
from pixcrawler_exporter.collectors.celery.reconcile import JobsTable, Reconciler
from pixcrawler_exporter.collectors.celery.settings import CelerySettings, password_of, redact
from pixcrawler_exporter.collectors.celery.tasks import TaskBook
from pixcrawler_exporter.collectors.celery.workers import WorkerBook
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings

if TYPE_CHECKING:
    from pixcrawler_exporter.config import Config

log = logging.getLogger(__name__)


class CeleryCollector(Collector[CeleryReading]):
    name = "celery"
    inline = True  # a scrape copies what the background threads learnt
    services = ("redis", "celery")
    descs = metrics.DESCS

    def __init__(self, cfg: CelerySettings, database: DatabaseSettings | None = None) -> None:
        if cfg.broker_url is None:
            raise ValueError("celery.broker_url is not set")
        self.cfg = cfg
        self.target = redact(cfg.broker_url)
        self._secrets = {password_of(u) for u in (cfg.broker_url, cfg.backend_url) if u}
        self._broker = broker.client(cfg.broker_url, cfg.timeout_seconds)
        backend_url = cfg.backend_url or cfg.broker_url
        self._backend = (
            self._broker
            if backend_url == cfg.broker_url
            else broker.client(backend_url, cfg.timeout_seconds)
        )
        self._listener = Listener(
            cfg.broker_url,
            cfg.timeout_seconds,
            WorkerBook(cfg.max_workers, cfg.worker_forget_seconds),
            TaskBook(cfg.task_names) if cfg.task_events else None,
            password_of(cfg.broker_url),
        )
        table = JobsTable.of(database) if database is not None else None
        self._reconciler = (
            Reconciler(database.url, table, cfg.timeout_seconds)
            if database is not None and database.url is not None and table is not None
            else None
        )
        self._lock = threading.Lock()
        self._first = threading.Event()  # the first round trip to the broker has ended
        self._broker_reading: BrokerReading | None = None
        self._reconcile_reading: ReconcileReading | None = None
        self._problems: dict[str, str] = {"broker": "not read yet"}
        self._recorded = 0  # results recorded: a reading made before one is out of date
        # The last reading, what it was made from, and until when it holds: a scrape with
        # nothing new (most of them) takes it, and its families are kept with it.
        self._kept: tuple[tuple[object, ...], float, CeleryReading] | None = None
        self._state: Changes[str, str | None] = Changes(None)
        self._families = metrics.Families()
        interval = cfg.refresh_interval_seconds
        self._workers = [Worker("celery-broker", self._refresh_broker, interval, self._failed)]
        if self._reconciler is not None:
            self._workers.append(
                Worker("celery-reconcile", self._refresh_reconcile, interval, self._failed)
            )

    @classmethod
    def settings(cls, config: Config) -> object:
        return config.source(CelerySettings), config.source(DatabaseSettings)

    @classmethod
    def build(cls, context: BuildContext) -> CeleryCollector | None:
        cfg = context.config.source(CelerySettings)
        if cfg.broker_url is None:  # the registration says so before this module is loaded
            return None
        database = context.config.source(DatabaseSettings)
        return cls(cfg, database if context.config.collectors.database else None)

    # --- the scrape side -------------------------------------------------------------------

    def read_until(self, deadline: float) -> CeleryReading:
        # Only the first scrape after start can wait here, and only for the first round trip.
        self._first.wait(max(0.0, deadline - time.monotonic()))
        return self.read()

    def read(self) -> CeleryReading:
        now = time.monotonic()
        events = self._listener.reading(now)
        with self._lock:
            brk, rec = self._broker_reading, self._reconcile_reading
            # Every broker or reconciliation result goes through _record, which counts it.
            key = (events, self._recorded, self._listener.error)
            kept = self._kept
            if kept is not None and now <= kept[1] and kept[0] == key:
                return kept[2]
            problems = dict(self._problems)
        if not events.connected and self._listener.error is not None:
            problems["events"] = self._listener.error
        learnt = {
            part: moment
            for part, moment in (
                ("broker", brk.learnt if brk else None),
                ("events", events.learnt),
                ("reconcile", rec.learnt if rec else None),
            )
            if moment is not None
        }
        until = math.inf  # when the first part still fresh grows too old
        for part, moment in learnt.items():
            if now - moment.monotonic > self.cfg.max_age:
                # No moving figure here: the reading is kept until something changes.
                problems.setdefault(
                    part, f"older than celery.max_age_seconds ({self.cfg.max_age:g}s)"
                )
            else:
                until = min(until, moment.monotonic + self.cfg.max_age)
        keep_events = "events" not in problems and "broker" not in problems
        made = CeleryReading(
            broker=brk if "broker" not in problems else None,
            events=events if keep_events else None,
            reconcile=rec if "reconcile" not in problems else None,
            visibility_timeout_seconds=self.cfg.visibility_timeout_seconds,
            problems=problems,
            learnt={part: moment.wall for part, moment in learnt.items()},
        )
        self._kept = key, until, made
        return made

    def metrics(self, reading: CeleryReading) -> Iterable[Metric]:
        return self._families.render(reading)

    # --- the background side ---------------------------------------------------------------

    def _refresh_broker(self) -> None:
        try:
            found = broker.read(self._broker, self.cfg.queues)
        except Exception as exc:  # noqa: BLE001 - any failure is the part's failure
            self._record("broker", None, describe(exc))
        else:
            self._record("broker", found, None)
        finally:
            self._first.set()

    def _refresh_reconcile(self) -> None:
        assert self._reconciler is not None
        try:
            found = self._reconciler.read(self._backend)
        except Exception as exc:  # noqa: BLE001 - any failure is the part's failure
            self._record("reconcile", None, describe(exc))
        else:
            self._record("reconcile", found, None)

    def _record(self, part: str, found: object, error: str | None) -> None:
        error = self._scrub(error) if error is not None else None
        with self._lock:
            if isinstance(found, BrokerReading):
                self._broker_reading = found
            elif isinstance(found, ReconcileReading):
                self._reconcile_reading = found
            if error is None:
                self._problems.pop(part, None)
            else:
                self._problems[part] = error
            self._recorded += 1
        self._log_change(part, error)

    def _failed(self, exc: Exception) -> None:
        log.error("celery refresh failed", extra={"error": self._scrub(describe(exc))})

    def _log_change(self, part: str, error: str | None) -> None:
        if self._state.update(part, error) is None:
            return
        if error is None:
            log.info("celery %s readable again", part, extra={"broker": self.target})
        else:
            log.warning(
                "celery %s not readable", part, extra={"broker": self.target, "error": error}
            )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = scrub(text, secret)
        return text

    # --- life ------------------------------------------------------------------------------

    def start(self) -> None:
        log.info("celery collector on", extra={"broker": self.target})
        self._listener.start()
        for worker in self._workers:
            worker.start()

    def close(self) -> None:
        self._listener.stop(timeout=2)
        for worker in self._workers:
            worker.stop(timeout=2)
        if self._reconciler is not None:
            self._reconciler.close()
        self._broker.close()
        if self._backend is not self._broker:
            self._backend.close()
