"""App Service metrics per instance: a plan is as busy as its busiest instance, not their average.

Through the real SDK against the fake Azure, which answers ``Instance eq '*'`` with one series per
instance and a query without it with the average over them, as Azure Monitor does: three
instances at 40, 45 and 95 % memory read 60 % unsplit.
"""

# The fixtures come from tests/helpers/azure.py: their parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pixcrawler_exporter.collectors.azure.collector import AzureCollector
from pixcrawler_exporter.collectors.azure.plan import ASKED_INSTANCES, MAX_INSTANCES
from tests.azure_fake import DEFAULT_INSTANCE, FakeAzure, resource_id
from tests.conftest import Exporter, parse_samples, sample
from tests.helpers.azure import PLAN, fake, make, wait_for  # noqa: F401 - fixtures
from tests.test_azure import render

SITE = resource_id("pixcrawler-api", "sites")
THREE = {"pl0sdlwk000001": 40.0, "pl0sdlwk000002": 45.0, "pl0sdlwk000003": 95.0}


def test_a_plan_reads_as_its_busiest_instance(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    fake.set_instances("MemoryPercentage", THREE)
    collector = make([PLAN], start=False)
    collector.refresh()
    reading = collector.read()
    assert reading.up, reading.error
    assert reading.percent("MemoryPercentage") == 95.0  # unsplit, Azure answers 60
    assert reading.percent("CpuPercentage") == 42.0  # the fake's one default instance
    (call,) = fake.calls("metrics")
    assert call.query["filter"] == ["Instance eq '*'"]
    samples = parse_samples(render(collector, reading))
    for instance, value in THREE.items():
        labels = {"resource": PLAN, "metric": "MemoryPercentage", "azure_instance": instance}
        assert (
            sample(
                samples, "pixcrawler_azure_metric", aggregation="Average", unit="Percent", **labels
            )
            == value
        )
        age = sample(samples, "pixcrawler_azure_metric_age_seconds", **labels)
        assert age is not None and age > 0


def test_an_instance_that_is_gone_leaves_with_the_next_refresh(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    fake.set_instances("MemoryPercentage", THREE)
    collector = make([PLAN], start=False)
    collector.refresh()
    assert collector.read().percent("MemoryPercentage") == 95.0
    # The busy instance is recycled: its figure must not stay behind as the plan's worst.
    fake.set_instances("MemoryPercentage", {"pl0sdlwk000001": 40.0, "pl0sdlwk000004": 12.0})
    collector.refresh()
    reading = collector.read()
    memory = [v for v in reading.values if v.metric == "MemoryPercentage"]
    assert sorted(v.instance for v in memory) == ["pl0sdlwk000001", "pl0sdlwk000004"]
    assert reading.percent("MemoryPercentage") == 40.0


def test_instances_past_the_cap_keep_the_busiest(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    many = {f"w{i:03}": float(i) for i in range(MAX_INSTANCES + 10)}
    fake.set_instances("MemoryPercentage", many)
    collector = make([{"id": PLAN, "metrics": ["MemoryPercentage"]}], start=False)
    collector.refresh()
    reading = collector.read()
    # The fake honours top (10 by default): all 40 arrive only because top was asked for, so
    # the busiest are kept rather than the first listed.
    assert fake.calls("metrics")[0].query["top"] == [str(ASKED_INSTANCES)]
    assert len(reading.values) == MAX_INSTANCES
    assert {v.instance for v in reading.values} == {
        f"w{i:03}" for i in range(10, MAX_INSTANCES + 10)
    }
    assert reading.percent("MemoryPercentage") == MAX_INSTANCES + 9


def test_the_split_costs_no_call_and_a_metric_without_instances_gets_its_own(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    fake.add_resource(SITE, server_farm_id=PLAN)
    fake.add_resource(PLAN)
    # README's budget: plan + web app with their default metrics are 2 calls per refresh.
    collector = make([PLAN, SITE], start=False)
    assert collector.calls_per_refresh == 2
    collector.refresh()
    assert collector.read().up, collector.read().error
    calls = fake.calls("metrics")
    assert len(calls) == 2 and all(c.query["filter"] == ["Instance eq '*'"] for c in calls)
    # FileSystemUsage has no Instance dimension: split, Azure refuses the whole call, so it is
    # asked apart (the fake answers such a split with Azure's 400).
    fake.reset()
    listed = {"id": SITE, "metrics": ["Requests", "FileSystemUsage"]}
    collector = make([PLAN, listed], start=False)
    assert collector.calls_per_refresh == 3
    collector.refresh()
    reading = collector.read()
    assert reading.up, reading.error
    site_calls = [c for c in fake.calls("metrics") if "sites" in c.query["metricnamespace"][0]]
    assert sorted((c.query["metricnames"][0], "filter" in c.query) for c in site_calls) == [
        ("FileSystemUsage", False),
        ("Requests", True),
    ]
    whole = [v for v in reading.values if v.metric == "FileSystemUsage"]
    assert [v.instance for v in whole] == [""]


@pytest.mark.slow
def test_one_instance_near_its_limit_raises_the_memory_status_and_alert_figure(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    fake.set_instances("MemoryPercentage", THREE)
    fake.set_value("CpuPercentage", 12.5)
    exporter = exporter_factory(env=fake.exporter_env(PLAN))

    def status() -> dict[str, Any]:
        return json.loads(exporter.get("/status")[2])  # type: ignore[no-any-return]

    # Until Azure's first answer the container's own figure stands (far below 60 %).
    wait_for("the plan's figure", lambda: status()["metrics"]["memory_pct"] >= 60, 20)
    doc = status()
    assert doc["metrics"]["memory_pct"] == 95.0 and doc["statuses"]["memory"] == "ALERT"
    assert doc["statuses"]["cpu"] == "OK"
    samples = exporter.scrape()
    # The figure the shipped PixCrawlerMemoryUsageCritical alert reads (>= 0.9).
    assert sample(samples, "pixcrawler_resource_usage_ratio", resource="memory") == 0.95
    assert sample(samples, "pixcrawler_resource_status", resource="memory") == 2
    cpu = {"resource": PLAN, "metric": "CpuPercentage", "azure_instance": DEFAULT_INSTANCE}
    assert sample(samples, "pixcrawler_azure_metric", aggregation="Average", unit="Percent", **cpu)
