"""Loading: flags > environment > YAML file > .env > default, with each value's provenance.

Nothing else in the package reads ``os.environ``."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from pixcrawler_exporter import environment
from pixcrawler_exporter.collectors.database.queries import Query, default_queries
from pixcrawler_exporter.config.model import (
    THRESHOLD_RESOURCES,
    Config,
    Database,
    section_class,
    specs,
)
from pixcrawler_exporter.config.parsers import (
    REDACTED,
    ConfigError,
)
from pixcrawler_exporter.config.yamlfile import read_yaml_mapping


@dataclass(frozen=True)
class Loaded:
    config: Config
    sources: Mapping[str, str]  # dotted key -> where its value came from
    detected_environment: str  # what detection found, whatever the setting says

    @property
    def environment(self) -> str:
        env = self.config.environment
        return self.detected_environment if env == "auto" else env


def load(
    environ: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
    config_file: str | None = None,
    dotenv_path: str | Path = ".env",
) -> Loaded:
    """Build the effective configuration. Raises ConfigError with a message for people."""
    flags = flags or {}
    all_specs = list(specs())
    raw: dict[str, tuple[Any, str, str]] = {}  # key -> (value, source, where-for-messages)

    for key, value in _dotenv(dotenv_path).items():
        for spec in all_specs:
            if key in spec.meta["env"]:
                raw[spec.key] = (value, ".env", f"{key} in {dotenv_path}")
    if config_file is not None:
        for key, value in _yaml(config_file, {s.key for s in all_specs}).items():
            raw[key] = (value, f"file {config_file}", f"{key} in {config_file}")
    for spec in all_specs:
        for name in spec.meta["env"]:
            if name in environ:
                raw[spec.key] = (environ[name], f"env {name}", f"environment variable {name}")
                break
    for spec in all_specs:
        given = flags.get(spec.key)
        if given is not None:
            flag = str(spec.meta["flag"] or f"--{spec.key}")
            raw[spec.key] = (given, f"flag {flag}", f"flag {flag}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in all_specs:
        if spec.key not in raw:
            values[spec.key] = spec.field.default
            sources[spec.key] = "default"
            continue
        value, source, where = raw[spec.key]
        is_text = isinstance(value, str) and not source.startswith("file ")
        parse = spec.meta["env_parse"] if is_text else spec.meta["parse"]
        try:
            values[spec.key] = parse(value)
        except ValueError as exc:
            shown = REDACTED if spec.meta["secret"] else repr(value)
            raise ConfigError(f"{where}: {shown} is not valid; expected {exc}") from None
        sources[spec.key] = source

    detected = environment.detect(
        environ, Path(values["paths.rootfs"]), Path(values["paths.procfs"])
    )
    where = detected if values["environment"] == "auto" else values["environment"]
    for spec in all_specs:
        by_env = spec.meta["by_environment"]
        if sources[spec.key] == "default" and where in by_env:
            values[spec.key] = by_env[where]
            sources[spec.key] = f"default for {where}"
    config = _build(Config, values)
    _check(config, sources)
    return Loaded(config, sources, detected)


def database_queries(db: Database) -> tuple[Query, ...]:
    """The preset's queries (with the configured names) followed by the extra ones."""
    preset = () if db.preset == "none" else default_queries(db.preset, **(db.names or {}))
    return (*preset, *db.queries)


def _check(config: Config, sources: Mapping[str, str]) -> None:
    """Rules that involve more than one setting."""
    db = config.database
    if db.names and db.preset == "none":
        raise ConfigError("database.names: the 'none' preset takes no names")
    try:
        queries = database_queries(db)
    except ValueError as exc:
        raise ConfigError(f"database.names ({sources['database.names']}): expected {exc}") from None
    metrics = [q.metric for q in queries]
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    if twice:
        raise ConfigError(
            f"database.queries: {', '.join(twice)} is also produced by the "
            f"{db.preset} preset; set database.preset to 'none' to replace it"
        )
    for resource in THRESHOLD_RESOURCES:
        pair = getattr(config.thresholds, resource)
        if pair.warning > pair.critical:
            key = f"thresholds.{resource}"
            raise ConfigError(
                f"{key}.warning ({pair.warning:g}, from {sources[key + '.warning']}) is above "
                f"{key}.critical ({pair.critical:g}, from {sources[key + '.critical']}); "
                "expected warning <= critical"
            )


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    kwargs = {
        f.name: values[prefix + f.name]
        if "parse" in f.metadata
        else _build(section_class(f), values, prefix + f.name + ".")
        for f in dataclasses.fields(cls)
    }
    return cls(**kwargs)


def _dotenv(path: str | Path) -> dict[str, str]:
    try:
        if not Path(path).is_file():
            return {}
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _yaml(path: str, known: set[str]) -> dict[str, Any]:
    doc = read_yaml_mapping(path, "config file")
    flat: dict[str, Any] = {}
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k}
    sections |= {s.rsplit(".", 1)[0] for s in sections if "." in s}

    def walk(node: Mapping[Any, Any], prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if key in known:
                flat[key] = v
            elif key in sections and isinstance(v, dict):
                walk(v, key + ".")
            elif key in sections:
                raise ConfigError(f"{key} in {path}: expected a mapping of settings")
            else:
                hint = _closest(key, known | sections)
                raise ConfigError(f"{key} in {path}: unknown setting{hint}")

    walk(doc, "")
    return flat


def _closest(key: str, known: set[str]) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def env_names() -> set[str]:
    return {name for spec in specs() for name in spec.meta["env"]}
