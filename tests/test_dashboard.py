"""The Grafana dashboard: current with its generator, valid, and querying only real series."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from typing import Any

import pytest

import pixcrawler_exporter
from grafana import dashboard as generator
from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import recording
from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.collectors.database import presets
from pixcrawler_exporter.derive.resources import Resource
from tests.conftest import REPO
from tests.helpers.dashboard import metric_names, panels

DASHBOARD_FILE = REPO / "grafana" / "pixcrawler-exporter.json"
ROWS = [
    "Overview",
    "Capacity",
    "Container resources",
    "Temp storage",
    "Database and jobs",
    "Work pipeline",
    "Azure",
    "Exporter health",
]
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())  # type: ignore[no-any-return]


def declared_metrics() -> set[str]:
    """Every metric name the exporter's code declares: each module's Desc objects (module level
    and collectors' ``descs``), and the metrics of the default database queries."""
    found: set[str] = set()

    def add(desc: Desc) -> None:
        found.add(desc.name)
        if desc.type == "histogram":  # the series a histogram is exposed as
            found.update(f"{desc.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))

    for info in pkgutil.walk_packages(pixcrawler_exporter.__path__, "pixcrawler_exporter."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Desc):
                add(value)
            for desc in getattr(value, "descs", ()) if isinstance(value, type) else ():
                if isinstance(desc, Desc):
                    add(desc)
    for preset in presets.PRESETS:
        found |= {g.metric for q in presets.default_queries(preset) for g in presets.gauges_of(q)}
    return found


def test_metric_names_finds_selectors_not_functions_or_labels() -> None:
    expr = (
        'max by (instance) (rate(a_total{job="$job", x=~"y(z)"}[$__rate_interval]))'
        " / on (instance) group_left (path) b - c offset 10m or time() - d:rec > 5e3"
    )
    assert metric_names(expr) == {"a_total", "b", "c", "d:rec"}


def test_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD_FILE.read_text() == generator.render(), (
        "grafana/pixcrawler-exporter.json is stale: run `python3 -m grafana.dashboard`"
    )


def test_rows_and_layout() -> None:
    doc = load()
    assert [p["title"] for p in doc["panels"] if p["type"] == "row"] == ROWS
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_variables_datasource_job_and_instance() -> None:
    variables = {v["name"]: v for v in load()["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "instance"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert f", {name})" in variables[name]["query"]["query"]
    assert '{job="$job"}' in variables["instance"]["query"]["query"]


def test_every_panel_has_a_unit_a_datasource_and_scoped_queries() -> None:
    found = list(panels(load()))
    assert len(found) > 30
    for p in found:
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']} has no unit"
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            # Every selector is scoped to the chosen job and instances.
            selectors = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\}", t["expr"])
            assert selectors, t["expr"]
            for s in selectors:
                assert 'job="$job", instance=~"$instance"' in s, (p["title"], s)


def test_queries_use_only_declared_metrics_and_recording_rules() -> None:
    known = declared_metrics() | set(recording.RECORDING_RULES) | PROMETHEUS_SERIES
    for p in panels(load()):
        for t in p["targets"]:
            unknown = metric_names(t["expr"]) - known
            assert not unknown, f"panel {p['title']!r} queries undeclared {sorted(unknown)}"
    for v in load()["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["query"]["query"])
            assert m, v["query"]["query"]
            assert metric_names(m.group(1)) <= known


def stat(doc: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in panels(doc) if p["title"] == title and p["type"] == "stat")


@pytest.mark.parametrize(
    ("title", "resource"),
    [
        ("Memory", "memory"),
        ("CPU", "cpu"),
        ("Disk (fullest path)", "disk"),
        ("Temp storage", "temp_storage"),
        ("Active chunks / effective max", "chunks"),
    ],
)
def test_overview_stats_are_coloured_by_the_default_thresholds(
    title: str, resource: Resource
) -> None:
    pair = config.Config().thresholds.pair(resource)
    steps = stat(load(), title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, pair.warning, pair.critical]
    assert [s["color"] for s in steps] == ["green", "orange", "red"]


def test_overview_has_status_and_can_start_stats() -> None:
    doc = load()
    status = stat(doc, "Overall status")
    assert 'resource="overall"' in status["targets"][0]["expr"]
    assert {m["options"]["2"]["text"] for m in status["fieldConfig"]["defaults"]["mappings"]} == {
        "ALERT"
    }
    assert "pixcrawler_can_start_chunk" in stat(doc, "Can start a chunk")["targets"][0]["expr"]
    chunks = stat(doc, "Active chunks / effective max")
    assert [metric_names(t["expr"]) for t in chunks["targets"]] == [
        {"pixcrawler_chunks_active"},
        {"pixcrawler_chunks_effective_max"},
    ]


def test_thresholds_follow_the_configuration_they_are_generated_from(tmp_path: Any) -> None:
    cfg = config.load(
        {"PIXCRAWLER_MEMORY_THRESHOLD_WARN": "55"}, {}, None, dotenv_path=tmp_path / "x"
    ).config
    steps = stat(generator.dashboard(cfg), "Memory")["fieldConfig"]["defaults"]["thresholds"]
    assert steps["steps"][1]["value"] == 0.55


@pytest.mark.parametrize(
    ("title", "metric", "resource"),
    [
        ("Plan memory per instance", "MemoryPercentage", "memory"),
        ("Plan CPU per instance", "CpuPercentage", "cpu"),
    ],
)
def test_azure_row_shows_each_instance_against_its_thresholds(
    title: str, metric: str, resource: Resource
) -> None:
    from pixcrawler_exporter.collectors.azure.collector import INSTANCE_LABEL, METRIC

    (panel,) = [p for p in panels(load()) if p["title"] == title]
    (target,) = panel["targets"]
    assert f'metric="{metric}"' in target["expr"] and target["expr"].endswith("/ 100")
    # One line per instance: the legend names the label the exporter splits them by.
    assert INSTANCE_LABEL in METRIC.labels and f"{{{{{INSTANCE_LABEL}}}}}" in target["legendFormat"]
    pair = config.Config().thresholds.pair(resource)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, pair.warning, pair.critical]
