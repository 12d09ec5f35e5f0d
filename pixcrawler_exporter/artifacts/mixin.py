"""What makes the rendered rules fit any Prometheus set-up (monitoring-mixin conventions): a
selector added to every series, per-alert overrides from the configuration."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from pixcrawler_exporter.config import AlertOverride, ConfigError, duration

if TYPE_CHECKING:
    from pixcrawler_exporter.artifacts.alerting import Alert

# A series selector in an expression: the exporter's metrics, recorded series and `up`, with the
# matchers it already has. No PromQL function or keyword is spelled like these.
_SERIES = re.compile(r"(?<![\w:])(up|pixcrawler[a-z0-9_:]*)(?:\{([^}]*)\})?(?![\w:(])")


def scoped(expr: str, selector: str) -> str:
    """``expr`` with ``selector``'s matchers added to every series it reads."""
    if not selector:
        return expr

    def add(m: re.Match[str]) -> str:
        own = m.group(2)
        return f"{m.group(1)}{{{selector}{', ' + own if own else ''}}}"

    return _SERIES.sub(add, expr)


def overridden(alerts: Iterable[Alert], overrides: Mapping[str, AlertOverride]) -> list[Alert]:
    """The alerts with ``rules.alerts`` applied: severity, ``for:`` (also where the description
    quotes it), or left out."""
    out = []
    for a in alerts:
        o = overrides.get(a.name)
        if o is None:
            out.append(a)
            continue
        if o.disable:
            continue
        delay = a.for_seconds if o.for_seconds is None else o.for_seconds
        description = a.description
        if a.for_seconds:
            description = description.replace(
                f"for {duration(a.for_seconds)}", f"for {duration(delay)}"
            )
        severity = o.severity or a.severity
        out.append(
            dataclasses.replace(a, severity=severity, for_seconds=delay, description=description)
        )
    return out


def check_overrides(overrides: Mapping[str, AlertOverride] | None, known: Collection[str]) -> None:
    """An override of an alert that does not exist is a typo that would silently do nothing."""
    for name in overrides or {}:
        if name not in known:
            match = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise ConfigError(f"rules.alerts.{name}: no such alert{hint}")
