"""Every setting: its default, environment variable, YAML key, validation, redaction and provenance.

Split by job: ``parsers`` (one value), ``settings`` (how a setting is declared), ``model``,
``sources``, ``thresholds`` and ``alerting`` (the declarations), ``load`` (sources and precedence),
``render`` (``--print-config``). This module is the package's public face: code
outside ``config`` imports these names from here.
"""

from pixcrawler_exporter.config.alerting import (
    AlertOverride,
    Rules,
    duration,
    label_matchers,
    split_matchers,
)
from pixcrawler_exporter.config.load import Loaded, env_names, load
from pixcrawler_exporter.config.model import DEFAULT_PORT, Collectors, Config, specs
from pixcrawler_exporter.config.parsers import REDACTED, ConfigError
from pixcrawler_exporter.config.render import render
from pixcrawler_exporter.config.settings import SettingMeta, Spec
from pixcrawler_exporter.config.sources import Azure, Capacity, Database
from pixcrawler_exporter.config.thresholds import ThresholdPair, Thresholds


def read_yaml_mapping(path: str, what: str) -> dict[object, object]:
    """config.yamlfile's, imported when a file is read: PyYAML costs about 1 MB."""
    from pixcrawler_exporter.config import yamlfile

    return yamlfile.read_yaml_mapping(path, what)


__all__ = [
    "DEFAULT_PORT",
    "REDACTED",
    "AlertOverride",
    "Azure",
    "Capacity",
    "Collectors",
    "Config",
    "ConfigError",
    "Database",
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
    "read_yaml_mapping",
    "render",
    "specs",
    "split_matchers",
]
