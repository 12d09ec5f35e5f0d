"""Reading the generated Grafana dashboard: its panels and the metric names their queries select."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

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
