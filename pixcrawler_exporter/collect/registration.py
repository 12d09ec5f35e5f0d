"""One registration per collector, made beside it, as node_exporter's ``registerCollector``.

A registration names the collector (its ``collectors.NAME`` key, ``--collector.NAME`` flag and
``PIXCRAWLER_COLLECTOR_NAME`` variable), says whether it is on by default, gives the help text of
that switch, hands over the collector's own configuration section (a ``SourceSettings``
dataclass, keyed ``NAME`` unless it says otherwise), and loads its class only when asked: a
package registers in its ``__init__`` and names the module holding the class, so a heavy client
library is imported when the collector is built or documented, not when the configuration is
read.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pixcrawler_exporter.collect.contract import Source

if TYPE_CHECKING:
    from pixcrawler_exporter.collectors.watched import Watched
    from pixcrawler_exporter.config import Config
    from pixcrawler_exporter.config.settings import SourceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildContext:
    """What a collector may be built from: the whole typed configuration and what start-up
    found out about the machine."""

    config: Config
    watched: Watched  # the cgroup the system collectors read
    procfs: Path
    rootfs: Path


@dataclass(frozen=True)
class Registration:
    name: str
    default: bool
    help: str
    load: Callable[[], type[Source]]
    # Why the collector cannot run with this configuration (None: it can). Asked before its
    # class is loaded, so a client library is not imported only to find out it is not needed.
    missing: Callable[[Config], str | None] | None = None
    # The collector's configuration section and its YAML key (the name unless given).
    settings: type[SourceSettings] | None = None
    settings_key: str | None = None

    @property
    def section(self) -> str:
        return self.settings_key or self.name


class Registry:
    """Registrations by name; the package's collectors all register in :data:`REGISTRY`."""

    def __init__(self, package: str | None = None) -> None:
        self.package = package  # imported in full before the registrations are listed
        self._found: dict[str, Registration] = {}

    def register(
        self,
        name: str,
        *,
        help: str,  # noqa: A002 - reads best at the registration
        load: Callable[[], type[Source]],
        default: bool = True,
        missing: Callable[[Config], str | None] | None = None,
        settings: type[SourceSettings] | None = None,
        settings_key: str | None = None,
    ) -> None:
        if not name.isidentifier() or name != name.lower() or name == "disable_defaults":
            raise ValueError(f"collector name {name!r} must be a lower-case identifier")
        if name in self._found:
            raise ValueError(f"collector {name!r} is registered twice")
        self._found[name] = Registration(name, default, help, load, missing, settings, settings_key)

    def registrations(self) -> tuple[Registration, ...]:
        """Every registration, by name: the order of README, ``--print-config`` and
        ``/metrics``."""
        if self.package is not None:
            _import_all(self.package)
        return tuple(self._found[name] for name in sorted(self._found))

    def build(
        self,
        enabled: Mapping[str, bool],
        context: BuildContext,
        kept: Mapping[str, Source | None] | None = None,
    ) -> list[Source]:
        """The enabled collectors; one whose source is not configured builds to None and is
        left out (it says why, once). One in ``kept`` (a reload's unchanged ones) is reused, even
        when it was left out, so a reload does not say it again."""
        kept = kept or {}
        built: list[Source | None] = []
        for r in self.registrations():
            if not enabled[r.name]:
                continue
            if r.name in kept:
                built.append(kept[r.name])
            elif r.missing is not None and (reason := r.missing(context.config)) is not None:
                # Said before the collector's module (and its heavy imports) is loaded.
                log.info("%s collector off: %s", r.name, reason)
            else:
                built.append(r.load().build(context))
        return [c for c in built if c is not None]


def _import_all(package: str) -> None:
    # Importing a module runs its registration: a new collector is one new file, no list to
    # extend. A package's __init__ registers; its submodules are left to load().
    root = importlib.import_module(package)
    for module in pkgutil.iter_modules(root.__path__, package + "."):
        importlib.import_module(module.name)


REGISTRY = Registry("pixcrawler_exporter.collectors")
register = REGISTRY.register


def lazy(module: str, name: str) -> Callable[[], type[Source]]:
    """``load`` for a class in a module that is imported only when the class is needed."""

    def load() -> type[Source]:
        found = getattr(importlib.import_module(module), name)
        if not (isinstance(found, type) and issubclass(found, Source)):
            raise TypeError(f"{module}.{name} is not a collector class")
        return found

    return load
