"""Seed 002's App Insights telemetry as shipped log presets, through the real SDK and the fake
Log Analytics, which runs each preset's KQL over sampled records a test writes (10 % sampling:
each kept record has ItemCount 10)."""

# The fixtures come from tests/helpers/azure.py: their parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pixcrawler_exporter import config
from pixcrawler_exporter.collectors.azure.collector import AzureCollector
from pixcrawler_exporter.collectors.azure.model import parse_log_queries
from pixcrawler_exporter.collectors.azure.plan import plan
from pixcrawler_exporter.collectors.azure.presets import LOG_PRESETS
from pixcrawler_exporter.collectors.azure.settings import AzureSettings
from tests.azure_fake import WORKSPACE, FakeAzure
from tests.conftest import Exporter, parse_samples, sample
from tests.helpers.azure import PLAN, fake, make, wait_for  # noqa: F401 - fixtures
from tests.test_azure import render

ALL = tuple(p.name for p in LOG_PRESETS)
SAMPLED = 10  # ItemCount of a record kept at 10 % sampling


def logs(fake: FakeAzure, **fields: Any) -> dict[str, Any]:
    return {"resources": [], "workspace_id": WORKSPACE, "logs_endpoint": fake.url, **fields}


def test_each_preset_counts_sampled_records_by_their_item_count(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    job = {"Name": "job_completed", "ItemCount": SAMPLED}
    fake.add_log_rows("AppEvents", [job] * 10 + [{"Name": "job_started", "ItemCount": SAMPLED}] * 5)
    # Custom metrics are never sampled; ItemCount is how many measurements a record adds up.
    fake.add_log_rows(
        "AppMetrics",
        [
            {"Name": "images_processed", "Sum": 120.0, "ItemCount": 1},
            {"Name": "images_processed", "Sum": 80.0, "ItemCount": 1},
            {"Name": "images_processed", "Sum": 50.0, "ItemCount": 2},
            {"Name": "storage_upload_size_mb", "Sum": 999.0, "ItemCount": 1},
        ],
    )
    fake.add_log_rows(
        "AppExceptions", [{"ExceptionType": "TimeoutError", "ItemCount": SAMPLED}] * 4
    )
    blob = {"DependencyType": "Azure Blob", "Name": "azure_blob_upload"}
    fake.add_log_rows(
        "AppDependencies",
        [{**blob, "Success": False, "ItemCount": SAMPLED}] * 10
        + [{**blob, "Success": True, "ItemCount": SAMPLED}] * 3
        + [{"DependencyType": "HTTP", "Success": False, "ItemCount": SAMPLED}] * 2,
    )
    # The same records counted the way seed 002 counts them, for comparison.
    unweighted = parse_log_queries(
        [
            {
                "name": "unweighted",
                "query": 'AppEvents | where Name == "job_completed" | summarize value = count()',
            }
        ]
    )
    collector = make(**logs(fake, log_presets=ALL, log_queries=unweighted), start=False)
    assert collector.calls_per_refresh == 5
    collector.refresh()
    reading = collector.read()
    assert reading.up, reading.error
    text = render(collector, reading)
    samples = parse_samples(text)
    assert sample(samples, "pixcrawler_azure_log_query_value", query="unweighted") == 10
    assert sample(samples, "pixcrawler_azure_jobs_completed") == 100
    assert sample(samples, "pixcrawler_azure_images_processed") == 250
    assert sample(samples, "pixcrawler_azure_exceptions") == 40
    assert sample(samples, "pixcrawler_azure_blob_failures") == 100
    # Each a gauge of its own with its help text, not a row of the generic log query gauge.
    for preset in LOG_PRESETS:
        assert f"# HELP {preset.metric} {preset.help}\n# TYPE {preset.metric} gauge" in text
    assert {lv.query for lv in reading.log_values} == {"unweighted"}
    calls = fake.calls("logs")
    assert all(c.status == 200 for c in calls)
    assert {c.body["query"] for c in calls} >= {p.query for p in LOG_PRESETS}
    assert {c.body["timespan"] for c in calls} == {"PT3600.0S"}


def test_presets_over_no_records_read_zero_and_only_those_named_are_asked(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    collector = make(**logs(fake, log_presets=("blob_failures", "job_completed")), start=False)
    collector.refresh()
    samples = parse_samples(render(collector))
    assert sample(samples, "pixcrawler_azure_jobs_completed") == 0
    assert sample(samples, "pixcrawler_azure_blob_failures") == 0
    assert sample(samples, "pixcrawler_azure_exceptions") is None
    assert sample(samples, "pixcrawler_azure_images_processed") is None
    assert len(fake.calls("logs")) == 2


def test_a_preset_that_fails_is_named_and_the_others_still_export(
    fake: FakeAzure, make: Callable[..., AzureCollector]
) -> None:
    fake.add_log_rows("AppExceptions", [{"ExceptionType": "E", "ItemCount": SAMPLED}])
    collector = make(
        **logs(fake, log_presets=("job_completed", "exceptions")), retries=0, start=False
    )
    fake.fault("error", api="logs", times=1)
    collector.refresh()
    reading = collector.read()
    assert not reading.up and "log preset job_completed" in (reading.error or "")
    samples = parse_samples(render(collector, reading))
    assert sample(samples, "pixcrawler_azure_exceptions") == 10
    assert sample(samples, "pixcrawler_azure_jobs_completed") is None


def test_presets_are_named_in_yaml_or_the_variable(tmp_path: Path) -> None:
    env = {"PIXCRAWLER_AZURE_LOG_PRESETS": " exceptions,job_completed "}
    loaded = config.load(env, dotenv_path=tmp_path / ".env").config.source(AzureSettings)
    assert loaded.log_presets == ("exceptions", "job_completed")
    (tmp_path / "c.yml").write_text("azure:\n  log_presets: [blob_failures]\n")
    from_yaml = config.load({}, config_file=str(tmp_path / "c.yml"), dotenv_path=tmp_path / "x")
    assert from_yaml.config.source(AzureSettings).log_presets == ("blob_failures",)
    # --print-config writes the names back as YAML --config reads.
    assert "  log_presets: [blob_failures]  # file " in config.render(from_yaml)


@pytest.mark.parametrize(
    ("value", "words"),
    [("job_completed,jobs_failed", "'jobs_failed' is not one"), ("exceptions,exceptions", "twice")],
)
def test_an_unknown_or_repeated_preset_is_a_config_error(
    tmp_path: Path, value: str, words: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load({"PIXCRAWLER_AZURE_LOG_PRESETS": value}, dotenv_path=tmp_path / ".env")
    message = str(err.value)
    assert "PIXCRAWLER_AZURE_LOG_PRESETS" in message and words in message
    assert all(p.name in message for p in LOG_PRESETS)  # what is accepted


def test_presets_without_a_workspace_are_reported_not_dropped() -> None:
    planned = plan(AzureSettings(log_presets=("job_completed",)))
    assert planned.presets == ()
    assert any("azure.log_presets" in p and "workspace_id" in p for p in planned.problems)
    assert not any(p.startswith("nothing to read") for p in planned.problems)


@pytest.mark.slow
def test_an_exporter_turned_on_by_the_variable_exports_the_presets(
    fake: FakeAzure, exporter_factory: Callable[..., Exporter]
) -> None:
    fake.add_log_rows("AppEvents", [{"Name": "job_completed", "ItemCount": SAMPLED}] * 10)
    env = {
        **fake.exporter_env(PLAN),
        "PIXCRAWLER_AZURE_WORKSPACE_ID": WORKSPACE,
        "PIXCRAWLER_AZURE_LOGS_ENDPOINT": fake.url,
        "PIXCRAWLER_AZURE_LOG_PRESETS": "job_completed,exceptions",
    }
    exporter = exporter_factory(env=env)

    def exported() -> bool:
        samples = exporter.scrape()
        return (
            sample(samples, "pixcrawler_azure_jobs_completed") == 100
            and sample(samples, "pixcrawler_azure_exceptions") is not None
        )

    # Each preset is a call of its own: under load one may land a refresh after the other.
    wait_for("the presets exported", exported, timeout=20)
    samples = exporter.scrape()
    assert sample(samples, "pixcrawler_azure_exceptions") == 0
    assert sample(samples, "pixcrawler_azure_blob_failures") is None
    assert sample(samples, "pixcrawler_azure_up") == 1
