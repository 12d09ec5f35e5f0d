"""Declaring a setting once: its default, parser, environment variable(s), flag, help, secrecy
and per-environment default, kept as typed dataclass field metadata that loading, printing,
the flags and the README reference all walk.

A source declares its own section here (a frozen dataclass deriving from :class:`SourceSettings`)
and hands it to the configuration through its collector's registration; this module imports no
source and nothing that lists them, so a source's package may import it while it registers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Required, Self, TypedDict, TypeVar, Unpack

from pixcrawler_exporter.config.parsers import Parser
from pixcrawler_exporter.config.secretfile import read_secret

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

_SETTING = "setting"  # field metadata key of a setting's SettingMeta
_SECTION = "section"  # field metadata key of a section whose settings its parent declares
# Field metadata key of a container whose sections sit at the top level of the YAML (the
# sources' sections: ``database.url``, not ``sources.database.url``).
_FLAT = "flat"


@dataclass(frozen=True)
class SettingMeta:
    default: object
    parse: Parser[object]
    env: tuple[str, ...]
    flags: tuple[str, ...]  # the first is the name shown; the others are aliases
    help: str
    secret: bool
    env_parse: Parser[object]
    # Defaults that differ by where the exporter runs (seed 000); ``default`` elsewhere.
    by_environment: Mapping[str, object]
    # Other programs' variables for the same thing (the crawler's DATABASE_URL): not read, but
    # one set while the setting is not gets a warning naming the variable to set.
    elsewhere: tuple[str, ...] = ()

    @property
    def flag(self) -> str | None:
        return self.flags[0] if self.flags else None


class Options(TypedDict, Generic[T], total=False):
    """How a setting is given and shown, besides its default and parser."""

    env: str | tuple[str, ...]
    flag: str | tuple[str, ...] | None
    help: Required[str]
    secret: bool
    env_parse: Parser[T] | None  # for text from variables, .env and flags; ``parse`` if unset
    by_environment: Mapping[str, T] | None
    elsewhere: str | tuple[str, ...]


def declare(default: T, parse: Parser[T], **options: Unpack[Options[T]]) -> SettingMeta:
    if isinstance(default, list | dict):
        raise TypeError("use a tuple for list defaults")
    return SettingMeta(
        default,
        parse,
        _names(options.get("env")),
        _names(options.get("flag")),
        options["help"],
        options.get("secret", False),
        options.get("env_parse") or parse,
        options.get("by_environment") or {},
        _names(options.get("elsewhere")),
    )


def _names(given: str | tuple[str, ...] | None) -> tuple[str, ...]:
    return (given,) if isinstance(given, str) else given or ()


def setting(default: T, parse: Parser[T], **options: Unpack[Options[T]]) -> T:
    """Declare a config field: its parser, environment variable(s), flag and help in one place."""
    return field(default=default, metadata={_SETTING: declare(default, parse, **options)})


@dataclass(frozen=True)
class Section:
    """A section whose class is shared by several sections (a threshold pair), so the parent
    field declares its settings rather than the class's own fields."""

    cls: type[DataclassInstance]
    settings: Mapping[str, SettingMeta]


def section(default: D, settings: Mapping[str, SettingMeta]) -> D:
    return field(default=default, metadata={_SECTION: Section(type(default), settings)})


@dataclass(frozen=True)
class Spec:
    key: str  # dotted YAML key
    meta: SettingMeta

    @property
    def default(self) -> object:
        return self.meta.default


def flat(factory: type[D]) -> D:
    """A field holding sections that are keyed at its parent's level (see ``_FLAT``)."""
    return field(default_factory=factory, metadata={_FLAT: True})


def walk(cls: type[DataclassInstance], prefix: str = "") -> Iterator[Spec]:
    """Every setting below ``cls``, in declaration order, with its dotted key."""
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        meta, shared = f.metadata.get(_SETTING), f.metadata.get(_SECTION)
        if isinstance(meta, SettingMeta):
            yield Spec(key, meta)
        elif isinstance(shared, Section):
            yield from (Spec(f"{key}.{name}", m) for name, m in shared.settings.items())
        elif f.metadata.get(_FLAT):
            yield from walk(_section_class(f), prefix)
        else:
            yield from walk(_section_class(f), key + ".")


def build(cls: type[D], values: Mapping[str, object], prefix: str = "") -> D:
    """An instance of ``cls`` from parsed values by dotted key, sections built recursively."""
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        shared = f.metadata.get(_SECTION)
        if _SETTING in f.metadata:
            kwargs[f.name] = values[key]
        elif isinstance(shared, Section):
            kwargs[f.name] = shared.cls(
                **{name: values[f"{key}.{name}"] for name in shared.settings}
            )
        elif f.metadata.get(_FLAT):
            kwargs[f.name] = build(_section_class(f), values, prefix)
        else:
            kwargs[f.name] = build(_section_class(f), values, key + ".")
    return cls(**kwargs)


def lookup(node: object, key: str) -> object:
    """The value at a dotted key, looking through flat containers as :func:`walk` does."""
    for part in key.split("."):
        node = _child(node, part)
    return node


def _child(node: object, name: str) -> object:
    if not dataclasses.is_dataclass(node):
        raise KeyError(name)
    for f in dataclasses.fields(node):
        if f.metadata.get(_FLAT):
            inner = getattr(node, f.name)
            if any(g.name == name for g in dataclasses.fields(inner)):
                return getattr(inner, name)
        elif f.name == name:
            return getattr(node, name)
    raise KeyError(name)


@dataclass(frozen=True)
class Provenance:
    """What a source's section may ask of the load that built it: where each of its values came
    from (for messages), whether its collector will run, and its secret files read."""

    key: str  # the section's dotted key: "database"
    sources: Mapping[str, str]  # dotted key -> where its value came from
    enabled: bool  # the collector's switch; a section of a collector that is off checks less

    def of(self, name: str) -> str:
        """Where the section's setting ``name`` came from: "env PIXCRAWLER_DB_URL", "default"."""
        return self.sources[f"{self.key}.{name}"]

    def where(self, name: str) -> str:
        """``database.password_file (env PIXCRAWLER_DB_PASSWORD_FILE)``: the head of a message."""
        return f"{self.key}.{name} ({self.of(name)})"

    def secret(self, name: str, path: str) -> str:
        """The secret in the file that setting ``name`` names, read within bounds."""
        return read_secret(path, f"{self.key}.{name}", self.of(name))


class SourceSettings:
    """Base of a source's section: a frozen dataclass of :func:`setting` fields.

    :meth:`finish` runs on every load (so a reload reads a rotated secret file again) once every
    value is parsed: it checks what involves more than one setting and fills secrets from files,
    raising ``ConfigError`` with a message that names the setting.
    """

    def finish(self, given: Provenance) -> Self:
        return self


def _section_class(f: dataclasses.Field[object]) -> type[DataclassInstance]:
    # A section's field is declared with its class as default_factory.
    factory = f.default_factory
    assert isinstance(factory, type) and dataclasses.is_dataclass(factory), f.name
    return factory
