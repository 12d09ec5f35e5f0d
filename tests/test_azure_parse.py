"""Turning Azure's answers into values without a server: the SDK's own answer objects, made here."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest
from azure.monitor.query import LogsQueryPartialResult, LogsQueryResult, LogsTable
from azure.monitor.querymetrics import Metric, MetricsQueryResult, MetricValue, TimeSeriesElement

from pixcrawler_exporter.collectors.azure import parse
from pixcrawler_exporter.collectors.azure.model import parse_log_queries, parse_resources
from pixcrawler_exporter.collectors.azure.parse import CallFailedError, MalformedError
from pixcrawler_exporter.collectors.azure.plan import MAX_INSTANCES, Batch, plan_batches

SUB = "00000000-0000-0000-0000-000000000001"


def rid(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Web/serverfarms/{name}"


def batch(*resources: Any) -> Batch:
    (only,), _ = plan_batches(parse_resources(list(resources)), "https://example.invalid")
    return only


def point(minute: int, **values: float | None) -> MetricValue:
    return MetricValue(timestamp=datetime(2026, 1, 1, 12, minute, tzinfo=UTC), **values)


def metric(
    resource: str, name: str, points: list[MetricValue], unit: str | None = "Percent"
) -> Metric:
    return Metric(
        id=f"{resource}/providers/Microsoft.Insights/metrics/{name}",
        type="Microsoft.Insights/metrics",
        name=name,
        unit=unit,
        timeseries=[TimeSeriesElement(data=points)],
        display_description="",
    )


def result(*metrics: Metric) -> MetricsQueryResult:
    return MetricsQueryResult(timespan="PT10M", metrics=list(metrics))


# --- platform metrics ----------------------------------------------------------------------


def test_newest_non_null_point_of_each_asked_metric() -> None:
    one, two = rid("one"), rid("two")
    asked = batch(
        {
            "id": one,
            "metrics": ["CpuPercentage", {"name": "BytesReceived", "aggregation": "Total"}],
        },
        {"id": two, "metrics": ["CpuPercentage"]},
    )
    results = [
        result(
            metric(
                one.upper(),
                "cpupercentage",
                [point(1, average=10.0), point(3, average=30.0), point(4, average=None)],
            ),
            metric(one, "BytesReceived", [point(2, total=5.0, average=1.0)], unit=None),
        ),
        result(
            metric(two, "CpuPercentage", [point(1, average=math.nan)]),
            metric(two, "BytesReceived", [point(1, total=9.0)]),  # asked for its neighbour only
            metric(rid("three"), "CpuPercentage", [point(1, average=1.0)]),  # not asked
        ),
    ]
    got = parse.newest_points(asked, results, now=1234.0)
    assert [(v.resource, v.metric, v.aggregation, v.unit, v.value) for v in got] == [
        (one, "CpuPercentage", "Average", "Percent", 30.0),
        (one, "BytesReceived", "Total", "Unspecified", 5.0),
    ]
    assert got[0].timestamp == datetime(2026, 1, 1, 12, 3, tzinfo=UTC).timestamp()
    assert {v.fetched for v in got} == {1234.0}
    assert got[0].resource_type == "Microsoft.Web/serverfarms"


def test_each_instance_has_its_newest_point_and_only_the_busiest_are_kept() -> None:
    plan = rid("plan")
    asked = batch({"id": plan, "metrics": ["MemoryPercentage"]})
    assert asked.by_instance
    # Instances report at different minutes: each keeps its own newest point.
    series = [
        TimeSeriesElement(
            metadata_values={"instance": f"w{i:02}"},
            data=[point(1, average=float(i)), point(2 + i % 2, average=float(i + 1))],
        )
        for i in range(MAX_INSTANCES + 5)
    ]
    found = Metric(
        id=f"{plan}/providers/Microsoft.Insights/metrics/MemoryPercentage",
        type="Microsoft.Insights/metrics",
        name="MemoryPercentage",
        unit="Percent",
        timeseries=series,
        display_description="",
    )
    got = parse.newest_points(asked, [result(found)], now=0.0)
    # Capped at the busiest MAX_INSTANCES, in instance order; the five idlest are dropped.
    assert [v.instance for v in got] == [f"w{i:02}" for i in range(5, MAX_INSTANCES + 5)]
    assert [v.value for v in got] == [float(i + 1) for i in range(5, MAX_INSTANCES + 5)]
    assert got[0].timestamp == datetime(2026, 1, 1, 12, 3, tzinfo=UTC).timestamp()
    assert got[1].timestamp == datetime(2026, 1, 1, 12, 2, tzinfo=UTC).timestamp()


# Shapes the SDK would not build from the documented JSON: what an API change could bring.
NO_RESOURCE = metric(rid("a"), "CpuPercentage", [])
NO_RESOURCE.id = "/elsewhere"
NO_SERIES: Any = SimpleNamespace(
    id=rid("a") + "/providers/Microsoft.Insights/metrics/None", name=None
)


@pytest.mark.parametrize(
    ("results", "words"),
    [
        ([result(NO_RESOURCE)], "metric id '/elsewhere' names no resource"),
        ([SimpleNamespace(values=[])], "unexpected answer shape: AttributeError"),
        ([result(NO_SERIES)], "unexpected answer shape"),
    ],
)
def test_an_answer_of_another_shape_is_malformed(results: list[Any], words: str) -> None:
    asked = batch({"id": rid("a"), "metrics": ["None"]})
    with pytest.raises(MalformedError, match=words):
        parse.newest_points(asked, results, now=0.0)


# --- log queries ---------------------------------------------------------------------------


def table(columns: list[str], rows: list[list[Any]]) -> LogsTable:
    types = ["string" if c == "role" else "real" for c in columns]
    return LogsTable(name="PrimaryResult", columns=columns, columns_types=types, rows=rows)


def test_log_rows_become_labelled_values() -> None:
    (query,) = parse_log_queries([{"name": "jobs", "query": "q", "label_columns": ["role"]}])
    rows = parse.log_rows(
        query,
        [table(["role", "value"], [["crawler", 3], [None, "2.5"], ["idle", None]]), table([], [])],
    )
    assert [(r.query, r.labels, r.value) for r in rows] == [
        ("jobs", (("role", "crawler"),), 3.0),
        ("jobs", (("role", ""),), 2.5),
    ]
    assert parse.log_rows(query, []) == ()


@pytest.mark.parametrize(
    ("tables", "words"),
    [
        ([table(["value"], [[1]])], "column 'role' is not in the result (columns: value)"),
        ([table(["role", "value"], [["a", "many"]])], "holds 'many', not a number"),
        ([table(["role", "value"], [["a", 1], ["a", 2]])], "same label columns {'role': 'a'}"),
    ],
)
def test_rows_that_cannot_be_values_are_the_query_s_client_error(
    tables: list[LogsTable], words: str
) -> None:
    (query,) = parse_log_queries([{"name": "jobs", "query": "q", "label_columns": ["role"]}])
    with pytest.raises(CallFailedError) as err:
        parse.log_rows(query, tables)
    assert err.value.outcome == "client_error" and words in str(err.value)


def test_log_tables_only_of_a_full_answer() -> None:
    tables = [table(["value"], [[1]])]
    assert parse.log_tables(LogsQueryResult(tables=tables)) is tables
    error = SimpleNamespace(message="query ran too long")
    partial = LogsQueryPartialResult(partial_data=tables, partial_error=error)
    assert parse.log_tables(partial) is None
    assert parse.partial_error(partial) == "partial result: query ran too long"


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        (None, None),
        ({}, None),
        ({"Retry-After": "12"}, 12.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "86400"}, 3600.0),
        ({"Retry-After": "soon"}, None),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"x-ms-retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "x", "Retry-After": "4"}, 4.0),
        (
            {"Retry-After": format_datetime(datetime.fromtimestamp(1_000_030, UTC), usegmt=True)},
            30.0,
        ),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(999_000, UTC), usegmt=True)}, 0.0),
    ],
)
def test_retry_after(headers: dict[str, str] | None, seconds: float | None) -> None:
    assert parse.retry_after(headers, now=1_000_000.0) == seconds


def test_ratelimit_remaining_by_scope() -> None:
    headers = {
        "x-ms-ratelimit-remaining-subscription-reads": "11999",
        "X-MS-RateLimit-Remaining-Tenant-Reads": "42",
        "x-ms-ratelimit-remaining-broken": "n/a",
        "content-type": "application/json",
    }
    assert parse.ratelimit_remaining(headers) == {
        "subscription-reads": 11999.0,
        "tenant-reads": 42.0,
    }
