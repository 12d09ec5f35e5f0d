"""Loading: flags > environment > YAML file > .env > default, with each value's provenance.

Nothing else in the package reads ``os.environ``."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pixcrawler_exporter import environment
from pixcrawler_exporter.collect.registration import REGISTRY
from pixcrawler_exporter.config.model import DISABLE_DEFAULTS, Config, specs
from pixcrawler_exporter.config.parsers import REDACTED, ConfigError
from pixcrawler_exporter.config.settings import Provenance, Spec, build
from pixcrawler_exporter.derive.resources import RESOURCES


@dataclass(frozen=True)
class Loaded:
    config: Config
    sources: Mapping[str, str]  # dotted key -> where its value came from
    detected_environment: str  # what detection found, whatever the setting says
    # What was given that is probably a mistake but not an error: logged at start and on
    # reload (a misspelt PIXCRAWLER_ variable, another program's variable for a setting).
    warnings: tuple[str, ...] = ()

    @property
    def environment(self) -> str:
        env = self.config.environment
        return self.detected_environment if env == "auto" else env


def load(
    environ: Mapping[str, str],
    flags: Mapping[str, object] | None = None,
    config_file: str | None = None,
    dotenv_path: str | Path = ".env",
    flag_names: Mapping[str, str] | None = None,
) -> Loaded:
    """Build the effective configuration. Raises ConfigError with a message for people.

    ``flag_names`` says which of a setting's flags was typed (``--listen`` for
    ``--web.listen-address``), so that messages quote it; the first of its flags otherwise."""
    all_specs = list(specs())
    dotenv = _dotenv(dotenv_path)
    file_warnings: list[str] = []
    given = _given(
        all_specs,
        environ,
        flags or {},
        config_file,
        dotenv,
        dotenv_path,
        flag_names or {},
        file_warnings,
    )
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for spec in all_specs:
        if spec.key in given:
            values[spec.key] = _parse(spec, given[spec.key])
            sources[spec.key] = given[spec.key].source
        else:
            values[spec.key] = spec.default
            sources[spec.key] = "default"

    detected = environment.detect(
        environ, Path(str(values["paths.rootfs"])), Path(str(values["paths.procfs"]))
    )
    running_in = detected if values["environment"] == "auto" else str(values["environment"])
    for spec in all_specs:
        by_env = spec.meta.by_environment
        if sources[spec.key] == "default" and running_in in by_env:
            values[spec.key] = by_env[running_in]
            sources[spec.key] = f"default for {running_in}"
    if values[f"collectors.{DISABLE_DEFAULTS}"]:
        # node_exporter's --collector.disable-defaults: off unless switched on by name.
        switches = [s.key for s in all_specs if s.key.startswith("collectors.")]
        for key in switches:
            if key != f"collectors.{DISABLE_DEFAULTS}" and sources[key] == "default":
                values[key] = False
                sources[key] = "default, collectors.disable_defaults"
    config = _finish_sources(build(Config, values), sources)
    _check(config, sources)
    warnings = (
        *file_warnings,
        *_unknown_variables(all_specs, environ, dotenv, dotenv_path),
        *_elsewhere(all_specs, environ, given),
    )
    return Loaded(config, sources, detected, warnings)


def _unknown_variables(
    all_specs: Sequence[Spec],
    environ: Mapping[str, str],
    dotenv: Mapping[str, str],
    dotenv_path: str | Path,
) -> list[str]:
    """A PIXCRAWLER_ variable no setting reads, close to one that a setting does: a typo that
    would otherwise leave the setting at its default without a word. Only a warning: the
    crawler's own PIXCRAWLER_ variables often share the exporter's environment."""
    known = {name for spec in all_specs for name in spec.meta.env}
    found = []
    for names, where in ((environ, "environment variable"), (dotenv, f"{dotenv_path}:")):
        for name in sorted(n for n in names if n.startswith("PIXCRAWLER_") and n not in known):
            match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
            if match:
                found.append(f"{where} {name} is not a setting; did you mean {match[0]}?")
    return found


def _elsewhere(
    all_specs: Sequence[Spec], environ: Mapping[str, str], given: Mapping[str, _Given]
) -> list[str]:
    """Another program's variable for a setting (the crawler's DATABASE_URL) set while the
    setting is not: say which variable the exporter reads, rather than quietly running without."""
    return [
        f"{other} is set but the exporter does not read it; for {spec.key} set "
        f"{spec.meta.env[0]} (it may be the same value)"
        for spec in all_specs
        if spec.key not in given
        for other in spec.meta.elsewhere
        if other in environ
    ]


@dataclass(frozen=True)
class _Given:
    value: object  # as given: text, or a YAML value
    source: str  # provenance, as --print-config shows it
    where: str  # for error messages


def _given(
    all_specs: Sequence[Spec],
    environ: Mapping[str, str],
    flags: Mapping[str, object],
    config_file: str | None,
    dotenv: Mapping[str, str],
    dotenv_path: str | Path,
    flag_names: Mapping[str, str],
    warnings: list[str],
) -> dict[str, _Given]:
    """The value given for each key, by precedence: flags > environment > file > .env."""
    given: dict[str, _Given] = {}
    for key, text in dotenv.items():
        for spec in all_specs:
            if key in spec.meta.env:
                given[spec.key] = _Given(text, ".env", f"{key} in {dotenv_path}")
    if config_file is not None:
        for key, value in _yaml(config_file, {s.key for s in all_specs}, warnings).items():
            given[key] = _Given(value, f"file {config_file}", f"{key} in {config_file}")
    for spec in all_specs:
        named = [name for name in spec.meta.env if name in environ]
        if named:
            _agree(spec, environ, named)
            name = named[0]
            given[spec.key] = _Given(environ[name], f"env {name}", f"environment variable {name}")
    for spec in all_specs:
        flag_value = flags.get(spec.key)
        if flag_value is not None:
            flag = flag_names.get(spec.key) or spec.meta.flag or f"--{spec.key}"
            given[spec.key] = _Given(flag_value, f"flag {flag}", f"flag {flag}")
    return given


def _agree(spec: Spec, environ: Mapping[str, str], names: Sequence[str]) -> None:
    """A setting given under two of its names (PIXCRAWLER_LOG_LEVEL and seed 004's LOG_LEVEL)
    must say the same: silently preferring one would ignore the other."""
    first = names[0]
    for other in names[1:]:
        try:
            same = spec.meta.env_parse(environ[first]) == spec.meta.env_parse(environ[other])
        except ValueError:
            same = False  # the one in use is parsed, and reported, afterwards
        if not same:
            one, two = (
                (REDACTED, REDACTED)
                if spec.meta.secret
                else (repr(environ[first]), repr(environ[other]))
            )
            raise ConfigError(
                f"environment variables {first} ({one}) and {other} ({two}) both set "
                f"{spec.key} and disagree: set one of them"
            )


def _parse(spec: Spec, given: _Given) -> object:
    # Text from variables, .env and flags takes the text parser (percent thresholds); YAML
    # values, even strings, the YAML one.
    is_text = isinstance(given.value, str) and not given.source.startswith("file ")
    parse = spec.meta.env_parse if is_text else spec.meta.parse
    try:
        return parse(given.value)
    except ValueError as exc:
        shown = _secret_shown(given.value) if spec.meta.secret else _short(repr(given.value))
        raise ConfigError(f"{given.where}: {shown} is not valid; expected {exc}") from None


def _secret_shown(value: object) -> str:
    """A secret setting's value in a message: a URL that cannot hold a password is shown as
    written, so that its typo can be seen; anything else is redacted. A password sits between a
    ':' and the last '@' (whatever characters it holds), or in a password parameter."""
    if isinstance(value, str) and "://" not in value:
        return f"{REDACTED} (no scheme:// in it)"
    if not isinstance(value, str) or "password" in value.lower():
        return REDACTED
    before_host = value.partition("://")[2].rpartition("@")[0]
    return REDACTED if ":" in before_host else _short(repr(value))


def _finish_sources(config: Config, sources: Mapping[str, str]) -> Config:
    """Each source's own checks and secret files, on every load (so a reload reads a rotated
    secret); the source's package words its messages."""
    enabled = config.collectors.enabled()
    for r in REGISTRY.registrations():
        if r.settings is None:
            continue
        given = Provenance(r.section, sources, enabled[r.name])
        config = config.with_source(config.source(r.settings).finish(given))
    return config


