"""What a KQL log query may turn into, through the real SDK and the fake Azure: the column types
arrive from the wire, and one query over its bounds fails alone (tests/test_hostile.py covers the
parsing itself)."""

# The fixtures come from tests/helpers/azure.py: their parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pixcrawler_exporter.collectors.azure.collector import AzureCollector
from pixcrawler_exporter.collectors.azure.model import parse_log_queries
from pixcrawler_exporter.collectors.azure.parse import MAX_LOG_ROWS
from tests.azure_fake import WORKSPACE, FakeAzure
from tests.helpers.azure import fake, make, wait_for  # noqa: F401 - fixtures


@pytest.mark.parametrize("column", ["timestamp", "itemId", "operation_Id", "operation_ParentId"])
def test_app_insights_per_record_label_columns_are_refused_at_load(column: str) -> None:
    raw = [{"name": "by_op", "query": "requests", "label_columns": ["cloud_RoleName", column]}]
    with pytest.raises(ValueError, match="a list of log queries") as err:
        parse_log_queries(raw)
    assert "item 1 (by_op)" in str(err.value)
    assert f"label column {column!r} differs for every record" in str(err.value)


def _table(columns: list[tuple[str, str]], rows: list[list[Any]]) -> list[dict[str, Any]]:
    cols = [{"name": n, "type": t} for n, t in columns]
    return [{"name": "PrimaryResult", "columns": cols, "rows": rows}]


def test_a_query_over_its_bounds_fails_alone(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    keyed = [("k", "string"), ("value", "long")]
    fake.tables["many"] = _table(keyed, [[f"k{i}", i] for i in range(MAX_LOG_ROWS + 1)])
    fake.tables["enough"] = _table(keyed, [[f"k{i}", i] for i in range(MAX_LOG_ROWS)])
    fake.tables["stamped"] = _table(
        [("at", "datetime"), ("value", "long")], [["2026-01-01T00:00:00Z", 1]]
    )
    queries = parse_log_queries(
        [
            {"name": "many", "query": "many", "label_columns": ["k"]},
            {"name": "enough", "query": "enough", "label_columns": ["k"]},
            {"name": "stamped", "query": "stamped", "label_columns": ["at"]},
        ]
    )
    collector = make([], workspace_id=WORKSPACE, logs_endpoint=fake.url, log_queries=queries)
    wait_for("a refresh", lambda: collector.refreshes >= 1)
    reading = collector.read()
    error = reading.error or ""
    assert not reading.up
    assert f"log query many: more than {MAX_LOG_ROWS} rows" in error
    assert "log query stamped: label column 'at' holds datetime values" in error
    assert "log query enough" not in error
    assert {lv.query for lv in reading.log_values} == {"enough"}
    assert len(reading.log_values) == MAX_LOG_ROWS
