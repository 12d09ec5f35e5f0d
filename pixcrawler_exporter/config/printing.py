"""``--print-config``: the effective configuration as YAML that ``--config`` accepts back.

A secret that is set is printed as a comment, never its value: a ``<redacted>`` in its place
would load back as the secret itself (a wrong Azure client secret) or as a value the setting
refuses (a database URL). Loading the output back therefore needs the secrets given again, by
their variables or secret files, as they were given to the exporter in the first place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pixcrawler_exporter.config.loading import Loaded
from pixcrawler_exporter.config.model import specs
from pixcrawler_exporter.config.parsers import REDACTED
from pixcrawler_exporter.config.settings import lookup


def render(loaded: Loaded) -> str:
    """The effective configuration as YAML that ``--config`` accepts, secrets redacted, each line
    commented with where its value came from."""
    import yaml  # only for --print-config, not in a serving process

    lines = [f"# environment detected: {loaded.detected_environment}"]
    open_sections: list[str] = []
    for spec in specs():
        *sections, name = spec.key.split(".")
        common = 0
        while (
            common < min(len(sections), len(open_sections))
            and sections[common] == open_sections[common]
        ):
            common += 1
        for depth in range(common, len(sections)):
            lines.append("  " * depth + f"{sections[depth]}:")
        open_sections = sections
        value = lookup(loaded.config, spec.key)
        indent, source = "  " * len(sections), loaded.sources[spec.key]
        if spec.meta.secret and value is not None:
            again = spec.meta.env[0] if spec.meta.env else spec.key
            lines.append(f"{indent}# {name}: {REDACTED}  # {source}; a secret: give {again}")
            continue
        shown = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6)
        shown = shown.removesuffix("\n").removesuffix("\n...")
        lines.append(f"{indent}{name}: {shown}  # {source}")
    return "\n".join(lines) + "\n"


def _plain(value: object) -> object:
    """What yaml.safe_dump can write: tuples as lists, dataclasses (queries) as mappings, or
    what a value says it is written as (``plain()``)."""
    plain = getattr(value, "plain", None)
    if callable(plain):
        return plain()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v not in (None, ())}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