def _check(config: Config, sources: Mapping[str, str]) -> None:
    """Rules of the exporter's own sections that involve more than one setting."""
    if config.cgroup_path is not None and config.cgroup_process is not None:
        raise ConfigError(
            f"cgroup_path (from {sources['cgroup_path']}) and cgroup_process (from "
            f"{sources['cgroup_process']}) both name the cgroup to watch: set one of them"
        )
    for resource in RESOURCES:
        pair = config.thresholds.pair(resource)
        if pair.warning > pair.critical:
            key = f"thresholds.{resource}"
            raise ConfigError(
                f"{key}.warning ({pair.warning:g}, from {sources[key + '.warning']}) is above "
                f"{key}.critical ({pair.critical:g}, from {sources[key + '.critical']}); "
                "expected warning <= critical"
            )


def _dotenv(path: str | Path) -> dict[str, str]:
    try:
        if not Path(path).is_file():
            return {}
        # About 1 MB, for those who have a .env.
        from dotenv import dotenv_values
        from dotenv.parser import parse_stream

        # python-dotenv skips a line it cannot parse with a warning, and the setting silently
        # keeps its default. The line itself is not quoted: it may hold a secret.
        with open(path, encoding="utf-8") as fh:
            bad = next((b.original.line for b in parse_stream(fh) if b.error), None)
        if bad is not None:
            raise ConfigError(f"{path} line {bad}: not a KEY=value line (an unclosed quote?)")
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


