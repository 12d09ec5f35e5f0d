"""Azure Monitor platform metrics and Log Analytics (App Insights) queries, from a background cache.

Azure answers in seconds and rate-limits per subscription, so no scrape ever waits for it: a
refresher thread asks every ``refresh_interval_seconds`` and ``read()`` only copies the cache.

Platform metrics come from the data-plane batch API (``metrics:getBatch`` through
azure-monitor-querymetrics' ``MetricsClient``) rather than ARM's per-resource metrics API: it is
throttled apart from ARM's read budget, so the calls per hour depend on how the resources group
(``plan``), never on the scrape rate. Its price is a regional endpoint: each resource's region (or
an endpoint naming it) must be configured.

The parts: ``plan`` (what to ask), ``client`` (credential and SDK clients), ``gate`` (retries and
Retry-After), ``parse`` (answers into values, failures into outcomes), ``cache`` (what the scrape
reads), ``presets`` (seed 002's shipped log queries, each exported as a gauge of its own). A
failed call keeps the values it would have replaced, which age out after ``max_age_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from pixcrawler_exporter.collect.changes import Changes
from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.errors import describe, scrub
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collect.worker import Worker
from pixcrawler_exporter.collectors.azure import parse
from pixcrawler_exporter.collectors.azure.cache import Cache
from pixcrawler_exporter.collectors.azure.client import Clients, quiet_sdk_loggers
from pixcrawler_exporter.collectors.azure.gate import Gate
from pixcrawler_exporter.collectors.azure.model import LogQuery
from pixcrawler_exporter.collectors.azure.parse import OUTCOMES, CallFailedError
from pixcrawler_exporter.collectors.azure.plan import (
    MAX_INSTANCES,
    PUBLIC_METRICS_ENDPOINT,
    Batch,
    configured,
    plan,
)
from pixcrawler_exporter.collectors.azure.presets import LOG_PRESETS, LogPreset
from pixcrawler_exporter.collectors.azure.reading import AzureReading, AzureValue, LogValue
from pixcrawler_exporter.collectors.azure.resolve import ArmInfo, needs_lookup, resolve
from pixcrawler_exporter.collectors.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.monitor.query import LogsQueryPartialResult, LogsQueryResult, LogsTable

    from pixcrawler_exporter.config import Config

# The reading is imported from here by the code that derives facts from it.
__all__ = ["AzureCollector", "AzureReading"]

log = logging.getLogger(__name__)

# Not "instance": Prometheus's own target label, which would rename this one exported_instance.
INSTANCE_LABEL = "azure_instance"
METRIC = Desc(
    "pixcrawler_azure_metric",
    "Newest value of an Azure Monitor platform metric in the lookback window, in its unit as "
    "Azure reports it (percent metrics 0-100); App Service metrics per instance (azure_instance, "
    f"at most {MAX_INSTANCES} per resource and metric, the busiest), others with azure_instance "
    "empty.",
    "gauge",
    ("resource", "metric", "aggregation", "unit", INSTANCE_LABEL),
)
METRIC_AGE = Desc(
    "pixcrawler_azure_metric_age_seconds",
    "Seconds since the time grain of the value in pixcrawler_azure_metric began (Azure's "
    "ingestion delay included).",
    "gauge",
    ("resource", "metric", INSTANCE_LABEL),
)
UP = Desc(
    "pixcrawler_azure_up",
    "1 when the last refresh of every Azure Monitor call succeeded, 0 when one failed or none "
    "has finished yet.",
)
LAST_SUCCESS = Desc(
    "pixcrawler_azure_last_success_timestamp_seconds",
    "Unix time the last fully successful refresh ended.",
)
REQUESTS = Desc(
    "pixcrawler_azure_requests_total",
    "Calls made to Azure Monitor (metrics and log queries), by how they ended.",
    "counter",
    ("outcome",),
)
RATELIMIT = Desc(
    "pixcrawler_azure_ratelimit_remaining",
    "Requests left in Azure's throttling window, from its last x-ms-ratelimit-remaining-SCOPE "
    "header.",
    "gauge",
    ("scope",),
)
LOG_QUERY = Desc(
    "pixcrawler_azure_log_query_value",
    "Value column of a row of a configured KQL query; its label columns are labels too.",
    "gauge",
    ("query",),
)

# The families every scrape has, whether empty or not.
_ALWAYS = (METRIC, METRIC_AGE, UP, LAST_SUCCESS, REQUESTS, RATELIMIT, LOG_QUERY)
# Seed 002's telemetry, each log preset a gauge of its own (turned on by azure.log_presets).
PRESET_DESCS = {p.name: Desc(p.metric, p.help) for p in LOG_PRESETS}

# (what was called, outcome, message) of one failed call in a refresh.
Failure = tuple[str, str, str]


class AzureCollector(Collector[AzureReading]):
    """Reads the cache that a background refresher keeps from Azure Monitor."""

    name = "azure"
    inline = True
    services = ("azure",)
    descs = (*_ALWAYS, *PRESET_DESCS.values())

    @classmethod
    def settings(cls, cfg: Config) -> object:
        return cfg.source(AzureSettings), cfg.mode

    @classmethod
    def build(cls, context: BuildContext) -> AzureCollector | None:
        return cls(context.config.source(AzureSettings)) if context.config.mode == "azure" else None

    def __init__(
        self,
        cfg: AzureSettings,
        *,
        retries: int = 2,
        backoff_seconds: float = 1.0,
        timeout_seconds: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.interval = cfg.refresh_interval_seconds
        # A call must end well before the next refresh is due, and never hang the refresher.
        self.timeout = timeout_seconds or max(1.0, min(30.0, self.interval / 2))
        self.plan = plan(cfg)
        self._configured = configured(cfg)
        self._regional = "{region}" in (cfg.metrics_endpoint or PUBLIC_METRICS_ENDPOINT)
        # Refresher-only: what Resource Manager answered, whether anything is left to ask, and
        # what its answers leave missing for good (a web app without a plan).
        self._arm: dict[str, ArmInfo] = {}
        self._resolved = not any(needs_lookup(r, self._regional) for r in self._configured)
        self._standing: tuple[Failure, ...] = ()
        self._cache = Cache(self.plan, cfg.max_age_seconds or 3 * self.interval)
        self._worker = Worker("azure-refresh", self.refresh, self.interval, self._refresh_failed)
        self._gate = Gate(
            retries=retries,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=self.interval,
            count=self._cache.count,
            wait=self._worker.stopping.wait,
        )
        self._clients = Clients(
            cfg, self.timeout, lambda h: self._cache.note_ratelimit(parse.ratelimit_remaining(h))
        )
        # Refresher-only state, so that each change is logged once: every call that can fail
        # (by what the log calls it) with its outcome, and whether sign-in fails.
        self._calls = {
            self._scrub(call)
            for call in (
                "configuration",
                "credential",
                *(b.label for b in self.plan.batches),
                *(_query_call(q) for q in self.plan.queries),
                *(_preset_call(p) for p in self.plan.presets),
            )
        }
        self._failing: Changes[str, str | None] = Changes(None)
        self._signing_in: Changes[str, bool] = Changes(False)

    @property
    def calls_per_refresh(self) -> int:
        return self.plan.calls_per_refresh

    @property
    def refreshes(self) -> int:
        return self._cache.refreshes

    # --- the scrape side -------------------------------------------------------------------

    def read(self) -> AzureReading:
        return self._cache.reading()

    def metrics(self, reading: AzureReading) -> Iterable[Metric]:
        metric, age, up, last, requests, ratelimit, logs = (d.family() for d in _ALWAYS)
        for v in reading.values:
            add(metric, v.value, v.resource, v.metric, v.aggregation, v.unit, v.instance)
            add(age, max(0.0, reading.time - v.timestamp), v.resource, v.metric, v.instance)
        add(up, 1 if reading.up else 0)
        if reading.last_success is not None:
            add(last, reading.last_success)
        for outcome in OUTCOMES:
            add(requests, reading.requests.get(outcome, 0), outcome)
        for scope, remaining in sorted(reading.ratelimit_remaining.items()):
            add(ratelimit, remaining, scope)
        for lv in reading.log_values:
            # Each query has label columns of its own; one family holds them all.
            labels = {"query": lv.query, **dict(lv.labels)}
            logs.samples.append(Sample(LOG_QUERY.name, labels, lv.value))
        yield from (metric, age, up, last, requests, ratelimit, logs)
        for lv in reading.preset_values:
            yield PRESET_DESCS[lv.query].value(lv.value)

    # --- life ------------------------------------------------------------------------------

    def start(self) -> None:
        quiet_sdk_loggers()
        self._worker.start()

    def close(self) -> None:
        # A call under way ends at its timeout (a wait at once); the thread is a daemon should
        # it not.
        self._worker.stop(timeout=self.timeout + 1)
        self._clients.close()

    def _refresh_failed(self, exc: Exception) -> None:
        # A bug, not Azure's answer (those are failures of a call); the refresher goes on.
        log.error("Azure refresh failed", exc_info=exc)
        self._cache.fail(self._scrub(f"refresh failed: {describe(exc)}"))

    # --- the refresher ---------------------------------------------------------------------

    def refresh(self) -> None:
        """One refresh: every batch and query once (with retries). Runs in the refresher."""
        deadline = time.monotonic() + self.interval
        failures: list[Failure] = []
        try:
            if not self._resolved:
                self._clients.ensure((), False)
                failures += self._resolve(deadline)
            if self.plan.batches or self.plan.asks_logs:
                self._clients.ensure(
                    tuple(b.endpoint for b in self.plan.batches), self.plan.asks_logs
                )
        except Exception as exc:  # noqa: BLE001 - a bad authority URL must not kill the thread
            failures.append(("credential", "auth_error", describe(exc)))
        else:
            if self.plan.batches or self.plan.asks_logs:
                failures += self._refresh_all(deadline)
        failures = [("configuration", "config", p) for p in self.plan.problems] + [
            *self._standing,
            *failures,
        ]
        # Everything that leaves the collector (reading, logs) passes here, secret removed.
        failures = [(self._scrub(w), o, self._scrub(m)) for w, o, m in failures]
        self._log_changes(failures)
        self._cache.finish("; ".join(f"{w}: {message}" for w, _, message in failures) or None)

    def _resolve(self, deadline: float) -> list[Failure]:
        """Ask Resource Manager what the configuration leaves open, then plan again."""

        def lookup(resource_id: str) -> ArmInfo:
            key = resource_id.lower()
            if key not in self._arm:
                self._arm[key] = self._gate.call(
                    "arm", lambda: self._clients.arm_lookup(resource_id), deadline
                )
            return self._arm[key]

        result = resolve(self._configured, self._regional, lookup)
        self._resolved = result.complete
        self.plan = plan(self.cfg, result.resources)
        self._cache.replan(self.plan)
        self._calls |= {self._scrub(b.label) for b in self.plan.batches}
        self._calls |= {self._scrub(what) for what, _, _ in result.failures}
        if result.complete:
            # Answers that leave a metric missing stand as long as the process runs.
            self._standing = result.failures
            return []
        return list(result.failures)

    def _refresh_all(self, deadline: float) -> list[Failure]:
        failures: list[Failure] = []
        for batch in self.plan.batches:
            try:
                self._refresh_batch(batch, deadline)
            except CallFailedError as exc:
                failures.append((batch.label, exc.outcome, str(exc)))
        for query in self.plan.queries:
            try:
                self._cache.store_logs(query.name, self._run_query(query, deadline))
            except CallFailedError as exc:
                failures.append((_query_call(query), exc.outcome, str(exc)))
        for preset in self.plan.presets:
            try:
                self._cache.store_preset(preset.name, self._run_query(preset.log_query, deadline))
            except CallFailedError as exc:
                failures.append((_preset_call(preset), exc.outcome, str(exc)))
        return failures

    def _refresh_batch(self, batch: Batch, deadline: float) -> None:
        def call() -> list[AzureValue]:
            results = self._clients.query_batch(batch, self.cfg.lookback_seconds)
            return parse.newest_points(batch, results, time.time())

        self._cache.store_batch(batch, self._gate.call("metrics", call, deadline))

    def _run_query(self, query: LogQuery, deadline: float) -> tuple[LogValue, ...]:
        def call() -> tuple[LogsQueryResult | LogsQueryPartialResult, list[LogsTable] | None]:
            result = self._clients.query_logs(query)
            return result, parse.log_tables(result)

        result, tables = self._gate.call("logs", call, deadline)
        if tables is None:
            raise CallFailedError("client_error", parse.partial_error(result))
        return parse.log_rows(query, tables)

    def _scrub(self, text: str) -> str:
        return scrub(text, self.cfg.client_secret)

    def _log_changes(self, failures: Sequence[Failure]) -> None:
        """Log each failure when it starts or changes kind, not on every refresh; sign-in
        failures once for the whole collector, as they break every call alike."""
        auth = [f for f in failures if f[1] == "auth_error"]
        if change := self._signing_in.update("sign-in", bool(auth)):
            if change.now:
                log.warning("Azure sign-in or authorization failed", extra={"cause": auth[0][2]})
            else:
                log.info("Azure sign-in works again")
        now = {what: outcome for what, outcome, _ in failures if outcome != "auth_error"}
        changed = {
            what for what in self._calls | now.keys() if self._failing.update(what, now.get(what))
        }
        for what, outcome, message in failures:
            if what in changed and outcome != "auth_error":
                log.warning(
                    "Azure Monitor call failed",
                    extra={"call": what, "outcome": outcome, "error": message},
                )
        for what in changed - now.keys():
            log.info("Azure Monitor call works again", extra={"call": what})


def _query_call(query: LogQuery) -> str:
    return f"log query {query.name}"


def _preset_call(preset: LogPreset) -> str:
    return f"log preset {preset.name}"
