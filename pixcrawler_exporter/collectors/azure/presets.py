"""Seed 002's App Insights telemetry as shipped log queries, each turned on by name and exported
as a gauge of its own.

Seed 002's backend sends ``job_completed`` events, an ``images_processed`` metric, exceptions and
``Azure Blob`` dependency calls to Application Insights, with 10 % sampling. Two things follow
for a query that counts them:

* **Sampling.** A kept record stands for ``ItemCount`` records (10 at 10 %), so a count is
  ``sum(ItemCount)``; ``count()`` reads 10 times low. Custom metrics are never sampled: for them
  ``ItemCount`` is the number of measurements one record aggregates, and ``Sum`` already adds
  them up, so ``images_processed`` sums ``Sum``.
* **Table names.** ``azure.workspace_id`` names the Log Analytics workspace behind Application
  Insights, where the tables are ``AppEvents``, ``AppMetrics``, ``AppExceptions`` and
  ``AppDependencies`` with PascalCase columns; seed 002's ``customEvents``, ``itemCount``, ...
  are the names of the Application Insights resource's own query scope, which a workspace query
  does not know.

Kept apart from the collector (which needs the Azure SDK), so the configuration loads without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pixcrawler_exporter.collectors.azure.model import DEFAULT_LOG_TIMESPAN_SECONDS, LogQuery

# Every preset counts over the last hour: each refresh asks for the hour up to now.
PRESET_TIMESPAN_SECONDS = DEFAULT_LOG_TIMESPAN_SECONDS


@dataclass(frozen=True)
class LogPreset:
    name: str  # what azure.log_presets lists
    metric: str  # the gauge it is exported as
    help: str
    query: str  # KQL with one row and a "value" column

    @property
    def log_query(self) -> LogQuery:
        return LogQuery(self.name, self.query, "value", (), PRESET_TIMESPAN_SECONDS)


LOG_PRESETS = (
    LogPreset(
        "job_completed",
        "pixcrawler_azure_jobs_completed",
        "Crawl jobs completed in the last hour: App Insights job_completed events (seed 002), "
        "each weighted by its ItemCount so that sampling does not undercount them.",
        'AppEvents\n| where Name == "job_completed"\n| summarize value = sum(ItemCount)',
    ),
    LogPreset(
        "images_processed",
        "pixcrawler_azure_images_processed",
        "Images processed in the last hour: the sum of App Insights' images_processed custom "
        "metric (seed 002); custom metrics are never sampled.",
        'AppMetrics\n| where Name == "images_processed"\n| summarize value = sum(Sum)',
    ),
    LogPreset(
        "exceptions",
        "pixcrawler_azure_exceptions",
        "Exceptions App Insights recorded in the last hour, each weighted by its ItemCount so "
        "that sampling does not undercount them.",
        "AppExceptions\n| summarize value = sum(ItemCount)",
    ),
    LogPreset(
        "blob_failures",
        "pixcrawler_azure_blob_failures",
        "Failed Azure Blob Storage calls App Insights recorded in the last hour (dependencies of "
        "type 'Azure Blob' with Success false, seed 002's uploads), weighted by ItemCount.",
        'AppDependencies\n| where DependencyType == "Azure Blob" and Success == false\n'
        "| summarize value = sum(ItemCount)",
    ),
)
BY_NAME = {p.name: p for p in LOG_PRESETS}
ACCEPTED = (
    "a list of log presets from "
    + ", ".join(BY_NAME)
    + " (comma-separated in the variable), each at most once"
)


def parse_log_presets(raw: object) -> tuple[str, ...]:
    """``azure.log_presets``: a YAML list of names, or names separated by commas. Names, not
    presets, so that --print-config writes what --config reads back."""
    if raw is None or raw == "":
        return ()
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(ACCEPTED)
    found: list[str] = []
    for name in (i.strip() for i in items):
        if name not in BY_NAME:
            raise ValueError(f"{ACCEPTED}; {name!r} is not one")
        if name in found:
            raise ValueError(f"{ACCEPTED}; {name!r} is listed twice")
        found.append(name)
    return tuple(found)


def presets(names: tuple[str, ...]) -> tuple[LogPreset, ...]:
    return tuple(BY_NAME[n] for n in names)
