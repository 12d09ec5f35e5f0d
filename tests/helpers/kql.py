"""The little KQL the fake Log Analytics runs: the workspace's Application Insights tables with
their documented columns, ``where`` over ``==``/``!=`` joined by ``and``, and ``summarize NAME =
sum(COLUMN [* COLUMN]) | count() [by COLUMN, ...]``.

Enough to run the exporter's log presets against rows a test writes, so that what a query
counts is checked, not a canned answer: ``count()`` over 10 sampled rows of ``ItemCount`` 10
answers 10, ``sum(ItemCount)`` 100. Anything else, a column the table does not have (KQL is
case-sensitive: ``itemCount`` is not ``ItemCount``) or syntax beyond this, is a KqlError, which
the fake answers as Log Analytics does, with a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# Columns (and their Log Analytics types) of the workspace tables Application Insights writes,
# as Azure Monitor's table reference lists them; the ones these tests use.
SCHEMAS: dict[str, dict[str, str]] = {
    "AppEvents": {
        "TimeGenerated": "datetime",
        "Name": "string",
        "ItemCount": "int",
        "AppRoleName": "string",
        "OperationId": "string",
        "Properties": "dynamic",
        "Measurements": "dynamic",
    },
    "AppMetrics": {
        "TimeGenerated": "datetime",
        "Name": "string",
        "Sum": "real",
        "Min": "real",
        "Max": "real",
        "ItemCount": "int",
        "AppRoleName": "string",
        "Properties": "dynamic",
    },
    "AppExceptions": {
        "TimeGenerated": "datetime",
        "ExceptionType": "string",
        "OuterMessage": "string",
        "ProblemId": "string",
        "SeverityLevel": "int",
        "ItemCount": "int",
        "AppRoleName": "string",
    },
    "AppDependencies": {
        "TimeGenerated": "datetime",
        "Name": "string",
        "DependencyType": "string",
        "Target": "string",
        "Success": "bool",
        "ResultCode": "string",
        "DurationMs": "real",
        "ItemCount": "int",
        "AppRoleName": "string",
    },
}
# The Application Insights resource's own table names, which a workspace does not know.
CLASSIC_TABLES = frozenset(
    {"customEvents", "customMetrics", "exceptions", "dependencies", "requests", "traces"}
)

_CONDITION = re.compile(r'^(\w+)\s*(==|!=)\s*("[^"]*"|true|false|-?\d+(?:\.\d+)?)$')
_SUMMARIZE = re.compile(r"^summarize\s+(\w+)\s*=\s*(sum|count)\(\s*([^)]*?)\s*\)(?:\s+by\s+(.+))?$")
_TERM = re.compile(r"^(\w+)(?:\s*\*\s*(\w+))?$")

Row = Mapping[str, Any]


class KqlError(ValueError):
    """What Log Analytics would refuse with a 400 (its message says why)."""


def table_of(query: str) -> str:
    """The table a query starts from."""
    return query.split("|", 1)[0].strip()


def run(query: str, tables: Mapping[str, Sequence[Row]]) -> dict[str, Any]:
    """The query's primary result in the wire shape: ``{"name", "columns", "rows"}``."""
    name, *stages = (part.strip() for part in query.split("|"))
    if name not in SCHEMAS:
        raise KqlError(f"Failed to resolve table or column expression named '{name}'")
    schema = SCHEMAS[name]
    rows = list(tables.get(name, ()))
    for stage in stages:
        if stage.startswith("where "):
            conditions = [_condition(c.strip(), schema) for c in re.split(r"\s+and\s+", stage[6:])]
            rows = [r for r in rows if all(test(r) for test in conditions)]
        elif stage.startswith("summarize "):
            return _summarize(stage, schema, rows)
        else:
            raise KqlError(f"Query could not be parsed at '{stage.split()[0]}'")
    raise KqlError("the fake answers summarized queries only")


def _column(name: str, schema: Mapping[str, str]) -> str:
    if name not in schema:
        raise KqlError(f"Failed to resolve scalar expression named '{name}'")
    return name


def _condition(text: str, schema: Mapping[str, str]) -> Any:
    match = _CONDITION.match(text)
    if match is None:
        raise KqlError(f"Query could not be parsed at '{text}'")
    column, op, literal = _column(match[1], schema), match[2], match[3]
    if literal.startswith('"'):
        wanted: object = literal[1:-1]
    elif literal in ("true", "false"):
        wanted = literal == "true"
    else:
        wanted = float(literal)
    if op == "==":
        return lambda row: row.get(column) == wanted
    return lambda row: row.get(column) != wanted


def _summarize(stage: str, schema: Mapping[str, str], rows: list[Row]) -> dict[str, Any]:
    match = _SUMMARIZE.match(stage)
    if match is None:
        raise KqlError(f"Query could not be parsed at '{stage}'")
    out, function, argument, by = match[1], match[2], match[3], match[4]
    keys = [_column(k.strip(), schema) for k in by.split(",")] if by else []
    if function == "count":
        if argument:
            raise KqlError("count() takes no argument")
        factors: list[str] = []
    else:
        term = _TERM.match(argument)
        if term is None:
            raise KqlError(f"Query could not be parsed at '{argument}'")
        factors = [_column(f, schema) for f in term.groups() if f]
    groups: dict[tuple[Any, ...], float] = {}
    for row in rows:
        value = 1.0
        for f in factors:
            value *= float(row.get(f) or 0)
        key = tuple(row.get(k) for k in keys)
        groups[key] = groups.get(key, 0.0) + value
    if not keys and not groups:
        groups[()] = 0.0  # no group-by keys: one row even for no input, sum() and count() 0
    real = any(schema[f] == "real" for f in factors)
    columns = [{"name": k, "type": schema[k]} for k in keys]
    columns.append({"name": out, "type": "real" if real else "long"})
    return {
        "name": "PrimaryResult",
        "columns": columns,
        "rows": [[*key, value if real else int(value)] for key, value in groups.items()],
    }
