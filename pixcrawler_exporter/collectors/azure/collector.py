"""Azure Monitor platform metrics and Log Analytics (App Insights) queries, from a background cache.

Azure answers in seconds and rate-limits per subscription, so no scrape ever waits for it: a
refresher thread asks every ``refresh_interval_seconds`` and ``read()`` only copies the cache.

Platform metrics come from the data-plane batch API (``metrics:getBatch`` through
azure-monitor-querymetrics' ``MetricsClient``) rather than ARM's per-resource metrics API: one
call covers up to 50 resources of one subscription, region and type, and it is throttled apart
from ARM's read budget, so the calls per hour depend on how the resources group, never on how
many there are one by one or on the scrape rate. Its price is a regional endpoint: each resource's
region (or an endpoint naming it) must be configured.

Faults: the SDK's own retry policy is off, so every HTTP call is counted and the waiting is ours
(interruptible by ``close()``): 429 closes the API until its ``Retry-After`` has passed for every
later call, refreshes included; 5xx, timeouts and connection errors are retried within the
refresh with exponential backoff and jitter while the next refresh is not due; authentication
failures and malformed answers fail the refresh at once. A failed call keeps the values it would
have replaced, which age out after ``max_age_seconds``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from pixcrawler_exporter import config
from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Desc, add
from pixcrawler_exporter.collect.registration import BuildContext
from pixcrawler_exporter.collectors.azure.model import AzureResource, LogQuery, default_resource

log = logging.getLogger(__name__)

T = TypeVar("T")

METRIC = Desc(
    "pixcrawler_azure_metric",
    "Newest value of an Azure Monitor platform metric in the lookback window, in its unit as "
    "Azure reports it (percent metrics 0-100).",
    "gauge",
    ("resource", "metric", "aggregation", "unit"),
)
METRIC_AGE = Desc(
    "pixcrawler_azure_metric_age_seconds",
    "Seconds since the time grain of the value in pixcrawler_azure_metric began (Azure's "
    "ingestion delay included).",
    "gauge",
    ("resource", "metric"),
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

OUTCOMES = (
    "success",
    "throttled",  # 429 (and Azure Monitor's 529)
    "server_error",  # other 5xx
    "timeout",
    "network_error",  # connection refused, reset, TLS
    "auth_error",  # sign-in refused, 401, 403 (no Monitoring Reader)
    "client_error",  # other 4xx: a bad resource id or KQL query
    "malformed",  # an answer that is not the documented JSON
)
_RETRIED = {"throttled", "server_error", "timeout", "network_error"}

# Batch API limits (metrics:getBatch): resource ids per call; metric names per call as for the
# metrics API.
MAX_RESOURCES_PER_CALL = 50
MAX_METRICS_PER_CALL = 20
PUBLIC_METRICS_ENDPOINT = "https://{region}.metrics.monitor.azure.com"
PUBLIC_METRICS_AUDIENCE = "https://metrics.monitor.azure.com"
_REGIONAL_HOST = re.compile(r"^[a-z0-9-]+\.(metrics\.monitor\..+)$")
_RATELIMIT_PREFIX = "x-ms-ratelimit-remaining-"
_MAX_RETRY_AFTER = 3600.0
_METRICS_INFIX = "/providers/microsoft.insights/metrics/"


@dataclass(frozen=True)
class AzureValue:
    resource: str  # the resource id as configured
    resource_type: str
    metric: str
    aggregation: str
    unit: str
    value: float
    timestamp: float  # Unix time the value's time grain began
    fetched: float  # Unix time of the refresh that returned it


@dataclass(frozen=True)
class LogValue:
    query: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class AzureReading:
    """The cache as it was at ``time``; only values fresher than ``max_age_seconds`` are in it."""

    values: tuple[AzureValue, ...]
    log_values: tuple[LogValue, ...]
    up: bool
    last_success: float | None
    requests: Mapping[str, int]
    ratelimit_remaining: Mapping[str, float]
    error: str | None  # None unless the last refresh failed: the collector is then reported failed
    time: float

    def percent(self, metric: str) -> float | None:
        """A fresh ``CpuPercentage`` or ``MemoryPercentage`` (0-100, as Azure reports it) of the
        first App Service plan configured that has one; None when there is none."""
        found = self.value(metric, "Microsoft.Web/serverfarms")
        return found.value if found is not None else None

    def value(self, metric: str, resource_type: str | None = None) -> AzureValue | None:
        """The first fresh value of ``metric``, in configuration order."""
        for v in self.values:
            if v.metric.lower() == metric.lower() and (
                resource_type is None or v.resource_type.lower() == resource_type.lower()
            ):
                return v
        return None


@dataclass(frozen=True)
class _Batch:
    endpoint: str
    resource_type: str
    resources: tuple[AzureResource, ...]
    metric_names: tuple[str, ...]
    aggregations: tuple[str, ...]

    @property
    def label(self) -> str:
        return (
            f"metrics of {len(self.resources)} {self.resource_type} resource(s) "
            f"at {urllib.parse.urlsplit(self.endpoint).netloc}"
        )


class _CallFailedError(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class _MalformedError(Exception):
    pass


class _StoppedError(Exception):
    pass


def plan_batches(
    resources: Sequence[AzureResource], endpoint_template: str | None
) -> tuple[list[_Batch], list[str]]:
    """Group resources into as few batch calls as the API allows; also the resources that
    cannot be asked (no region for a regional endpoint)."""
    template = endpoint_template or PUBLIC_METRICS_ENDPOINT
    groups: dict[tuple[str, str, str], list[AzureResource]] = {}
    problems: list[str] = []
    for res in resources:
        if "{region}" in template:
            if res.region is None:
                problems.append(
                    f"{res.id} has no region, and the metrics endpoint needs one: give the "
                    "resource a region in azure.resources, or set azure.metrics_endpoint "
                    "(PIXCRAWLER_AZURE_METRICS_ENDPOINT) to https://REGION.metrics.monitor."
                    "azure.com"
                )
                continue
            endpoint = template.replace("{region}", res.region)
        else:
            endpoint = template
        key = (res.subscription.lower(), endpoint.rstrip("/"), res.resource_type.lower())
        groups.setdefault(key, []).append(res)
    batches: list[_Batch] = []
    for (_, endpoint, _), members in groups.items():
        names: list[str] = []
        aggregations: list[str] = []
        for res in members:
            for m in res.metrics:
                if m.name.lower() not in (n.lower() for n in names):
                    names.append(m.name)
                if m.aggregation not in aggregations:
                    aggregations.append(m.aggregation)
        for i in range(0, len(members), MAX_RESOURCES_PER_CALL):
            chunk = tuple(members[i : i + MAX_RESOURCES_PER_CALL])
            for j in range(0, len(names), MAX_METRICS_PER_CALL):
                batches.append(
                    _Batch(
                        endpoint,
                        members[0].resource_type,
                        chunk,
                        tuple(names[j : j + MAX_METRICS_PER_CALL]),
                        tuple(aggregations),
                    )
                )
    return batches, problems


def metrics_audience(endpoint: str) -> str:
    """Token audience for a metrics endpoint: the regional host minus its region, so sovereign
    clouds (metrics.monitor.azure.us, ...) get theirs; anything else the public cloud's."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    match = _REGIONAL_HOST.match(host.lower())
    return f"https://{match[1]}" if match else PUBLIC_METRICS_AUDIENCE


