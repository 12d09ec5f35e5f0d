"""Reading a YAML file whose top level is a mapping: the config file and the web config file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeAlias

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from pixcrawler_exporter.config.boundedfile import UnreadableError, read_bounded
from pixcrawler_exporter.config.parsers import ConfigError

# Far more than any configuration needs (a hundred custom queries are some 20 KB): a larger file
# is a mistake, and reading it whole must not be how the exporter finds out.
MAX_BYTES = 4 * 1024 * 1024
# More digits than any setting needs (int64 has 19); beyond this a number is a mistake, and
# beyond Python's 4300 int() raises an error that YAML does not place.
MAX_DIGITS = 30

# A value as the safe loader yields it: str, int, float, bool, None, a date or datetime, bytes
# (!!binary), a list, a set (!!set) or a mapping of those, whose keys need not be strings. Typed
# as object rather than as a union of those: mypy then makes every reader narrow with isinstance
# where it takes a value, and that is where a file of another shape becomes a ConfigError that
# names the key, never an AttributeError or a setting silently of the wrong type.
Yaml: TypeAlias = object
YamlMapping: TypeAlias = Mapping[Yaml, Yaml]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would otherwise take silently or crash on."""

    def construct_mapping(
        self, node: yaml.MappingNode, deep: bool = False
    ) -> dict[Hashable, object]:
        # PyYAML keeps the last of two equal keys: one of two settings would be lost unseen.
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise ConstructorError(
                        None, None, f"found duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            except TypeError:
                pass  # unhashable: the base class says so itself
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if sum(c.isalnum() for c in text) > MAX_DIGITS + 1:  # + 1: the x of 0x
            raise ConstructorError(
                None, None, f"a number of more than {MAX_DIGITS} digits", node.start_mark
            )
        return int(SafeConstructor.construct_yaml_int(self, node))


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def read_yaml_mapping(path: str, what: str) -> dict[Yaml, Yaml]:
    """A YAML file whose top level is a mapping ({} when empty); ConfigError says what is wrong,
    with ``what`` naming the kind of file ("config file", "web config file")."""
    try:
        text = read_bounded(path, MAX_BYTES).decode("utf-8")
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except UnreadableError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
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
