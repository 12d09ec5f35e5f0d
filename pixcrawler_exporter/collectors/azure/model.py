"""The Azure collector's YAML structures: which resources' platform metrics and which KQL queries.

Kept apart from ``config`` (which imports this module for its parsers) and from the collector (which
needs the Azure SDK), so the configuration loads without either.

Aggregations: Azure Monitor keeps one value per metric and minute in several aggregations. A metric
listed without one uses the resource's ``aggregation``, else its *natural* aggregation from
:data:`NATURAL_AGGREGATION` (the one the Azure portal shows it with: ``Total`` for counters such as
``Requests`` and ``CpuTime``), else ``Average``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

AGGREGATIONS = ("Average", "Minimum", "Maximum", "Total", "Count")

# FileSystemUsage is not among a site's defaults: Azure keeps it in 6-hour grains only, so a
# one-minute query over the lookback window never holds a point of it, and it has no Instance
# dimension, so asking for it would cost a call of its own beside the per-instance one.
_SITE_METRICS = ("CpuTime", "MemoryWorkingSet", "Requests", "Http5xx", "HttpResponseTime")
# Metric names per resource type when a resource lists none.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "Microsoft.Web/serverfarms": ("CpuPercentage", "MemoryPercentage"),
    "Microsoft.Web/sites": _SITE_METRICS,
    "Microsoft.Web/sites/slots": _SITE_METRICS,
}
# Azure ids are case-insensitive, and the portal writes them either way.
_DEFAULTS_BY_TYPE = {k.lower(): v for k, v in DEFAULT_METRICS.items()}

# The metrics Azure Monitor splits by its Instance dimension (one App Service worker each), by
# resource type, lower-cased, from Azure's supported-metrics reference: every metric of a plan,
# every one of a web app but FileSystemUsage, InstanceCount and the Logic Apps workflow metrics.
# Only these are asked per instance; asking a metric without the dimension to split by it is a
# 400 for the whole call.
_PLAN_INSTANCE_METRICS = frozenset(
    {
        "bytesreceived",
        "bytessent",
        "cpupercentage",
        "diskqueuelength",
        "httpqueuelength",
        "memorypercentage",
        "socketinboundall",
        "socketloopback",
        "socketoutboundall",
        "socketoutboundestablished",
        "socketoutboundtimewait",
        "tcpclosewait",
        "tcpclosing",
        "tcpestablished",
        "tcpfinwait1",
        "tcpfinwait2",
        "tcplastack",
        "tcpsynreceived",
        "tcpsynsent",
        "tcptimewait",
    }
)
_SITE_INSTANCE_METRICS = frozenset(
    {
        "alwaysreadyfunctionexecutioncount",
        "alwaysreadyfunctionexecutionunits",
        "alwaysreadyunits",
        "appconnections",
        "averagememoryworkingset",
        "averageresponsetime",
        "bytesreceived",
        "bytessent",
        "cpupercentage",
        "cputime",
        "currentassemblies",
        "functionexecutioncount",
        "functionexecutionunits",
        "gen0collections",
        "gen1collections",
        "gen2collections",
        "handles",
        "healthcheckstatus",
        "http101",
        "http2xx",
        "http3xx",
        "http401",
        "http403",
        "http404",
        "http406",
        "http4xx",
        "http5xx",
        "httpresponsetime",
        "iootherbytespersecond",
        "iootheroperationspersecond",
        "ioreadbytespersecond",
        "ioreadoperationspersecond",
        "iowritebytespersecond",
        "iowriteoperationspersecond",
        "memoryworkingset",
        "ondemandfunctionexecutioncount",
        "ondemandfunctionexecutionunits",
        "privatebytes",
        "requests",
        "requestsinapplicationqueue",
        "threads",
        "totalappdomains",
        "totalappdomainsunloaded",
    }
)
INSTANCE_METRICS: dict[str, frozenset[str]] = {
    "microsoft.web/serverfarms": _PLAN_INSTANCE_METRICS,
    "microsoft.web/sites": _SITE_INSTANCE_METRICS,
    "microsoft.web/sites/slots": _SITE_INSTANCE_METRICS,
}

# Counters are summed per minute; gauges averaged. As Azure's metric reference lists them.
NATURAL_AGGREGATION: dict[str, str] = {
    "cpupercentage": "Average",
    "memorypercentage": "Average",
    "cputime": "Total",
    "memoryworkingset": "Average",
    "requests": "Total",
    "http5xx": "Total",
    "http4xx": "Total",
    "http2xx": "Total",
    "bytesreceived": "Total",
    "bytessent": "Total",
    "httpresponsetime": "Average",
    "filesystemusage": "Average",
}

DEFAULT_LOG_TIMESPAN_SECONDS = 3600.0

_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<rest>.+)$",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# The columns every Log Analytics table has that are new for each record, and those of App
# Insights' own tables (requests, customEvents, ... as the App Insights query API names them),
# lower-cased.
_PER_RECORD = frozenset(
    {
        "timegenerated",
        "_itemid",
        "_timereceived",
        "timestamp",
        "itemid",
        "operation_id",
        "operation_parentid",
    }
)
_REGION = re.compile(r"^[a-z0-9]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

RESOURCE_ACCEPTED = (
    "a list of resources, each a resource id "
    "('/subscriptions/SUB/resourceGroups/RG/providers/NAMESPACE/TYPE/NAME') or a mapping with "
    "id, optional region (such as westeurope), optional metrics (names, or mappings of name and "
    "aggregation) and optional aggregation (" + ", ".join(AGGREGATIONS) + ")"
)
QUERY_ACCEPTED = (
    "a list of log queries, each a mapping with name, query (KQL), optional value_column "
    "(default 'value'), optional label_columns (a list of column names) and optional timespan "
    "(seconds, or a number with s, m, h or d; 0 for none; default 1h)"
)


# The fields of these classes are the YAML keys, so --print-config (which writes dataclasses as
# mappings of their fields) prints what --config reads back.


@dataclass(frozen=True)
class AzureMetric:
    name: str  # as Azure's REST API names it, e.g. CpuPercentage
    aggregation: str  # one of AGGREGATIONS


@dataclass(frozen=True)
class AzureResource:
    id: str
    region: str | None  # fills {region} of the metrics endpoint; None uses the endpoint as set
    metrics: tuple[AzureMetric, ...]

    @property
    def subscription(self) -> str:
        return resource_type(self.id)[0]

    @property
    def resource_type(self) -> str:
        """NAMESPACE/TYPE[/SUBTYPE]: also the namespace of the resource's platform metrics."""
        return resource_type(self.id)[1]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)