# Sections renamed: the old key is read into the new one, with a warning saying what to write.
RENAMED = {"alerts": "rules"}


def _yaml(path: str, known: set[str], warnings: list[str] | None = None) -> dict[str, object]:
    from pixcrawler_exporter.config.yamlfile import read_yaml_mapping  # PyYAML: only with a file

    doc = read_yaml_mapping(path, "config file")
    for old, new in RENAMED.items():
        doc = _renamed(doc, old, new, path, warnings if warnings is not None else [])
    flat: dict[str, object] = {}
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k}
    sections |= {s.rsplit(".", 1)[0] for s in sections if "." in s}

    def walk(node: Mapping[object, object], prefix: str) -> None:
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


def _renamed(
    doc: dict[object, object], old: str, new: str, path: str, warnings: list[str]
) -> dict[object, object]:
    """``doc`` with the old section's settings moved into the new one's."""
    moved = doc.get(old)
    if not isinstance(moved, dict):
        return doc  # absent, or not a mapping: the walk reports it as it finds it
    target = doc.get(new) or {}
    if not isinstance(target, dict):
        return doc
    both = sorted(str(k) for k in moved if k in target)
    if both:
        raise ConfigError(
            f"{old}.{both[0]} and {new}.{both[0]} in {path}: {old} is the old name of {new}; "
            f"keep only {new}.{both[0]}"
        )
    warnings.append(
        f"{old} in {path} is deprecated: its settings are now {new}.* "
        f"({', '.join(f'{new}.{k}' for k in moved)}); rename the section"
    )
    rest = {k: v for k, v in doc.items() if k != old}
    return {**rest, new: {**target, **moved}}


def _short(text: str, limit: int = 80) -> str:
    # A 5000-digit number is still one line, but not one anybody reads.
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def _closest(key: str, known: set[str]) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def env_names() -> set[str]:
    return {name for spec in specs() for name in spec.meta.env}
