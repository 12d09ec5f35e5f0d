"""Every setting: its default, environment variable, YAML key, validation, redaction and provenance.

Split by job: ``parsers`` (one value), ``settings`` (how a setting and a source's section are
declared), ``model``, ``capacity``, ``thresholds`` and ``alerting`` (the exporter's own
sections), ``promql`` (what Prometheus parses of the rules settings), ``loading`` (sources and
precedence), ``printing`` (``--print-config``). Each source declares its own section in its
collector's package. This module is the package's public face: code outside ``config`` imports
these names from here.

The names are loaded on first use (PEP 562): a source's package imports ``config.settings`` and
``config.parsers`` while it registers, and the model, which lists every registration, must not
be built from inside that import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixcrawler_exporter.config.alerting import AlertOverride as AlertOverride
    from pixcrawler_exporter.config.alerting import Rules as Rules
    from pixcrawler_exporter.config.alerting import duration as duration
    from pixcrawler_exporter.config.alerting import label_matchers as label_matchers
    from pixcrawler_exporter.config.alerting import split_matchers as split_matchers
    from pixcrawler_exporter.config.capacity import Capacity as Capacity
    from pixcrawler_exporter.config.loading import Loaded as Loaded
    from pixcrawler_exporter.config.loading import env_names as env_names
    from pixcrawler_exporter.config.loading import load as load
    from pixcrawler_exporter.config.model import DEFAULT_PORT as DEFAULT_PORT
    from pixcrawler_exporter.config.model import Collectors as Collectors
    from pixcrawler_exporter.config.model import Config as Config
    from pixcrawler_exporter.config.model import specs as specs
    from pixcrawler_exporter.config.parsers import REDACTED as REDACTED
    from pixcrawler_exporter.config.parsers import ConfigError as ConfigError
    from pixcrawler_exporter.config.printing import render as render
    from pixcrawler_exporter.config.settings import SettingMeta as SettingMeta
    from pixcrawler_exporter.config.settings import Spec as Spec
    from pixcrawler_exporter.config.thresholds import ThresholdPair as ThresholdPair
    from pixcrawler_exporter.config.thresholds import Thresholds as Thresholds

_WHERE = {
    "AlertOverride": "alerting",
    "Rules": "alerting",
    "duration": "alerting",
    "label_matchers": "alerting",
    "split_matchers": "alerting",
    "Capacity": "capacity",
    "Loaded": "loading",
    "env_names": "loading",
    "load": "loading",
    "DEFAULT_PORT": "model",
    "Collectors": "model",
    "Config": "model",
    "specs": "model",
    "REDACTED": "parsers",
    "ConfigError": "parsers",
    "render": "printing",
    "SettingMeta": "settings",
    "Spec": "settings",
    "ThresholdPair": "thresholds",
    "Thresholds": "thresholds",
}

__all__ = [
    "DEFAULT_PORT",
    "REDACTED",
    "AlertOverride",
    "Capacity",
    "Collectors",
    "Config",
    "ConfigError",
    "Loaded",
    "Rules",
    "SettingMeta",
    "Spec",
    "ThresholdPair",
    "Thresholds",
    "duration",
    "env_names",
    "label_matchers",
    "load",
    "render",
    "specs",
    "split_matchers",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
