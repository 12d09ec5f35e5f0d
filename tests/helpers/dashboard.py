"""Reading the generated Grafana dashboard: its panels and the metric names their queries select,
and what an exporter must expose for them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pixcrawler_exporter.artifacts.recording import RECORDING_RULES

if TYPE_CHECKING:
    from tests.conftest import Exporter

# The celery collector's panels: only a stack with a broker and workers fills them.
PIPELINE_ROW = "Work pipeline"

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    for p in doc["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def row_panels(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The panels under each row's title, in order (rows are laid out open, each followed by its
    panels)."""
    found: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for p in doc["panels"]:
        if p["type"] == "row":
            current = found.setdefault(p["title"], [])
            current.extend(p.get("panels", []))
        else:
            current.append(p)
    return found


def source_metrics(expr: str) -> set[str]:
    """The exporter's metrics an expression reads, through the recording rules it uses."""
    found = set()
    for name in metric_names(expr):
        found |= metric_names(RECORDING_RULES[name]) if name in RECORDING_RULES else {name}
    return found - {"up", "scrape_duration_seconds"}


def exposed(exporter: Exporter) -> set[str]:
    """The names of the series the exporter serves now."""
    status, _, body = exporter.get("/metrics")
    assert status == 200
    return set(re.findall(r"^(\w+)(?:\{| )", body.decode(), re.M))


def fill(expr: str, job: str, instance: str) -> str:
    """A panel's query with the dashboard's variables set, as Grafana sends it."""
    return (
        expr.replace("$job", job).replace("$instance", instance).replace("$__rate_interval", "1m")
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    A small tokenizer, not a parser: strings, label matchers, ranges and the label lists of
    by/without/on/ignoring/group_x are dropped; identifiers followed by '(' are functions.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = m.group(0)
        after = text[m.end() :].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", word) or text[m.start() - 1 : m.start()].isdigit():
            continue
        names.add(word)
    return names