class AzureCollector(Collector[AzureReading]):
    """Reads the cache that a background refresher keeps from Azure Monitor."""

    name = "azure"
    descs = (METRIC, METRIC_AGE, UP, LAST_SUCCESS, REQUESTS, RATELIMIT, LOG_QUERY)

    @classmethod
    def build(cls, context: BuildContext) -> AzureCollector | None:
        return cls(context.config.azure) if context.config.mode == "azure" else None

    def __init__(
        self,
        cfg: config.Azure,
        *,
        retries: int = 2,
        backoff_seconds: float = 1.0,
        timeout_seconds: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.interval = cfg.refresh_interval_seconds
        self.max_age = cfg.max_age_seconds or 3 * self.interval
        self.retries = retries
        self.backoff = backoff_seconds
        # A call must end well before the next refresh is due, and never hang the refresher.
        self.timeout = timeout_seconds or max(1.0, min(30.0, self.interval / 2))
        resources = list(cfg.resources)
        if cfg.resource_id and all(r.id.lower() != cfg.resource_id.lower() for r in resources):
            resources.insert(0, default_resource(cfg.resource_id))
        self.resources = tuple(resources)
        self.batches, self.problems = plan_batches(self.resources, cfg.metrics_endpoint)
        self.queries: tuple[LogQuery, ...] = cfg.log_queries if cfg.workspace_id else ()
        if cfg.log_queries and not cfg.workspace_id:
            self.problems.append("azure.log_queries are set but azure.workspace_id is not")
        if not self.resources and not cfg.log_queries:
            self.problems.append(
                "nothing to read: set PIXCRAWLER_AZURE_RESOURCE_ID, azure.resources or "
                "azure.log_queries"
            )
        self._order = {r.id.lower(): i for i, r in enumerate(self.resources)}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography
        # State the refresher writes and read() copies, under _lock.
        self._values: dict[tuple[str, str], AzureValue] = {}
        self._logs: dict[str, tuple[float, tuple[LogValue, ...]]] = {}
        self._up = False
        self._last_success: float | None = None
        self._error: str | None = None
        self._requests = dict.fromkeys(OUTCOMES, 0)
        self._ratelimit: dict[str, float] = {}
        # Per API ("metrics", "logs"): monotonic time before which no call may be sent.
        self._not_before: dict[str, float] = {}
        # Refresher-only state.
        self._credential: Any = None
        self._metrics_clients: dict[str, Any] = {}
        self._logs_client: Any = None
        self._failing: dict[str, str] = {}
        self._auth_failing = False
        self.refreshes = 0

    @property
    def calls_per_refresh(self) -> int:
        """Calls one refresh makes when nothing fails (README's budget formula)."""
        return len(self.batches) + len(self.queries)

    # --- the scrape side -------------------------------------------------------------------

    def read(self) -> AzureReading:
        now = time.time()
        oldest = now - self.max_age
        with self._lock:
            values = sorted(
                (v for v in self._values.values() if v.fetched >= oldest),
                key=lambda v: (self._order.get(v.resource.lower(), 0), v.metric),
            )
            logs = tuple(
                lv
                for q in self.queries
                if (entry := self._logs.get(q.name)) is not None and entry[0] >= oldest
                for lv in entry[1]
            )
            return AzureReading(
                values=tuple(values),
                log_values=logs,
                up=self._up,
                last_success=self._last_success,
                requests=dict(self._requests),
                ratelimit_remaining=dict(self._ratelimit),
                error=self._error,
                time=now,
            )

    def metrics(self, reading: AzureReading) -> Iterable[Metric]:
        metric, age, up, last, requests, ratelimit, logs = (d.family() for d in self.descs)
        for v in reading.values:
            add(metric, v.value, v.resource, v.metric, v.aggregation, v.unit)
            add(age, max(0.0, reading.time - v.timestamp), v.resource, v.metric)
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

    # --- life ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        _quiet_sdk_loggers()
        self._thread = threading.Thread(target=self._run, name="azure-refresh", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A call under way ends at its timeout; the thread is a daemon should it not.
            self._thread.join(timeout=self.timeout + 1)
        for client in [*self._metrics_clients.values(), self._logs_client, self._credential]:
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing is best effort
                    log.debug("closing an Azure client failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except _StoppedError:
                return
            except Exception as exc:  # a bug here must not end the refresher
                log.exception("Azure refresh failed")
                with self._lock:
                    self._up = False
                    self._error = self._scrub(f"refresh failed: {_message(exc)}")
            self._stop.wait(max(0.0, started + self.interval - time.monotonic()))

    # --- the refresher ---------------------------------------------------------------------

    def refresh(self) -> None:
        """One refresh: every batch and query once (with retries). Runs in the refresher."""
        deadline = time.monotonic() + self.interval
        failures = [("configuration", "config", problem) for problem in self.problems]
        if self.batches or self.queries:
            try:
                self._ensure_clients()
            except Exception as exc:  # noqa: BLE001 - a bad authority URL must not kill the thread
                failures.append(("credential", "auth_error", self._scrub(_message(exc))))
            else:
                for batch in self.batches:
                    try:
                        self._refresh_batch(batch, deadline)
                    except _CallFailedError as exc:
                        failures.append((batch.label, exc.outcome, str(exc)))
                for query in self.queries:
                    try:
                        self._refresh_query(query, deadline)
                    except _CallFailedError as exc:
                        failures.append((f"log query {query.name}", exc.outcome, str(exc)))
        # Everything that leaves the collector (reading, logs) passes here, secret removed.
        failures = [(self._scrub(w), o, self._scrub(m)) for w, o, m in failures]
        self._log_changes(failures)
        with self._lock:
            self.refreshes += 1
            self._up = not failures
            self._error = "; ".join(f"{w}: {message}" for w, _, message in failures) or None
            if not failures:
                self._last_success = time.time()

    def _ensure_clients(self) -> None:
        if self._credential is None:
            self._credential = self._make_credential()
        common: dict[str, Any] = {
            # Our loop retries, counts and waits; the SDK's would hide calls from both.
            "retry_total": 0,
            "raw_response_hook": self._on_response,
        }
        for batch in self.batches:
            if batch.endpoint not in self._metrics_clients:
                # Imported here, not at the top: the SDK takes a while to import, and local
                # mode (this module is always imported by the registry) never needs it.
                from azure.monitor.querymetrics import MetricsClient

                self._metrics_clients[batch.endpoint] = MetricsClient(
                    batch.endpoint,
                    self._credential,
                    audience=metrics_audience(batch.endpoint),
                    **common,
                )
        if self.queries and self._logs_client is None:
            from azure.monitor.query import LogsQueryClient

            kwargs = dict(common)
            if self.cfg.logs_endpoint:
                kwargs["endpoint"] = self.cfg.logs_endpoint
            self._logs_client = LogsQueryClient(self._credential, **kwargs)

    def _make_credential(self) -> Any:
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "connection_timeout": self.timeout,
            "read_timeout": self.timeout,
        }
        if cfg.authority_host:
            kwargs["authority"] = cfg.authority_host
            # Otherwise MSAL asks the public cloud to vouch for the authority: a custom one
            # (sovereign, Azure Stack, a test) fails that, and offline it cannot be reached.
            kwargs["disable_instance_discovery"] = True
        if cfg.client_secret and cfg.tenant_id and cfg.client_id:
            return ClientSecretCredential(cfg.tenant_id, cfg.client_id, cfg.client_secret, **kwargs)
        if cfg.client_id:
            kwargs["managed_identity_client_id"] = cfg.client_id
        return DefaultAzureCredential(**kwargs)

    def _refresh_batch(self, batch: _Batch, deadline: float) -> None:
        client = self._metrics_clients[batch.endpoint]
        lookback = timedelta(seconds=self.cfg.lookback_seconds)

        def call() -> list[AzureValue]:
            results = client.query_resources(
                resource_ids=[r.id for r in batch.resources],
                metric_namespace=batch.resource_type,
                metric_names=list(batch.metric_names),
                timespan=lookback,
                granularity=timedelta(minutes=1),
                aggregations=list(batch.aggregations),
                connection_timeout=self.timeout,
                read_timeout=self.timeout,
            )
            return self._newest_points(batch, results)

        found = self._call("metrics", call, deadline)
        fetched = {(v.resource.lower(), v.metric.lower()): v for v in found}
        asked = {n.lower() for n in batch.metric_names}
        with self._lock:
            for res in batch.resources:
                for m in res.metrics:
                    if m.name.lower() not in asked:
                        continue
                    key = (res.id.lower(), m.name.lower())
                    if key in fetched:
                        self._values[key] = fetched[key]
                    else:
                        # No point in the whole lookback window: Azure has nothing to say.
                        self._values.pop(key, None)

    def _newest_points(self, batch: _Batch, results: Any) -> list[AzureValue]:
        now = time.time()
        by_id = {r.id.lower(): r for r in batch.resources}
        found: list[AzureValue] = []
        try:
            for result in results:
                for metric in result.metrics:
                    metric_id = str(metric.id).lower()
                    if _METRICS_INFIX not in metric_id:
                        raise _MalformedError(f"metric id {metric.id!r} names no resource")
                    res = by_id.get(metric_id.split(_METRICS_INFIX, 1)[0])
                    if res is None:
                        continue  # a resource we did not ask for
                    wanted = next(
                        (m for m in res.metrics if m.name.lower() == str(metric.name).lower()),
                        None,
                    )
                    if wanted is None:
                        continue  # asked for a batch neighbour, not for this resource
                    newest: tuple[float, float] | None = None
                    for series in metric.timeseries:
                        for point in series.data:
                            value = getattr(point, wanted.aggregation.lower())
                            if value is None:
                                continue
                            stamp = point.timestamp.timestamp()
                            if newest is None or stamp > newest[0]:
                                newest = (stamp, float(value))
                    if newest is not None and math.isfinite(newest[1]):
                        found.append(
                            AzureValue(
                                res.id,
                                res.resource_type,
                                wanted.name,
                                wanted.aggregation,
                                str(metric.unit or "Unspecified"),
                                newest[1],
                                newest[0],
                                now,
                            )
                        )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise _MalformedError(f"unexpected answer shape: {_message(exc)}") from None
        return found

    def _refresh_query(self, query: LogQuery, deadline: float) -> None:
        from azure.monitor.query import LogsQueryStatus

        client = self._logs_client
        span = timedelta(seconds=query.timespan) if query.timespan else None

        def call() -> Any:
            result = client.query_workspace(
                self.cfg.workspace_id,
                query.query,
                timespan=span,
                connection_timeout=self.timeout,
                read_timeout=self.timeout,
            )
            try:
                status = result.status
                tables = result.tables if status == LogsQueryStatus.SUCCESS else None
            except AttributeError as exc:
                raise _MalformedError(f"unexpected answer shape: {exc}") from None
            return result if tables is None else tables

        answer = self._call("logs", call, deadline)
        if not isinstance(answer, list):
            error = getattr(answer, "partial_error", None)
            raise _CallFailedError(
                "client_error",
                self._scrub(f"partial result: {getattr(error, 'message', None) or error}"),
            )
        rows = _log_rows(query, answer)
        with self._lock:
            self._logs[query.name] = (time.time(), rows)

    def _call(self, api: str, fn: Callable[[], T], deadline: float) -> T:
        attempt = 0
        while True:
            self._wait_gate(api)
            try:
                result = fn()
            except _StoppedError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified and counted
                outcome, message, retry_after = _classify(exc)
                message = self._scrub(message)
                self._count(outcome)
                if retry_after is not None:
                    with self._lock:
                        self._not_before[api] = time.monotonic() + retry_after
                if outcome not in _RETRIED or attempt >= self.retries:
                    raise _CallFailedError(outcome, message) from None
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                if time.monotonic() + delay >= deadline:
                    raise _CallFailedError(outcome, message) from None
                if retry_after is None and self._stop.wait(delay):
                    raise _StoppedError from None
                attempt += 1
                continue
            self._count("success")
            return result

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": never less than half the exponential step, so retries stay spaced,
        # and never in lockstep with another exporter that failed at the same moment.
        step = min(self.interval, self.backoff * 2.0**attempt)
        return step / 2 + self._random.uniform(0, step / 2)

    def _wait_gate(self, api: str) -> None:
        while True:
            with self._lock:
                wait = self._not_before.get(api, 0.0) - time.monotonic()
            if wait <= 0:
                return
            if self._stop.wait(wait):
                raise _StoppedError

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._requests[outcome] += 1

    def _on_response(self, pipeline_response: Any) -> None:
        headers = pipeline_response.http_response.headers
        found: dict[str, float] = {}
        for name, value in headers.items():
            if name.lower().startswith(_RATELIMIT_PREFIX):
                try:
                    found[name.lower()[len(_RATELIMIT_PREFIX) :]] = float(value)
                except ValueError:
                    continue
        if found:
            with self._lock:
                self._ratelimit.update(found)

    def _scrub(self, text: str) -> str:
        secret = self.cfg.client_secret
        if not secret:
            return text
        # Case-blind: a secret that ends up in a host name comes back lower-cased.
        return re.sub(re.escape(secret), config.REDACTED, text, flags=re.IGNORECASE)

    def _log_changes(self, failures: Sequence[tuple[str, str, str]]) -> None:
        """Log each failure when it starts or changes kind, not on every refresh; sign-in
        failures once for the whole collector, as they break every call alike."""
        auth = [f for f in failures if f[1] == "auth_error"]
        if auth and not self._auth_failing:
            log.warning("Azure sign-in or authorization failed", extra={"cause": auth[0][2]})
        elif not auth and self._auth_failing:
            log.info("Azure sign-in works again")
        self._auth_failing = bool(auth)
        now = {what: outcome for what, outcome, _ in failures if outcome != "auth_error"}
        for what, outcome, message in failures:
            if outcome != "auth_error" and self._failing.get(what) != outcome:
                log.warning(
                    "Azure Monitor call failed",
                    extra={"call": what, "outcome": outcome, "error": message},
                )
        for what in self._failing.keys() - now.keys():
            log.info("Azure Monitor call works again", extra={"call": what})
        self._failing = now


def _log_rows(query: LogQuery, tables: Sequence[Any]) -> tuple[LogValue, ...]:
    if not tables:
        return ()
    table = tables[0]  # PrimaryResult; later tables are query statistics
    columns = list(table.columns)
    missing = [c for c in (query.value_column, *query.label_columns) if c not in columns]
    if missing:
        raise _CallFailedError(
            "client_error",
            f"column {missing[0]!r} is not in the result (columns: {', '.join(columns)})",
        )
    rows: list[LogValue] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for row in table.rows:
        raw = row[query.value_column]
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise _CallFailedError(
                "client_error", f"column {query.value_column!r} holds {raw!r}, not a number"
            ) from None
        labels = tuple((c, "" if row[c] is None else str(row[c])) for c in query.label_columns)
        if labels in seen:
            raise _CallFailedError(
                "client_error",
                f"two rows have the same label columns {dict(labels)}; add the column that "
                "tells them apart to label_columns",
            )
        seen.add(labels)
        rows.append(LogValue(query.name, labels, value))
    return tuple(rows)


def _classify(exc: BaseException) -> tuple[str, str, float | None]:
    """(outcome, message, seconds Azure asked us to wait or None)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    if isinstance(exc, _MalformedError):
        return "malformed", str(exc), None
    if isinstance(exc, DecodeError):
        return "malformed", f"the answer is not JSON: {_first_line(exc)}", None
    if isinstance(exc, ClientAuthenticationError):
        # Raised by the sign-in (no status) and for the API's own 401 (with one).
        prefix = f"HTTP {exc.status_code}: " if exc.status_code else ""
        return "auth_error", prefix + _first_line(exc), None
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return "timeout", _first_line(exc), None
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return "network_error", _first_line(exc), None
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        retry_after = _retry_after(exc.response)
        message = f"HTTP {status}: {_first_line(exc)}"
        if status in (429, 529):
            return "throttled", message, retry_after
        if status >= 500:
            return "server_error", message, retry_after
        if status in (401, 403):
            return "auth_error", message, None
        return "client_error", message, None
    if isinstance(exc, AttributeError | KeyError | TypeError | ValueError | IndexError):
        # The SDK walks the JSON it was given; a shape it does not expect ends up here.
        return "malformed", f"unexpected answer shape: {_message(exc)}", None
    return "network_error", _message(exc), None


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
        if (raw := headers.get(name)) is not None:
            try:
                return min(_MAX_RETRY_AFTER, max(0.0, float(raw) * scale))
            except ValueError:
                pass
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return min(_MAX_RETRY_AFTER, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(_MAX_RETRY_AFTER, max(0.0, when.timestamp() - time.time()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _quiet_sdk_loggers() -> None:
    # azure-core logs every request at INFO and azure-identity warns on every failed token
    # request; our own lines say the same once per change. Left alone when the operator asked
    # for debug output, or configured these loggers themselves.
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in ("azure", "msal"):
        sdk = logging.getLogger(name)
        if sdk.level == logging.NOTSET:
            sdk.setLevel(logging.ERROR)
