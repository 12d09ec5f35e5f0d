"""What an alert is and the small helpers rules are written with, shared by the rule groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pixcrawler_exporter.config import duration as duration


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_seconds: int
    severity: str
    summary: str
    description: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        """The runbook section's anchor: GitHub lowercases a heading that is the alert's name."""
        return self.name.lower()


@dataclass(frozen=True)
class Group:
    name: str
    alerts: Sequence[Alert]
    # Recorded first: rules of a group run in order, so its alerts see this evaluation's values
    # (from another group they would lag by up to an interval).
    records: Sequence[str] = ()


# Placeholders and templates the alerts' texts share.
FOR = "<for>"
INSTANCE = "{{ $labels.instance }}"
PERCENT = "{{ $value | humanizePercentage }}"
AGE = "{{ $value | humanizeDuration }}"


def number(value: float) -> str:
    """A PromQL number that is exactly the configured one (``:g`` would round to 6 digits)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def quote(text: str) -> str:
    """A PromQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def alert(
    name: str,
    expr: str,
    for_seconds: int,
    severity: str,
    summary: str,
    description: str,
    labels: Mapping[str, str] | None = None,
) -> Alert:
    # Descriptions quote their own `for:` through FOR, so the two cannot disagree.
    return Alert(
        name,
        expr,
        for_seconds,
        severity,
        summary,
        description.replace(FOR, duration(for_seconds)),
        labels or {},
    )
