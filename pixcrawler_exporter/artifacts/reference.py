"""README's config and metric references, generated from the declarations so they cannot drift.

``python -m pixcrawler_exporter.artifacts.reference README.md`` rewrites the marked sections; a
test fails when README differs from what this generates.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from pixcrawler_exporter import config
from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.collectors.database.presets import PRESETS, default_queries, gauges_of


def config_table() -> str:
    rows = [
        "| YAML key | environment variable | flag | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in config.specs():
        env = ", ".join(f"`{n}`" for n in spec.meta.env) or "—"
        flag = ", ".join(f"`{f}`" for f in spec.meta.flags) or "—"
        rows.append(
            f"| `{spec.key}` | {env} | {flag} | {_default(spec)} | {_cell(spec.meta.help)} |"
        )
    return "\n".join(rows)


def _default(spec: config.Spec) -> str:
    default = spec.default
    if default is None:
        return "unset"
    if isinstance(default, tuple):
        return "`" + ", ".join(default) + "`"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def metric_table(descs: Iterable[tuple[str, Desc]]) -> str:
    rows = ["| metric | type | labels | collector | meaning |", "| --- | --- | --- | --- | --- |"]
    for source, d in descs:
        labels = ", ".join(f"`{label}`" for label in d.labels) or "—"
        rows.append(f"| `{d.name}` | {d.type} | {labels} | {source} | {_cell(d.help)} |")
    return "\n".join(rows)


def all_descs() -> list[tuple[str, Desc]]:
    from pixcrawler_exporter.collect import registry

    own = registry.builtin_descs()
    found = [(source, d) for source, d in own if source != "derived"]
    # The database's metrics come from its queries: every preset's, first declaration wins.
    queries: dict[str, Desc] = {}
    for preset in PRESETS:
        for g in (g for q in default_queries(preset) for g in gauges_of(q)):
            queries.setdefault(g.metric, Desc(g.metric, g.help, "gauge", g.label_names))
    found += [("database (preset query)", d) for d in queries.values()]
    return found + [(source, d) for source, d in own if source == "derived"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_readme(readme: str) -> str:
    tables = {
        "config-reference": config_table(),
        "metric-reference": metric_table(all_descs()),
    }
    for name, table in tables.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        before, found, rest = readme.partition(start)
        _, found_end, after = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"README has no {start} ... {end} markers")
        readme = f"{before}{start}\n{table}\n{end}{after}"
    return readme


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render_readme(path.read_text()))
