"""What Azure Resource Manager knows and the configuration may not say: a resource's region (the
metrics endpoint is regional) and the App Service plan a web app runs on.

Seed 001 configures one resource id and nothing else; seed 000's example is a web app
(``Microsoft.Web/sites``), whose CPU and memory percentages are its plan's metrics, not its own.
So a resource without a region is looked up, and a web app is looked up for its ``serverFarmId``,
whose plan is then read as well. Answers are kept for the process's life (a resource does not
change region; moving a site to another plan is rare enough for a restart); a lookup that fails
is tried again on the next refresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pixcrawler_exporter.collectors.azure.model import AzureResource, default_resource
from pixcrawler_exporter.collectors.azure.parse import CallFailedError, MalformedError

PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
# Resource Manager wants an api-version its provider knows for GET {resource id}.
API_VERSIONS = {"microsoft.web": "2022-03-01"}
DEFAULT_API_VERSION = "2021-04-01"
_WEB_APPS = frozenset({"microsoft.web/sites", "microsoft.web/sites/slots"})
PLAN_METRICS = "CpuPercentage and MemoryPercentage"


@dataclass(frozen=True)
class ArmInfo:
    region: str  # as the metrics endpoint spells it: "westeurope", never "West Europe"
    server_farm_id: str | None  # a web app's App Service plan


# (what was called, outcome, message), as the collector reports a refresh's failures.
Failure = tuple[str, str, str]
Lookup = Callable[[str], ArmInfo]


@dataclass(frozen=True)
class Resolution:
    resources: tuple[AzureResource, ...]  # to plan: regions filled in, web apps' plans added
    failures: tuple[Failure, ...]
    complete: bool  # nothing left to look up: no need to ask again


def api_version(resource_id: str) -> str:
    namespace = resource_id.split("/providers/", 1)[-1].split("/", 1)[0].lower()
    return API_VERSIONS.get(namespace, DEFAULT_API_VERSION)


def arm_info(doc: Mapping[str, object]) -> ArmInfo:
    """The parts of Resource Manager's answer that matter here; MalformedError otherwise."""
    location = doc.get("location")
    if not isinstance(location, str) or not location.strip():
        raise MalformedError("Resource Manager's answer has no location")
    properties = doc.get("properties")
    farm = properties.get("serverFarmId") if isinstance(properties, Mapping) else None
    return ArmInfo(location.replace(" ", "").lower(), farm if isinstance(farm, str) else None)


def needs_lookup(res: AzureResource, regional: bool) -> bool:
    return (regional and res.region is None) or is_web_app(res)


def is_web_app(res: AzureResource) -> bool:
    return res.resource_type.lower() in _WEB_APPS


def resolve(resources: Sequence[AzureResource], regional: bool, lookup: Lookup) -> Resolution:
    """``resources`` with what Resource Manager says; ``regional``: the metrics endpoint needs
    each resource's region. A resource whose region stays unknown is left out (the failure says
    why); a web app without a plan keeps its own metrics, and the failure names the ones
    missing."""
    out: list[AzureResource] = []
    failures: list[Failure] = []
    complete = True
    known = {r.id.lower() for r in resources}
    for res in resources:
        if not needs_lookup(res, regional):
            out.append(res)
            continue
        try:
            info = lookup(res.id)
        except CallFailedError as exc:
            complete = False
            why = "its region" if regional and res.region is None else "its App Service plan"
            failures.append((f"Resource Manager lookup of {res.id}", exc.outcome, f"{why}: {exc}"))
            if res.region is not None or not regional:
                out.append(res)
            continue
        out.append(res if res.region is not None else dataclasses.replace(res, region=info.region))
        if not is_web_app(res):
            continue
        if info.server_farm_id is None:
            failures.append(
                (
                    f"App Service plan of {res.id}",
                    "config",
                    f"a web app has no {PLAN_METRICS} of its own, and Resource Manager names no "
                    "serverFarmId for it: the memory and CPU statuses use the container's own "
                    "figures",
                )
            )
        elif info.server_farm_id.lower() not in known:
            known.add(info.server_farm_id.lower())
            # A plan lives in its sites' region.
            plan = default_resource(info.server_farm_id)
            out.append(dataclasses.replace(plan, region=info.region))
    return Resolution(tuple(out), tuple(failures), complete)
