"""Azure's answers turned into values and its failures into outcomes, without I/O.

Everything here takes what the SDK returns or raises (or any object of the same shape), so it is
tested without a server.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.errors import describe
from pixcrawler_exporter.collectors.azure.model import AzureMetric, AzureResource, LogQuery
from pixcrawler_exporter.collectors.azure.plan import MAX_INSTANCES, Batch
from pixcrawler_exporter.collectors.azure.reading import AzureValue, LogValue

if TYPE_CHECKING:
    from azure.monitor.query import LogsQueryPartialResult, LogsQueryResult, LogsTable
    from azure.monitor.querymetrics import Metric, MetricsQueryResult, TimeSeriesElement

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
RETRIED = frozenset({"throttled", "server_error", "timeout", "network_error"})

_RATELIMIT_PREFIX = "x-ms-ratelimit-remaining-"
_MAX_RETRY_AFTER = 3600.0
# Per log query, as for database queries: one series per row, so a runaway query must not
# flood /metrics.
MAX_LOG_ROWS = 10_000
# Log Analytics column types with a new value for (nearly) every row: as labels, one series each.
UNBOUNDED_TYPES = frozenset({"datetime", "guid", "dynamic"})
_METRICS_INFIX = "/providers/microsoft.insights/metrics/"


class CallFailedError(Exception):
    """A call failed for good (retries spent or not worth it); ``outcome`` is one of OUTCOMES."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class MalformedError(Exception):
    """An answer that is not of the documented shape."""


def newest_points(
    batch: Batch, results: Iterable[MetricsQueryResult], now: float
) -> list[AzureValue]:
    """The newest non-null point of each metric a resource of ``batch`` asked for; of each
    instance's, at most MAX_INSTANCES of them (the highest), when the batch is split."""
    by_id = {r.id.lower(): r for r in batch.resources}
    found: list[AzureValue] = []
    try:
        for result in results:
            for metric in result.metrics:
                metric_id = str(metric.id).lower()
                if _METRICS_INFIX not in metric_id:
                    raise MalformedError(f"metric id {metric.id!r} names no resource")
                res = by_id.get(metric_id.split(_METRICS_INFIX, 1)[0])
                if res is None:
                    continue  # a resource we did not ask for
                wanted = next(
                    (m for m in res.metrics if m.name.lower() == str(metric.name).lower()),
                    None,
                )
                if wanted is None:
                    continue  # asked for a batch neighbour, not for this resource
                found += _values(batch, res, wanted, metric, now)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedError(f"unexpected answer shape: {describe(exc)}") from None
    return found


def _values(
    batch: Batch, res: AzureResource, wanted: AzureMetric, metric: Metric, now: float
) -> list[AzureValue]:
    """One metric's newest value per instance (one value when not split), the busiest
    MAX_INSTANCES of them: the ones a status and an alert need."""
    unit = str(metric.unit or "Unspecified")
    values: list[AzureValue] = []
    for instance, series in _by_instance(batch, metric.timeseries):
        newest = _newest(series, wanted.aggregation.lower())
        if newest is None or not math.isfinite(newest[1]):
            continue
        stamp, value = newest
        values.append(
            AzureValue(
                res.id,
                res.resource_type,
                wanted.name,
                wanted.aggregation,
                unit,
                value,
                stamp,
                now,
                instance,
            )
        )
    values.sort(key=lambda v: -v.value)
    return sorted(values[:MAX_INSTANCES], key=lambda v: v.instance)


def _by_instance(
    batch: Batch, timeseries: Iterable[TimeSeriesElement]
) -> list[tuple[str, list[TimeSeriesElement]]]:
    """The time series of each instance, by its name; all of them under "" when the batch is
    not split (Azure then answers one series, already aggregated over the instances)."""
    if not batch.by_instance:
        return [("", list(timeseries))]
    found: dict[str, list[TimeSeriesElement]] = {}
    for series in timeseries:
        # Azure answers the dimension's name lower-cased ("instance"), the SDK keeps it so.
        metadata = {str(k).lower(): v for k, v in (series.metadata_values or {}).items()}
        found.setdefault(str(metadata.get("instance") or ""), []).append(series)
    return list(found.items())