@dataclass(frozen=True)
class LogQuery:
    name: str  # the ``query`` label
    query: str  # KQL
    value_column: str
    label_columns: tuple[str, ...]
    timespan: float  # seconds; 0: none, the query's own time filter decides


def by_instance(resource_type: str, metric: str) -> bool:
    """Whether Azure Monitor splits ``metric`` of ``resource_type`` by App Service instance."""
    return metric.lower() in INSTANCE_METRICS.get(resource_type.lower(), frozenset())


def resource_type(resource_id: str) -> tuple[str, str]:
    """(subscription, resource type) of a resource id; ValueError when it is not one."""
    match = _RESOURCE_ID.match(resource_id.strip())
    if match is None:
        raise ValueError(
            "a resource id such as /subscriptions/SUB/resourceGroups/RG/providers/"
            "Microsoft.Web/serverfarms/NAME"
        )
    parts = match["rest"].strip("/").split("/")
    # NAMESPACE, then TYPE/NAME pairs: sites/app/slots/staging is type sites/slots.
    if len(parts) < 3 or len(parts) % 2 == 0 or not all(parts):
        raise ValueError(
            "a resource id ending in providers/NAMESPACE/TYPE/NAME (for example "
            "providers/Microsoft.Web/sites/my-app)"
        )
    return match["sub"], "/".join([parts[0], *parts[1::2]])


def default_resource(resource_id: str) -> AzureResource:
    """A resource with its type's default metrics (``PIXCRAWLER_AZURE_RESOURCE_ID``)."""
    return _resource({"id": resource_id}, "resource")


