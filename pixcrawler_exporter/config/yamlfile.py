"""Reading a YAML file whose top level is a mapping: the config file and the web config file."""

from __future__ import annotations

import yaml

from pixcrawler_exporter.config.parsers import ConfigError


def read_yaml_mapping(path: str, what: str) -> dict[object, object]:
    """A YAML file whose top level is a mapping ({} when empty); ConfigError says what is wrong,
    with ``what`` naming the kind of file ("config file", "web config file")."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {exc.reason}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{what} {path} is not valid YAML{at}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of settings at the top level")
    return doc