def _newest(
    timeseries: Iterable[TimeSeriesElement], aggregation: str
) -> tuple[float, float] | None:
    """(time grain start, value) of the latest point that has ``aggregation``."""
    newest: tuple[float, float] | None = None
    for series in timeseries:
        for point in series.data:
            value = getattr(point, aggregation)
            if value is None:
                continue
            stamp = point.timestamp.timestamp()
            if newest is None or stamp > newest[0]:
                newest = (stamp, float(value))
    return newest


def log_tables(result: LogsQueryResult | LogsQueryPartialResult) -> list[LogsTable] | None:
    """The tables of a log query's answer; None when Azure answered only in part."""
    from azure.monitor.query import LogsQueryResult

    return result.tables if isinstance(result, LogsQueryResult) else None


def partial_error(result: LogsQueryResult | LogsQueryPartialResult) -> str:
    error = getattr(result, "partial_error", None)
    return f"partial result: {getattr(error, 'message', None) or error}"


def log_rows(query: LogQuery, tables: Sequence[LogsTable]) -> tuple[LogValue, ...]:
    """The rows of the primary table as values; CallFailedError when they cannot be."""
    if not tables:
        return ()
    table = tables[0]  # PrimaryResult; later tables are query statistics
    columns = list(table.columns)
    missing = [c for c in (query.value_column, *query.label_columns) if c not in columns]
    if missing:
        raise CallFailedError(
            "client_error",
            f"column {missing[0]!r} is not in the result (columns: {', '.join(columns)})",
        )
    if len(table.rows) > MAX_LOG_ROWS:
        raise CallFailedError(
            "client_error", f"more than {MAX_LOG_ROWS} rows; summarize them into fewer series"
        )
    types = dict(zip(columns, table.columns_types or (), strict=False))
    for column in query.label_columns:
        if types.get(column) in UNBOUNDED_TYPES:
            raise CallFailedError(
                "client_error",
                f"label column {column!r} holds {types[column]} values, a new series for "
                "nearly every row; summarize by a column of few values instead",
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
            raise CallFailedError(
                "client_error", f"column {query.value_column!r} holds {raw!r}, not a number"
            ) from None
        labels = tuple((c, "" if row[c] is None else str(row[c])) for c in query.label_columns)
        if labels in seen:
            raise CallFailedError(
                "client_error",
                f"two rows have the same label columns {dict(labels)}; add the column that "
                "tells them apart to label_columns",
            )
        seen.add(labels)
        rows.append(LogValue(query.name, labels, value))
    return tuple(rows)


def classify(exc: BaseException) -> tuple[str, str, float | None]:
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

    if isinstance(exc, MalformedError):
        return "malformed", str(exc), None
    if isinstance(exc, DecodeError):
        return "malformed", f"the answer is not JSON: {first_line(exc)}", None
    if isinstance(exc, ClientAuthenticationError):
        # Raised by the sign-in (no status) and for the API's own 401 (with one).
        prefix = f"HTTP {exc.status_code}: " if exc.status_code else ""
        return "auth_error", prefix + first_line(exc), None
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return "timeout", first_line(exc), None
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return "network_error", first_line(exc), None
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        wait = retry_after(getattr(exc.response, "headers", None))
        text = f"HTTP {status}: {first_line(exc)}"
        if status in (429, 529):
            return "throttled", text, wait
        if status >= 500:
            return "server_error", text, wait
        if status in (401, 403):
            return "auth_error", text, None
        return "client_error", text, None
    if isinstance(exc, AttributeError | KeyError | TypeError | ValueError | IndexError):
        # The SDK walks the JSON it was given; a shape it does not expect ends up here.
        return "malformed", f"unexpected answer shape: {describe(exc)}", None
    return "network_error", describe(exc), None


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After``
    (seconds or an HTTP date, against ``now``, Unix time), at most an hour; None without one."""
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
    now = time.time() if now is None else now
    return min(_MAX_RETRY_AFTER, max(0.0, when.timestamp() - now))


def ratelimit_remaining(headers: Mapping[str, str]) -> dict[str, float]:
    """Requests left per throttling scope, from Azure's ``x-ms-ratelimit-remaining-SCOPE``."""
    found: dict[str, float] = {}
    for name, value in headers.items():
        if name.lower().startswith(_RATELIMIT_PREFIX):
            try:
                found[name.lower()[len(_RATELIMIT_PREFIX) :]] = float(value)
            except ValueError:
                continue
    return found


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
