"""Seed 001's Azure setup as written: one resource id, no region, a web app rather than its plan,
KQL gauges as fresh as their refresh. An exporter process against the fake Azure, which answers
Resource Manager, Azure Monitor and Log Analytics as Azure does."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.azure_fake import DEFAULT_INSTANCE, WORKSPACE, FakeAzure, resource_id, start_fake
from tests.conftest import Exporter, Samples, sample
from tests.helpers.wait import wait_until

PLAN = resource_id("pixcrawler-plan")
SITE = resource_id("pixcrawler-api", "sites")


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeAzure]:
    server = start_fake(tmp_path)
    yield server
    server.stop()


def _env(fake: FakeAzure, resource: str, **extra: str) -> dict[str, str]:
    env = fake.exporter_env(resource)
    # Regional, as the public endpoint is: the region must be known to build the URL.
    env["PIXCRAWLER_AZURE_METRICS_ENDPOINT"] = fake.url + "/regions/{region}"
    env["PIXCRAWLER_AZURE_ARM_ENDPOINT"] = fake.url
    env.update(extra)
    return env


def _until(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    return wait_until(what, check, timeout)


def _percent(samples: Samples, resource: str, metric: str) -> float | None:
    return sample(
        samples,
        "pixcrawler_azure_metric",
        resource=resource,
        metric=metric,
        aggregation="Average",
        unit="Percent",
        azure_instance=DEFAULT_INSTANCE,
    )


def _health(exp: Exporter) -> tuple[int, dict[str, Any]]:
    code, _, body = exp.get("/health")
    return code, json.loads(body)


def _azure_up(exp: Exporter) -> Samples | None:
    samples = exp.scrape()
    return samples if sample(samples, "pixcrawler_azure_up") == 1 else None


def test_resource_id_alone_finds_its_region_through_resource_manager(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    fake.add_resource(PLAN, location="West Europe")
    fake.set_value("MemoryPercentage", 61.0)
    exp = exporter_factory(env=_env(fake, PLAN))
    samples = _until("a successful Azure refresh", lambda: _azure_up(exp))
    assert _percent(samples, PLAN, "MemoryPercentage") == 61.0
    code, health = _health(exp)
    assert code == 200 and health["sources"]["azure"]["healthy"], health
    # The metrics call went to the region ARM named ("West Europe" is westeurope).
    assert all(c.path.startswith("/regions/westeurope/") for c in fake.calls("metrics"))
    arm = fake.calls("arm")
    assert arm and arm[0].path.lower() == PLAN.lower()
    # Regions do not change: looked up once, not on every refresh.
    _until("a second refresh", lambda: len(fake.calls("metrics")) >= 2, timeout=15)
    assert len(fake.calls("arm")) == len(arm)


def test_a_resource_resource_manager_does_not_know_is_reported(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(env=_env(fake, PLAN))  # never added: ARM answers 404
    _, health = _until(
        "/health naming the lookup",
        lambda: (
            (h := _health(exp))[0] == 503 and "region" in h[1]["sources"]["azure"]["detail"] and h
        ),
    )
    detail = health["sources"]["azure"]["detail"]
    assert PLAN in detail and "ResourceNotFound" in detail, detail
    assert fake.count("metrics") == 0


def test_a_web_app_reads_cpu_and_memory_of_its_app_service_plan(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    fake.add_resource(SITE, server_farm_id=PLAN)
    fake.add_resource(PLAN)
    fake.set_value("MemoryPercentage", 92.0, PLAN)
    fake.set_value("CpuPercentage", 30.0, PLAN)
    exp = exporter_factory(env=_env(fake, SITE))
    samples = _until("a successful Azure refresh", lambda: _azure_up(exp))
    assert _percent(samples, PLAN, "MemoryPercentage") == 92.0
    doc = json.loads(exp.get("/status")[2])
    assert doc["metrics"]["memory_pct"] == 92.0 and doc["statuses"]["memory"] == "ALERT"
    assert doc["metrics"]["cpu_pct"] == 30.0
    assert sample(samples, "pixcrawler_resource_usage_ratio", resource="memory") == 0.92
    # The site's own metrics are still read, and no plan metric was asked of the site.
    assert any(
        name == "pixcrawler_azure_metric" and ("resource", SITE) in labels
        for name, labels in samples
    )
    assert all(c.status == 200 for c in fake.calls("metrics"))


def test_a_web_app_without_a_plan_says_which_metric_is_missing(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    fake.add_resource(SITE)  # no serverFarmId in what ARM answers
    exp = exporter_factory(env=_env(fake, SITE))
    _, health = _until(
        "/health naming the missing metric",
        lambda: (
            (h := _health(exp))[0] == 503
            and "MemoryPercentage" in h[1]["sources"]["azure"]["detail"]
            and h
        ),
    )
    detail = health["sources"]["azure"]["detail"]
    assert SITE in detail and "serverFarmId" in detail, detail
    _until("the log line", lambda: "MemoryPercentage" in exp.log() and SITE in exp.log())


def test_log_queries_ask_log_analytics_not_to_answer_from_its_cache(
    fake: FakeAzure, tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    table = {
        "name": "PrimaryResult",
        "columns": [{"name": "value", "type": "long"}],
        "rows": [[3]],
    }
    fake.tables["failed"] = [table]
    cfg = tmp_path / "exporter.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "azure": {
                    "workspace_id": WORKSPACE,
                    "logs_endpoint": fake.url,
                    "log_queries": [{"name": "failed_chunks", "query": "failed"}],
                }
            }
        )
    )
    fake.add_resource(PLAN)
    exp = exporter_factory("--config", str(cfg), env=_env(fake, PLAN))

    def value() -> float | None:
        return sample(exp.scrape(), "pixcrawler_azure_log_query_value", query="failed_chunks")

    _until("the first KQL value", lambda: value() == 3)
    fake.tables["failed"] = [{**table, "rows": [[7]]}]
    # Within two refreshes (5 s each), not Log Analytics' 2-minute cache.
    _until("the new KQL value", lambda: value() == 7, timeout=12)
    assert all(c.headers.get("cache-control") == "no-cache" for c in fake.calls("logs"))
