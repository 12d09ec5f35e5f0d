"""Queries of your own mapped to metrics (``database.queries``), in the spirit of sql_exporter.

A query yields one gauge. Each result row gives one sample per value column; the label columns
give its labels. Several value columns become one metric told apart by ``value_label``, whose
value is the column's name: ``SELECT sum(a) AS total, sum(b) AS failed`` with
``values: [total, failed]`` and ``value_label: state`` gives ``metric{state="total"}`` and
``metric{state="failed"}``. A NULL value gives no sample; a NULL label gives the empty label.

The default statements (``database.preset``) are in :mod:`.presets`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The database collector's own metrics; a query may not take their names.
RESERVED = frozenset({"pixcrawler_database_up", "pixcrawler_database_errors_total"})

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Query:
    """One SQL query and the gauge its rows become."""

    metric: str
    help: str
    sql: str
    values: tuple[str, ...]  # value columns: one sample per row and column
    labels: tuple[str, ...] = ()  # label columns
    value_label: str | None = None  # with several value columns: the label naming the column

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.labels + ((self.value_label,) if self.value_label else ())


# --- queries from YAML -------------------------------------------------------------------------

ACCEPTED = (
    "a list of queries, each a mapping with metric (a metric name), help (text), sql (one "
    "SELECT), values (a column name or a list of them), and optionally labels (a list of column "
    "names) and value_label (a label name, required with more than one value column)"
)
_FIELDS = ("metric", "help", "sql", "values", "labels", "value_label")


def parse_queries(raw: object) -> tuple[Query, ...]:
    """Validate a YAML list of queries; ValueError says which item and field is wrong."""
    if not isinstance(raw, list | tuple):
        raise ValueError(ACCEPTED)
    queries = tuple(_parse_item(i, item) for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, query in enumerate(queries):
        if query.metric in seen:
            raise ValueError(f"query {i}: metric {query.metric!r} is produced by an earlier query")
        seen.add(query.metric)
    return queries


def _parse_item(index: int, item: object) -> Query:
    where = f"query {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping; {ACCEPTED}")
    unknown = sorted(str(k) for k in item if k not in _FIELDS)
    if unknown:
        fields = ", ".join(_FIELDS)
        raise ValueError(f"{where}: unknown field {unknown[0]!r}; the fields are {fields}")
    for key in ("metric", "help", "sql", "values"):
        if key not in item:
            raise ValueError(f"{where}: the field {key!r} is missing; {ACCEPTED}")

    metric = _string(item["metric"], f"{where}, metric", "a metric name")
    where = f"query {index} ({metric})"
    if not _METRIC_NAME.fullmatch(metric):
        raise ValueError(
            f"{where}, metric: {metric!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )
    if metric in RESERVED:
        raise ValueError(f"{where}, metric: {metric!r} is the database collector's own metric")
    values = _names(item["values"], f"{where}, values", allow_single=True)
    labels = _names(item.get("labels") or [], f"{where}, labels", allow_single=False)
    value_label = item.get("value_label")
    if value_label is not None:
        value_label = _label(value_label, f"{where}, value_label")
    if len(values) > 1 and value_label is None:
        raise ValueError(f"{where}: several value columns need value_label to tell them apart")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}, values: a column is named twice")
    for label in labels:
        _label(label, f"{where}, labels")
    names = [*labels, *([value_label] if value_label else [])]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a label name is used twice")
    if set(values) & set(labels):
        raise ValueError(f"{where}: a column cannot be both a value and a label")
    return Query(
        metric=metric,
        help=_string(item["help"], f"{where}, help", "text"),
        sql=_string(item["sql"], f"{where}, sql", "an SQL query"),
        values=values,
        labels=labels,
        value_label=value_label,
    )


def _string(raw: object, where: str, accepted: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{where}: expected {accepted}, got {raw!r}")
    return raw.strip()


def _names(raw: object, where: str, allow_single: bool) -> tuple[str, ...]:
    if allow_single and isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) and n for n in raw):
        accepted = "a column name or a list of them" if allow_single else "a list of column names"
        raise ValueError(f"{where}: expected {accepted}, got {raw!r}")
    if allow_single and not raw:
        raise ValueError(f"{where}: expected at least one column name")
    return tuple(raw)


def _label(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not _LABEL_NAME.fullmatch(raw) or raw.startswith("__"):
        raise ValueError(f"{where}: {raw!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
    return raw