def parse_resource_id(raw: object) -> str | None:
    """``azure.resource_id``: a resource id of a type that has default metrics, or unset."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ValueError("a resource id")
    try:
        return default_resource(raw).id
    except ValueError:
        raise ValueError(
            "a resource id such as /subscriptions/SUB/resourceGroups/RG/providers/"
            f"Microsoft.Web/serverfarms/NAME, of a type with default metrics "
            f"({', '.join(DEFAULT_METRICS)}); list other resources in azure.resources"
        ) from None


def parse_resources(raw: object) -> tuple[AzureResource, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ValueError(RESOURCE_ACCEPTED)
    found: list[AzureResource] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"item {i + 1}"
        res = _resource(item if isinstance(item, dict) else {"id": item}, where)
        if res.id.lower() in seen:
            raise ValueError(f"{RESOURCE_ACCEPTED}; {where}: {res.id} is listed twice")
        seen.add(res.id.lower())
        found.append(res)
    return tuple(found)


def _resource(item: Mapping[object, object], where: str) -> AzureResource:
    def bad(problem: str) -> ValueError:
        return ValueError(f"{RESOURCE_ACCEPTED}; {where}: {problem}")

    unknown = set(item) - {"id", "region", "metrics", "aggregation"}
    if unknown:
        raise bad(f"unknown key {sorted(map(str, unknown))[0]!r}")
    rid = item.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise bad("id must be a resource id")
    rid = rid.strip().rstrip("/")
    where = f"{where} ({rid})"
    try:
        rtype = resource_type(rid)[1]
    except ValueError as exc:
        raise bad(f"id is not {exc}") from None
    region = item.get("region")
    if region is not None:
        if not isinstance(region, str) or not _REGION.match(region.strip().lower()):
            raise bad(f"region {region!r} is not an Azure region name such as westeurope")
        region = region.strip().lower()
    resource_agg = item.get("aggregation")
    if resource_agg is not None:
        resource_agg = _aggregation(resource_agg, bad, "aggregation")
    listed = item.get("metrics")
    if listed is None:
        names = _DEFAULTS_BY_TYPE.get(rtype.lower())
        if names is None:
            known = ", ".join(DEFAULT_METRICS)
            raise bad(f"type {rtype} has no default metrics (only {known} do); list its metrics")
        listed = list(names)
    if not isinstance(listed, list | tuple) or not listed:
        raise bad("metrics must be a non-empty list")
    metrics: list[AzureMetric] = []
    for j, entry in enumerate(listed):
        spot = f"metrics item {j + 1}"
        entry_doc = entry if isinstance(entry, dict) else {"name": entry}
        extra = set(entry_doc) - {"name", "aggregation"}
        if extra:
            raise bad(f"{spot}: unknown key {sorted(map(str, extra))[0]!r}")
        name = entry_doc.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad(f"{spot}: a metric name such as CpuPercentage")
        name = name.strip()
        agg = entry_doc.get("aggregation")
        if agg is not None:
            agg = _aggregation(agg, bad, f"{spot} aggregation")
        else:
            agg = resource_agg or NATURAL_AGGREGATION.get(name.lower(), "Average")
        if any(m.name.lower() == name.lower() for m in metrics):
            raise bad(f"metric {name} is listed twice")
        metrics.append(AzureMetric(name, agg))
    return AzureResource(rid, region, tuple(metrics))


def _aggregation(raw: object, bad: Callable[[str], ValueError], what: str) -> str:
    for agg in AGGREGATIONS:
        if isinstance(raw, str) and raw.strip().lower() == agg.lower():
            return agg
    raise bad(f"{what} {raw!r} is not one of {', '.join(AGGREGATIONS)}")


def parse_log_queries(raw: object) -> tuple[LogQuery, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ValueError(QUERY_ACCEPTED)
    found: list[LogQuery] = []
    for i, item in enumerate(raw):
        where = f"item {i + 1}"

        def bad(problem: str, where: str = where) -> ValueError:
            return ValueError(f"{QUERY_ACCEPTED}; {where}: {problem}")

        if not isinstance(item, dict):
            raise bad("not a mapping")
        unknown = set(item) - {"name", "query", "value_column", "label_columns", "timespan"}
        if unknown:
            raise bad(f"unknown key {sorted(map(str, unknown))[0]!r}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad("name must be a non-empty string")
        name = name.strip()
        where = f"{where} ({name})"
        if any(q.name == name for q in found):
            raise bad("the name is used twice", where)
        query = item.get("query")
        if not isinstance(query, str) or not query.strip():
            raise bad("query must be a KQL query", where)
        value_column = item.get("value_column", "value")
        if not isinstance(value_column, str) or not value_column:
            raise bad("value_column must be a column name", where)
        labels = item.get("label_columns", [])
        if not isinstance(labels, list | tuple) or not all(isinstance(c, str) for c in labels):
            raise bad("label_columns must be a list of column names", where)
        for col in labels:
            if col.lower() in _PER_RECORD:
                raise bad(
                    f"label column {col!r} differs for every record: one series each; "
                    "summarize by a column of few values instead",
                    where,
                )
            if not _LABEL.match(col) or col.startswith("__") or col == "query":
                raise bad(
                    f"label column {col!r} cannot be a Prometheus label name (letters, digits "
                    "and _, not starting with a digit or __, and not 'query')",
                    where,
                )
        if len(set(labels)) != len(labels) or value_column in labels:
            raise bad("label_columns repeat a column or include value_column", where)
        raw_span = item.get("timespan", DEFAULT_LOG_TIMESPAN_SECONDS)
        try:
            timespan = _timespan(raw_span)
        except ValueError:
            raise bad(f"timespan {raw_span!r} is not a duration such as 1h", where) from None
        found.append(LogQuery(name, query, value_column, tuple(labels), timespan))
    return tuple(found)


def _timespan(raw: object) -> float:
    """Seconds, 0 for no timespan."""
    if raw is None:
        return 0.0
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    else:
        match = _DURATION.match(raw) if isinstance(raw, str) else None
        if match is None:
            raise ValueError(raw)
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not 0 <= seconds < float("inf"):
        raise ValueError(raw)
    return seconds
