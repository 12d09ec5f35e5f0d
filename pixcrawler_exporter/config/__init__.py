"""Every setting: its default, environment variable, YAML key, validation, redaction and provenance.

Split by job: ``parsers`` (one value), ``model`` (the declarations), ``load`` (sources and
precedence), ``render`` (``--print-config``). This module is the package's public face: code
outside ``config`` imports these names from here.
"""

from pixcrawler_exporter.config.load import Loaded, database_queries, env_names, load
from pixcrawler_exporter.config.model import (
    DEFAULT_PORT,
    THRESHOLD_RESOURCES,
    Azure,
    Capacity,
    Collectors,
    Config,
    Database,
    Spec,
    specs,
)
from pixcrawler_exporter.config.parsers import REDACTED, ConfigError
from pixcrawler_exporter.config.render import render
from pixcrawler_exporter.config.yamlfile import read_yaml_mapping

__all__ = [
    "DEFAULT_PORT",
    "REDACTED",
    "THRESHOLD_RESOURCES",
    "Azure",
    "Capacity",
    "Collectors",
    "Config",
    "ConfigError",
    "Database",
    "Loaded",
    "Spec",
    "database_queries",
    "env_names",
    "load",
    "read_yaml_mapping",
    "render",
    "specs",
]
