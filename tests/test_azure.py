"""The Azure Monitor collector against a fake Azure over HTTPS, with the real SDK and identity.

Nothing of the SDK is patched: MSAL signs in with the client-secret flow at the fake's authority,
``MetricsClient`` posts ``metrics:getBatch`` and ``LogsQueryClient`` posts workspace queries, all
trusting the fake's test CA through ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE``. Refresh intervals
are below the configurable minimum (5 s) so the suite stays short; the collector is built from a
``config.Azure`` made directly for that.
"""

# The fixtures come from tests/helpers/azure.py: their parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from pixcrawler_exporter import config
from pixcrawler_exporter.collectors.azure.collector import AzureCollector
from pixcrawler_exporter.collectors.azure.model import (
    AzureResource,
    default_resource,
    parse_log_queries,
    parse_resources,
)
from pixcrawler_exporter.collectors.azure.parse import OUTCOMES
from pixcrawler_exporter.collectors.azure.plan import plan_batches
from pixcrawler_exporter.collectors.azure.reading import AzureReading
from pixcrawler_exporter.collectors.azure.settings import AzureSettings
from tests.azure_fake import (
    CLIENT_SECRET,
    WORKSPACE,
    FakeAzure,
    resource_id,
)
from tests.azure_fake import DEFAULT_INSTANCE as INSTANCE
from tests.conftest import Exporter, parse_samples, sample
from tests.helpers.azure import FOUR, PLAN, fake, make, wait_for  # noqa: F401 - fixtures


def render(collector: AzureCollector, reading: AzureReading | None = None) -> str:
    got = reading if reading is not None else collector.read()

    class One:
        def collect(self) -> Any:
            return collector.metrics(got)

    reg = CollectorRegistry()
    reg.register(One())
    return generate_latest(reg).decode()


def timed_read(collector: AzureCollector) -> AzureReading:
    """read() as a scrape calls it; it must never wait for Azure."""
    start = time.perf_counter()
    reading = collector.read()
    elapsed = time.perf_counter() - start
    assert elapsed < 0.2, f"read() took {elapsed:.3f}s"
    return reading


# --- the YAML model ------------------------------------------------------------------------


def test_resource_defaults_by_type_and_natural_aggregations() -> None:
    site = resource_id("app", "sites")
    plan, app = parse_resources([PLAN, {"id": site, "region": "WestEurope"}])
    assert plan.resource_type == "Microsoft.Web/serverfarms" and plan.region is None
    assert [(m.name, m.aggregation) for m in plan.metrics] == [
        ("CpuPercentage", "Average"),
        ("MemoryPercentage", "Average"),
    ]
    assert app.region == "westeurope"
    assert {m.name: m.aggregation for m in app.metrics} == {
        "CpuTime": "Total",
        "MemoryWorkingSet": "Average",
        "Requests": "Total",
        "Http5xx": "Total",
        "HttpResponseTime": "Average",
    }
    (custom,) = parse_resources(
        [
            {
                "id": site,
                "aggregation": "maximum",
                "metrics": ["Requests", {"name": "X", "aggregation": "count"}],
            }
        ]
    )
    assert [(m.name, m.aggregation) for m in custom.metrics] == [
        ("Requests", "Maximum"),
        ("X", "Count"),
    ]
    slot = default_resource(resource_id("app", "sites") + "/slots/staging")
    assert slot.resource_type == "Microsoft.Web/sites/slots"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("not a list", ["a list of resources"]),
        (["/subscriptions/x/nope"], ["item 1", "resource id"]),
        ([PLAN, PLAN.upper()], ["item 2", "listed twice"]),
        ([{"id": PLAN, "metric": ["CpuPercentage"]}], ["item 1", "unknown key 'metric'"]),
        ([{"id": PLAN, "aggregation": "median"}], ["item 1", "'median'", "Average, Minimum"]),
        ([{"id": PLAN, "metrics": []}], ["item 1", "non-empty list"]),
        ([{"id": PLAN, "region": "West Europe"}], ["region", "westeurope"]),
        (
            [PLAN, resource_id("db", "databases").replace("Microsoft.Web", "Microsoft.Sql")],
            ["item 2", "Microsoft.Sql/databases has no default metrics", "list its metrics"],
        ),
    ],
)
def test_bad_resources_name_the_item_and_what_is_accepted(raw: Any, words: list[str]) -> None:
    with pytest.raises(ValueError, match="a list of resources") as err:
        parse_resources(raw)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"name": "x"}, ["a list of log queries"]),
        ([{"query": "T"}], ["item 1", "name"]),
        ([{"name": "a", "query": "T"}, {"name": "a", "query": "T"}], ["item 2 (a)", "twice"]),
        ([{"name": "a", "query": "T", "label_columns": ["bad-name"]}], ["'bad-name'", "label"]),
        ([{"name": "a", "query": "T", "label_columns": ["query"]}], ["'query'"]),
        ([{"name": "a", "query": "T", "timespan": "soon"}], ["timespan 'soon'", "1h"]),
        ([{"name": "a", "query": "T", "every": 5}], ["unknown key 'every'"]),
    ],
)
def test_bad_log_queries_name_the_item_and_what_is_accepted(raw: Any, words: list[str]) -> None:
    with pytest.raises(ValueError, match="a list of log queries") as err:
        parse_log_queries(raw)
    for word in words:
        assert word in str(err.value)


