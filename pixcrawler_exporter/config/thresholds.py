"""Threshold settings: a warning and a critical threshold per resource."""

from __future__ import annotations

from dataclasses import dataclass

from pixcrawler_exporter.config.parsers import Parser, integer, percent, ratio
from pixcrawler_exporter.config.settings import SettingMeta, declare, section
from pixcrawler_exporter.derive.resources import Resource


@dataclass(frozen=True)
class ThresholdPair:
    warning: float
    critical: float


def _pair(
    resource: Resource, env: str, warning: float, critical: float
) -> tuple[ThresholdPair, dict[str, SettingMeta]]:
    """A ``{warning, critical}`` section. Ratios in YAML; the seed's variables take percents
    (``PIXCRAWLER_DISK_THRESHOLD_WARN=80`` is 0.8); chunk thresholds are counts everywhere."""
    parse: Parser[float]
    env_parse: Parser[float]
    if resource == "chunks":
        parse = env_parse = integer(0, 10**6)
    else:
        parse, env_parse = ratio, percent(0, 1)
    what = (
        ": active chunks, in every form."
        if resource == "chunks"
        else " usage: a ratio 0-1 in YAML, percent 0-100 in the variable (80 is 80%; "
        "0 < value <= 1 there is refused as a ratio)."
    )
    settings = {
        severity: declare(
            default,
            parse,
            env=f"PIXCRAWLER_{env}_THRESHOLD_{suffix}",
            env_parse=env_parse,
            help=f"{severity.capitalize()} threshold for {resource.replace('_', ' ')}{what}",
        )
        for severity, suffix, default in (
            ("warning", "WARN", warning),
            ("critical", "ALERT", critical),
        )
    }
    return ThresholdPair(warning, critical), settings


@dataclass(frozen=True)
class Thresholds:
    disk: ThresholdPair = section(*_pair("disk", "DISK", 0.8, 0.9))
    memory: ThresholdPair = section(*_pair("memory", "MEMORY", 0.8, 0.9))
    cpu: ThresholdPair = section(*_pair("cpu", "CPU", 0.8, 0.95))
    temp_storage: ThresholdPair = section(*_pair("temp_storage", "TEMP_STORAGE", 0.8, 0.9))
    chunks: ThresholdPair = section(*_pair("chunks", "CHUNK", 35, 40))

    def pair(self, resource: Resource) -> ThresholdPair:
        pairs: dict[Resource, ThresholdPair] = {
            "disk": self.disk,
            "memory": self.memory,
            "cpu": self.cpu,
            "temp_storage": self.temp_storage,
            "chunks": self.chunks,
        }
        return pairs[resource]
