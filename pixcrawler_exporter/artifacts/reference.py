"""The config and metric references, generated from the declarations so they cannot drift.

``python -m pixcrawler_exporter.artifacts.reference``, from the repository's root, rewrites the
marked sections of docs/configuration.md (every setting), docs/metrics.md (every metric) and
README.md (an index of the metric names by source); a test fails when a file differs from what
this generates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    # The database's metrics come from its queries: every preset's, first declaration wins,
    # with each optional column named (a timestamp adds the stuck-work age).
    queries: dict[str, Desc] = {}
    for preset, make in PRESETS.items():
        optional = {k: k for k, v in (make.__kwdefaults__ or {}).items() if v is None}
        for g in (g for q in default_queries(preset, **optional) for g in gauges_of(q)):
            queries.setdefault(g.metric, Desc(g.metric, g.help, "gauge", g.label_names))
    found += [("database (preset query)", d) for d in queries.values()]
    return found + [(source, d) for source, d in own if source == "derived"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def metric_index(descs: Iterable[tuple[str, Desc]]) -> str:
    """One line per source: its metric names, for README's glance at what is exported."""
    by_source: dict[str, list[str]] = {}
    for source, d in descs:
        by_source.setdefault(source.split(" ", 1)[0], []).append(f"`{d.name}`")
    return "\n".join(f"- **{source}**: {', '.join(names)}" for source, names in by_source.items())


# The files with generated sections, and the sections each holds.
GENERATED = {
    "docs/configuration.md": ("config-reference",),
    "docs/metrics.md": ("metric-reference",),
    "README.md": ("metric-index",),
}


def render(text: str, names: Iterable[str], where: str = "the file") -> str:
    """``text`` with each named marked section replaced by what the declarations generate."""
    make: dict[str, Callable[[], str]] = {
        "config-reference": config_table,
        "metric-reference": lambda: metric_table(all_descs()),
        "metric-index": lambda: metric_index(all_descs()),
    }
    for name in names:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        before, found, rest = text.partition(start)
        _, found_end, after = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"{where} has no {start} ... {end} markers")
        text = f"{before}{start}\n{make[name]()}\n{end}{after}"
    return text


def main(root: Path) -> None:
    for name, sections in GENERATED.items():
        path = root / name
        path.write_text(render(path.read_text(), sections, name))


if __name__ == "__main__":
    # An argument naming a file (the older README.md form) still means "the repository here".
    main(Path("."))