def test_yaml_config_round_trips_through_print_config(tmp_path: Path) -> None:
    doc = {
        "mode": "azure",
        "azure": {
            "resources": [PLAN, {"id": resource_id("app", "sites"), "region": "westeurope"}],
            "workspace_id": WORKSPACE,
            "log_queries": [
                {"name": "failed_jobs", "query": "customEvents | count", "timespan": "30m"},
                {"name": "all", "query": "q", "timespan": None, "label_columns": ["role"]},
            ],
            "log_presets": ["job_completed", "blob_failures"],
        },
    }
    (tmp_path / "c.yml").write_text(yaml.safe_dump(doc))
    loaded = config.load({}, config_file=str(tmp_path / "c.yml"), dotenv_path=tmp_path / ".env")
    azure = loaded.config.source(AzureSettings)
    assert len(azure.resources) == 2 and [q.timespan for q in azure.log_queries] == [1800, 0]
    assert azure.log_presets == ("job_completed", "blob_failures")
    # Only the azure section: other sections' round trips are their own tests' business.
    printed = yaml.safe_load(config.render(loaded))
    (tmp_path / "printed.yml").write_text(yaml.safe_dump({"azure": printed["azure"]}))
    again = config.load(
        {}, config_file=str(tmp_path / "printed.yml"), dotenv_path=tmp_path / ".env"
    )
    assert again.config.source(AzureSettings) == azure


def test_batches_group_by_subscription_region_and_type() -> None:
    def res(
        name: str, kind: str = "serverfarms", region: str = "westeurope", sub: str = "s1"
    ) -> Any:
        return {"id": resource_id(name, kind, sub), "region": region}

    raw = [res(f"p{i}") for i in range(51)]
    raw += [res("other-region", region="northeurope"), res("other-sub", sub="s2")]
    raw += [res("site", "sites")]
    batches, problems = plan_batches(parse_resources(raw), None)
    assert problems == []
    sizes = sorted((b.endpoint, b.resource_type, len(b.resources)) for b in batches)
    assert sizes == [
        ("https://northeurope.metrics.monitor.azure.com", "Microsoft.Web/serverfarms", 1),
        ("https://westeurope.metrics.monitor.azure.com", "Microsoft.Web/serverfarms", 1),
        ("https://westeurope.metrics.monitor.azure.com", "Microsoft.Web/serverfarms", 1),
        ("https://westeurope.metrics.monitor.azure.com", "Microsoft.Web/serverfarms", 50),
        ("https://westeurope.metrics.monitor.azure.com", "Microsoft.Web/sites", 1),
    ]
    # Metric names are split only past the API's limit of 20 per call.
    many = parse_resources([{"id": PLAN, "metrics": [f"M{i}" for i in range(21)]}])
    assert [len(b.metric_names) for b in plan_batches(many, "https://x")[0]] == [20, 1]


# --- batching and budget -------------------------------------------------------------------


