"""Declaring a setting once: its default, parser, environment variable(s), flag, help, secrecy
and per-environment default, kept as typed dataclass field metadata that loading, printing,
the flags and the README reference all walk."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Required, TypedDict, TypeVar, Unpack

from pixcrawler_exporter.config.parsers import Parser

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

_SETTING = "setting"  # field metadata key of a setting's SettingMeta
_SECTION = "section"  # field metadata key of a section whose settings its parent declares


@dataclass(frozen=True)
class SettingMeta:
    default: object
    parse: Parser[object]
    env: tuple[str, ...]
    flag: str | None
    help: str
    secret: bool
    env_parse: Parser[object]
    # Defaults that differ by where the exporter runs (seed 000); ``default`` elsewhere.
    by_environment: Mapping[str, object]


class Options(TypedDict, Generic[T], total=False):
    """How a setting is given and shown, besides its default and parser."""

    env: str | tuple[str, ...]
    flag: str | None
    help: Required[str]
    secret: bool
    env_parse: Parser[T] | None  # for text from variables, .env and flags; ``parse`` if unset
    by_environment: Mapping[str, T] | None


def declare(default: T, parse: Parser[T], **options: Unpack[Options[T]]) -> SettingMeta:
    if isinstance(default, list | dict):
        raise TypeError("use a tuple for list defaults")
    env = options.get("env", ())
    return SettingMeta(
        default,
        parse,
        (env,) if isinstance(env, str) else env,
        options.get("flag"),
        options["help"],
        options.get("secret", False),
        options.get("env_parse") or parse,
        options.get("by_environment") or {},
    )


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


def walk(cls: type[DataclassInstance], prefix: str = "") -> Iterator[Spec]:
    """Every setting below ``cls``, in declaration order, with its dotted key."""
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        meta, shared = f.metadata.get(_SETTING), f.metadata.get(_SECTION)
        if isinstance(meta, SettingMeta):
            yield Spec(key, meta)
        elif isinstance(shared, Section):
            yield from (Spec(f"{key}.{name}", m) for name, m in shared.settings.items())
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
        else:
            kwargs[f.name] = build(_section_class(f), values, key + ".")
    return cls(**kwargs)


def _section_class(f: dataclasses.Field[object]) -> type[DataclassInstance]:
    # A section's field is declared with its class as default_factory.
    factory = f.default_factory
    assert isinstance(factory, type) and dataclasses.is_dataclass(factory), f.name
    return factory
