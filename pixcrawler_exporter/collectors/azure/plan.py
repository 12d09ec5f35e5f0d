"""What one refresh asks Azure: the configured resources grouped into batch calls, the log queries,
and the configuration problems that leave something unasked.

Platform metrics come from the data-plane batch API (``metrics:getBatch``): one call covers up to
50 resources of one subscription, region and type, so the calls per refresh depend on how the
resources group, never on how many there are one by one.

App Service metrics are asked per instance (``Instance eq '*'``): a plan's average over its
instances hides the one about to be recycled. The filter applies to every metric of a call, so a
metric without the Instance dimension is asked in a call of its own; the default metrics all have
it, so the split costs no call.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from pixcrawler_exporter.collectors.azure.model import (
    AzureResource,
    LogQuery,
    by_instance,
    default_resource,
)
from pixcrawler_exporter.collectors.azure.presets import LogPreset, presets
from pixcrawler_exporter.collectors.azure.settings import AzureSettings

# Batch API limits (metrics:getBatch): resource ids per call; metric names per call as for the
# metrics API.
MAX_RESOURCES_PER_CALL = 50
MAX_METRICS_PER_CALL = 20
PUBLIC_METRICS_ENDPOINT = "https://{region}.metrics.monitor.azure.com"
# Every value of the Instance dimension: one time series per App Service instance.
INSTANCE_FILTER = "Instance eq '*'"
# Instances kept per resource and metric, the busiest: App Service plans scale to 30 instances
# outside the Isolated tiers; the cap bounds the series an Isolated plan of 100 makes.
MAX_INSTANCES = 30
# Instances asked for: every one a plan can have (Isolated v2 scales to 100), so that the cap
# keeps the busiest rather than whichever Azure happens to list first.
ASKED_INSTANCES = 100


@dataclass(frozen=True)
class Batch:
    endpoint: str
    resource_type: str
    resources: tuple[AzureResource, ...]
    metric_names: tuple[str, ...]
    aggregations: tuple[str, ...]
    by_instance: bool = False  # asked with INSTANCE_FILTER: one time series per instance

    @property
    def label(self) -> str:
        split = " per instance" if self.by_instance else ""
        return (
            f"metrics of {len(self.resources)} {self.resource_type} resource(s){split} "
            f"at {urllib.parse.urlsplit(self.endpoint).netloc}"
        )

    @property
    def max_series(self) -> int:
        """Time series to ask for (the API's ``top``, 10 unless set): every instance of every
        metric, whether Azure counts them per metric or per resource."""
        return ASKED_INSTANCES * len(self.metric_names)


@dataclass(frozen=True)
class Plan:
    resources: tuple[AzureResource, ...]  # in configuration order, the env's resource first
    batches: tuple[Batch, ...]
    queries: tuple[LogQuery, ...]
    problems: tuple[str, ...]  # reported as the refresh's failure, every refresh
    presets: tuple[LogPreset, ...] = ()

    @property
    def calls_per_refresh(self) -> int:
        """Calls one refresh makes when nothing fails (README's budget formula)."""
        return len(self.batches) + len(self.queries) + len(self.presets)

    @property
    def asks_logs(self) -> bool:
        """Whether a refresh queries Log Analytics (a log query or preset)."""
        return bool(self.queries or self.presets)

    @property
    def order(self) -> dict[str, int]:
        """Each resource's position in the configuration, by lower-cased id."""
        return {r.id.lower(): i for i, r in enumerate(self.resources)}


def configured(cfg: AzureSettings) -> list[AzureResource]:
    """The resources as configured: ``resource_id`` first, then ``azure.resources``."""
    resources = list(cfg.resources)
    if cfg.resource_id and all(r.id.lower() != cfg.resource_id.lower() for r in resources):
        resources.insert(0, default_resource(cfg.resource_id))
    return resources


def plan(cfg: AzureSettings, resolved: Sequence[AzureResource] | None = None) -> Plan:
    """What to ask for the configured resources, or for ``resolved`` ones (regions and plans
    filled in from Resource Manager)."""
    resources = list(resolved) if resolved is not None else configured(cfg)
    batches, problems = plan_batches(resources, cfg.metrics_endpoint)
    queries = cfg.log_queries if cfg.workspace_id else ()
    shipped = presets(cfg.log_presets) if cfg.workspace_id else ()
    for key, asked in (("log_queries", cfg.log_queries), ("log_presets", cfg.log_presets)):
        if asked and not cfg.workspace_id:
            problems.append(
                f"azure.{key} are set but azure.workspace_id (PIXCRAWLER_AZURE_WORKSPACE_ID) is not"
            )
    if not resources and not cfg.log_queries and not cfg.log_presets:
        problems.append(
            "nothing to read: set PIXCRAWLER_AZURE_RESOURCE_ID, azure.resources, "
            "azure.log_queries or azure.log_presets"
        )
    return Plan(tuple(resources), tuple(batches), queries, tuple(problems), shipped)


def plan_batches(
    resources: Sequence[AzureResource], endpoint_template: str | None
) -> tuple[list[Batch], list[str]]:
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
    batches: list[Batch] = []
    for (_, endpoint, _), members in groups.items():
        batches.extend(_split(endpoint, members))
    return batches, problems


def _split(endpoint: str, members: Sequence[AzureResource]) -> list[Batch]:
    """One group's calls: its resources, and its metric names apart by whether they are split
    by instance, each part cut at the API's limits."""
    rtype = members[0].resource_type
    names: dict[bool, list[str]] = {True: [], False: []}
    aggregations: list[str] = []
    for res in members:
        for m in res.metrics:
            part = names[by_instance(rtype, m.name)]
            if m.name.lower() not in (n.lower() for n in part):
                part.append(m.name)
            if m.aggregation not in aggregations:
                aggregations.append(m.aggregation)
    batches: list[Batch] = []
    for i in range(0, len(members), MAX_RESOURCES_PER_CALL):
        chunk = tuple(members[i : i + MAX_RESOURCES_PER_CALL])
        for split in (True, False):
            part = names[split]
            for j in range(0, len(part), MAX_METRICS_PER_CALL):
                batches.append(
                    Batch(
                        endpoint,
                        rtype,
                        chunk,
                        tuple(part[j : j + MAX_METRICS_PER_CALL]),
                        tuple(aggregations),
                        split,
                    )
                )
    return batches