def test_six_resources_and_four_metrics_take_one_request_per_refresh(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    plans = [resource_id(f"plan{i}") for i in range(6)]
    fake.set_value("MemoryPercentage", 73.5, plans[0])
    fake.set_value("CpuPercentage", 12.25, plans[0])
    collector = make([{"id": p, "metrics": FOUR} for p in plans])
    assert collector.calls_per_refresh == 1
    wait_for("three refreshes", lambda: collector.refreshes >= 3)
    collector.close()
    calls = fake.calls("metrics")
    assert len(calls) == collector.refreshes
    first = calls[0]
    assert first.path == f"/subscriptions/{plans[0].split('/')[2]}/metrics:getBatch"
    assert first.body == {"resourceids": plans}
    assert first.query["metricnames"] == [",".join(FOUR)]
    assert first.query["metricnamespace"] == ["Microsoft.Web/serverfarms"]
    assert fake.count("token") == 1  # the token is cached across refreshes

    assert first.query["filter"] == ["Instance eq '*'"]  # per instance, in the same call
    assert first.query["top"] == [str(100 * len(FOUR))]  # not the API's default of 10

    reading = collector.read()
    assert reading.up and reading.error is None
    # The newest non-null point: the fake's last grain is empty and older ones differ.
    assert reading.percent("MemoryPercentage") == 73.5
    assert reading.percent("CpuPercentage") == 12.25
    assert len(reading.values) == 24
    samples = parse_samples(render(collector, reading))
    labels = {"resource": plans[0], "metric": "BytesReceived", "azure_instance": INSTANCE}
    assert (
        sample(samples, "pixcrawler_azure_metric", aggregation="Total", unit="Bytes", **labels)
        == 42.0
    )
    age = sample(samples, "pixcrawler_azure_metric_age_seconds", **labels)
    assert age is not None and 60 <= age <= 200  # the fake's newest full grain is 2 minutes back
    assert sample(samples, "pixcrawler_azure_up") == 1
    assert sample(samples, "pixcrawler_azure_requests_total", outcome="success") == len(calls)
    assert (
        sample(samples, "pixcrawler_azure_ratelimit_remaining", scope="subscription-reads") == 11999
    )
    last = sample(samples, "pixcrawler_azure_last_success_timestamp_seconds")
    assert last is not None and abs(last - time.time()) < 5


@pytest.mark.slow
def test_two_hundred_scrapes_in_ten_seconds_cost_only_the_refreshes(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    collector = make(refresh_interval_seconds=2.0)
    start = time.monotonic()
    for i in range(200):
        reading = timed_read(collector)
        render(collector, reading)
        time.sleep(max(0.0, start + (i + 1) * 0.05 - time.monotonic()))
    elapsed = time.monotonic() - start
    made = fake.count("metrics")
    # One refresh at start, then one per interval: never one per scrape.
    assert made <= math.floor(elapsed / 2.0) + 1, (made, elapsed)
    assert made >= 4
    assert collector.read().up


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "outcome", "words"),
    [
        ("error", "server_error", "HTTP 500"),
        ("slow", "timeout", "timed out"),
        ("malformed", "malformed", "not JSON"),
        ("bad_shape", "malformed", "unexpected answer shape"),
        ("unauthorized", "auth_error", "HTTP 401"),
    ],
)
@pytest.mark.slow
def test_each_fault_sets_up_0_scrapes_stay_fast_and_values_age_out(
    fake: FakeAzure,
    make: Callable[..., AzureCollector],
    kind: str,
    outcome: str,
    words: str,
) -> None:
    collector = make(
        refresh_interval_seconds=0.3, max_age_seconds=1.5, timeout=0.3, retries=1, backoff=0.05
    )
    wait_for("a good refresh", lambda: collector.read().up)
    fake.fault(kind, delay=1.0)
    failed_at = time.monotonic()
    wait_for("up 0", lambda: not timed_read(collector).up)
    reading = timed_read(collector)
    assert words in (reading.error or "") and collector.name == "azure"
    assert reading.requests[outcome] >= 1
    # The cached value is still served until it is older than max_age_seconds...
    if time.monotonic() - failed_at < 1.0:
        assert reading.percent("CpuPercentage") == 42.0
    # ...and then dropped, not served as fresh.
    wait_for("values dropped", lambda: timed_read(collector).percent("CpuPercentage") is None, 4)
    samples = parse_samples(render(collector))
    assert sample(samples, "pixcrawler_azure_up") == 0
    assert not any(name == "pixcrawler_azure_metric" for name, _ in samples)
    requests = sample(samples, "pixcrawler_azure_requests_total", outcome=outcome)
    assert requests is not None and requests >= 1
    fake.fault(None)
    wait_for("recovery", lambda: timed_read(collector).percent("CpuPercentage") == 42.0)
    assert collector.read().up


@pytest.mark.slow
def test_429_retry_after_holds_back_the_next_request(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    collector = make(refresh_interval_seconds=0.3)
    wait_for("a good refresh", lambda: collector.read().up)
    fake.fault("throttle", times=1, retry_after=2)
    wait_for("throttled", lambda: collector.read().requests["throttled"] == 1)
    throttled = next(r for r in fake.calls("metrics") if r.status == 429)
    # The refresher keeps its 0.3 s rhythm for nothing else: scrapes answer from the cache.
    wait_for("up 0", lambda: not timed_read(collector).up)
    wait_for("a request after the wait", lambda: fake.calls("metrics")[-1].at > throttled.at, 5)
    after = [r for r in fake.calls("metrics") if r.at > throttled.at]
    assert after[0].at - throttled.at >= 1.95, after[0].at - throttled.at
    wait_for("up again", lambda: collector.read().up)


def test_5xx_is_retried_with_growing_jittered_backoff(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    # Refreshes run in this thread, one at a time, instead of on the refresher's clock.
    collector = make(refresh_interval_seconds=5.0, retries=2, backoff=0.2, start=False)
    collector.refresh()
    fake.reset()
    fake.fault("error", times=2)
    collector.refresh()
    calls = fake.calls("metrics")
    assert [c.status for c in calls] == [500, 500, 200]
    first_gap, second_gap = calls[1].at - calls[0].at, calls[2].at - calls[1].at
    # Equal jitter: attempt n waits between half and all of 0.2 s x 2^n.
    assert 0.09 <= first_gap <= 0.35, first_gap
    assert 0.19 <= second_gap <= 0.6, second_gap
    reading = collector.read()
    assert reading.up and reading.requests["server_error"] == 2


def test_rejected_sign_in_is_logged_once_with_its_cause_and_never_the_secret(
    fake: FakeAzure, make: Callable[..., AzureCollector], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for sdk in ("azure", "msal"):
        caplog.set_level(logging.DEBUG, logger=sdk)
    fake.reject_token = True
    collector = make(refresh_interval_seconds=0.2)
    wait_for("four refreshes", lambda: collector.refreshes >= 4)
    reading = timed_read(collector)
    assert not reading.up and "AADSTS7000215" in (reading.error or "")
    assert reading.requests["auth_error"] >= 4
    assert fake.count("metrics") == 0
    ours = [r for r in caplog.records if r.name.startswith("pixcrawler_exporter.collectors.azure")]
    failed = [r for r in ours if r.getMessage() == "Azure sign-in or authorization failed"]
    assert len(failed) == 1 and "AADSTS7000215" in failed[0].__dict__["cause"]
    fake.reject_token = False
    wait_for("signed in", lambda: collector.read().up)
    assert any(r.getMessage() == "Azure sign-in works again" for r in caplog.records)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert CLIENT_SECRET not in text
    assert CLIENT_SECRET not in render(collector) + (reading.error or "")


def test_a_failing_call_is_logged_when_it_starts_and_when_it_recovers(
    fake: FakeAzure, make: Callable[..., AzureCollector], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pixcrawler_exporter.collectors.azure")
    collector = make(retries=0, start=False)
    fake.fault("error")
    for _ in range(3):
        collector.refresh()
    fake.fault(None)
    collector.refresh()
    collector.refresh()
    ours = [r for r in caplog.records if r.name.startswith("pixcrawler_exporter.collectors.azure")]
    assert [(r.levelname, r.getMessage()) for r in ours] == [
        ("WARNING", "Azure Monitor call failed"),
        ("INFO", "Azure Monitor call works again"),
    ]
    failed, recovered = ours
    assert failed.__dict__["outcome"] == "server_error" and "HTTP 500" in failed.__dict__["error"]
    assert failed.__dict__["call"] == recovered.__dict__["call"]
    assert "serverfarms" in failed.__dict__["call"]


def test_a_secret_in_an_error_message_is_redacted(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    # Should Azure ever quote the secret back (in any case), it goes no further.
    fake.error_message = f"invalid request from {CLIENT_SECRET.upper()}"
    fake.fault("error")
    collector = make(retries=0)
    wait_for("a failed refresh", lambda: collector.refreshes >= 1)
    reading = collector.read()
    assert not reading.up and reading.error
    assert CLIENT_SECRET.upper() not in reading.error and config.REDACTED in reading.error


def test_a_region_resource_manager_cannot_give_is_reported_without_calling_azure(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    # Regional public endpoint, no region configured: Resource Manager is asked, and does not
    # know the resource (tests/test_azure_arm.py has it answer).
    collector = make(metrics_endpoint=None)
    wait_for("a refresh", lambda: collector.refreshes >= 1)
    reading = collector.read()
    assert not reading.up and "its region" in (reading.error or "")
    assert "ResourceNotFound" in (reading.error or "")
    assert fake.count("metrics") == 0


# --- log queries ---------------------------------------------------------------------------


def test_log_queries_become_labelled_values(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    fake.tables["failed"] = [
        {
            "name": "PrimaryResult",
            "columns": [{"name": "role", "type": "string"}, {"name": "value", "type": "long"}],
            "rows": [["crawler", 3], ["api", 0]],
        }
    ]
    fake.tables["dupes"] = [
        {
            "name": "PrimaryResult",
            "columns": [{"name": "n", "type": "long"}],
            "rows": [[1], [2]],
        }
    ]
    queries = parse_log_queries(
        [
            {"name": "failed_jobs", "query": "failed", "label_columns": ["role"]},
            {"name": "broken", "query": "dupes", "value_column": "n"},
        ]
    )
    collector = make(workspace_id=WORKSPACE, logs_endpoint=fake.url, log_queries=queries)
    wait_for("a refresh", lambda: collector.refreshes >= 1)
    calls = fake.calls("logs")
    assert calls[0].path == f"/v1/workspaces/{WORKSPACE}/query"
    assert calls[0].body["query"] == "failed" and calls[0].body["timespan"] == "PT3600.0S"
    samples = parse_samples(render(collector))
    assert (
        sample(samples, "pixcrawler_azure_log_query_value", query="failed_jobs", role="crawler")
        == 3
    )
    assert sample(samples, "pixcrawler_azure_log_query_value", query="failed_jobs", role="api") == 0
    reading = collector.read()
    # A query whose rows cannot be told apart is that query's error, not the others'.
    assert (
        not reading.up
        and "log query broken" in (reading.error or "")
        and "label_columns" in (reading.error or "")
    )


def test_every_outcome_is_exported_from_the_start(make: Callable[..., AzureCollector]) -> None:
    collector = make(resources=[])
    samples = parse_samples(render(collector))
    for outcome in OUTCOMES:
        assert sample(samples, "pixcrawler_azure_requests_total", outcome=outcome) is not None


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_exporter_process_scrapes_azure_without_calling_it_per_scrape(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    fake.set_value("MemoryPercentage", 61.0)
    exporter = exporter_factory(env=fake.exporter_env(PLAN))
    wait_for(
        "the first refresh",
        lambda: sample(exporter.scrape(), "pixcrawler_azure_up") == 1,
        timeout=15,
    )
    before = fake.count("metrics")
    start = time.monotonic()
    for i in range(200):
        t0 = time.perf_counter()
        samples = exporter.scrape()
        assert time.perf_counter() - t0 < 1.0
        time.sleep(max(0.0, start + (i + 1) * 0.05 - time.monotonic()))
    elapsed = time.monotonic() - start
    assert fake.count("metrics") - before <= math.floor(elapsed / 5) + 1
    labels = {"resource": PLAN, "metric": "MemoryPercentage", "azure_instance": INSTANCE}
    assert (
        sample(samples, "pixcrawler_azure_metric", aggregation="Average", unit="Percent", **labels)
        == 61.0
    )
    # A scrape while the refresher waits on a hung Azure answers at once.
    fake.fault("slow", delay=4)
    hung = fake.count("metrics")
    wait_for("a call to the hung Azure", lambda: fake.count("metrics") > hung, timeout=7)
    t0 = time.perf_counter()
    samples = exporter.scrape()
    assert time.perf_counter() - t0 < 1.0
    assert sample(samples, "pixcrawler_azure_up") == 1  # the call has not failed yet
    fake.fault(None)
    assert CLIENT_SECRET not in exporter.log()


def test_resource_type_of_the_env_resource_gets_defaults() -> None:
    res: AzureResource = default_resource(PLAN)
    assert res.metric_names == ("CpuPercentage", "MemoryPercentage")


@pytest.mark.slow
def test_azure_mode_statuses_use_the_plan_while_fresh_then_fall_back(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    import json

    fake.set_value("MemoryPercentage", 95.0)
    fake.set_value("CpuPercentage", 12.5)
    exporter = exporter_factory(
        env={**fake.exporter_env(PLAN), "PIXCRAWLER_AZURE_MAX_AGE_SECONDS": "3"}
    )

    def status() -> dict[str, Any]:
        return json.loads(exporter.get("/status")[2])  # type: ignore[no-any-return]

    wait_for("the first refresh", lambda: status()["metrics"]["memory_pct"] == 95.0, timeout=15)
    doc = status()
    assert doc["metrics"]["cpu_pct"] == 12.5
    assert doc["statuses"]["memory"] == "ALERT" and doc["statuses"]["cpu"] == "OK"
    assert sample(exporter.scrape(), "pixcrawler_resource_status", resource="memory") == 2
    # Azure stops answering: once the plan's figures are older than max_age, the container's
    # own figures decide again, and the log says so.
    fake.fault("error")
    wait_for("the fallback", lambda: status()["metrics"]["memory_pct"] != 95.0, timeout=15)
    doc = status()
    assert 0 < doc["metrics"]["memory_pct"] < 95.0
    assert doc["statuses"]["memory"] == "OK"
    assert "no fresh Azure Monitor MemoryPercentage" in exporter.log()
    fake.fault(None)
