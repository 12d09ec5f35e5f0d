"""The configuration model: the root, the exporter's own sections (web, paths, collectors, log,
capacity, thresholds, rules) and each source's section, which the source declares and hands over
through its collector's registration."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from pixcrawler_exporter import environment
from pixcrawler_exporter.collect.registration import REGISTRY
from pixcrawler_exporter.config.alerting import Rules
from pixcrawler_exporter.config.capacity import Capacity
from pixcrawler_exporter.config.parsers import (
    absolute_path,
    boolean,
    choice,
    integer,
    listen_address,
    number,
    optional_regex,
    optional_text,
    telemetry_path,
)
from pixcrawler_exporter.config.settings import SourceSettings, Spec, flat, setting, walk
from pixcrawler_exporter.config.thresholds import Thresholds

S = TypeVar("S", bound=SourceSettings)

DEFAULT_PORT = 8395


@dataclass(frozen=True)
class Web:
    listen: str = setting(
        f":{DEFAULT_PORT}",
        listen_address,
        env="PIXCRAWLER_LISTEN",
        # node_exporter's name first; --listen, this exporter's first spelling, still works.
        flag=("--web.listen-address", "--listen"),
        help="Address the HTTP server listens on; ':PORT' means every interface.",
    )
    telemetry_path: str = setting(
        "/metrics",
        telemetry_path,
        env="PIXCRAWLER_WEB_TELEMETRY_PATH",
        flag="--web.telemetry-path",
        help="Path under which the metrics are served.",
    )
    scrape_timeout_seconds: float = setting(
        10.0,
        number(0.1, 600),
        env="PIXCRAWLER_SCRAPE_TIMEOUT_SECONDS",
        help="Deadline of a scrape that sends no X-Prometheus-Scrape-Timeout-Seconds header.",
    )
    config_file: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_WEB_CONFIG_FILE",
        flag="--web.config.file",
        help="Prometheus exporter-toolkit web config (TLS, basic auth); unset serves plain HTTP "
        "without authentication.",
    )
    max_requests: int = setting(
        40,
        integer(1, 10000),
        env="PIXCRAWLER_WEB_MAX_REQUESTS",
        flag="--web.max-requests",
        help="Requests served at once; more are answered 503 at once instead of queueing.",
    )
    scrape_timeout_offset_seconds: float = setting(
        0.5,
        number(0, 10),
        env="PIXCRAWLER_SCRAPE_TIMEOUT_OFFSET_SECONDS",
        help="Subtracted from Prometheus's scrape timeout so the answer arrives before it.",
    )
    enable_lifecycle: bool = setting(
        False,
        boolean,
        env="PIXCRAWLER_WEB_ENABLE_LIFECYCLE",
        flag="--web.enable-lifecycle",
        help="Serve POST /-/reload, which reloads the configuration as SIGHUP does.",
    )


@dataclass(frozen=True)
class Paths:
    procfs: str = setting(
        "/proc",
        absolute_path,
        env="PIXCRAWLER_PATH_PROCFS",
        flag="--path.procfs",
        help="Mount point of the proc filesystem.",
    )
    sysfs: str = setting(
        "/sys",
        absolute_path,
        env="PIXCRAWLER_PATH_SYSFS",
        flag="--path.sysfs",
        help="Mount point of the sys filesystem (cgroups are found below it).",
    )
    rootfs: str = setting(
        "/",
        absolute_path,
        env="PIXCRAWLER_PATH_ROOTFS",
        flag="--path.rootfs",
        help="Where the watched root filesystem is mounted ('/host' for docker run on a host); "
        "disk paths are looked up below it.",
    )


DISABLE_DEFAULTS = "disable_defaults"


@dataclass(frozen=True)
class CollectorSwitches:
    """``collectors.NAME``: one switch per collector registration (collect/registration.py), so
    adding a collector adds its key, flag and variable without an edit here."""

    disable_defaults: bool = setting(
        False,
        boolean,
        env="PIXCRAWLER_COLLECTOR_DISABLE_DEFAULTS",
        flag="--collector.disable-defaults",
        help="Every collector off unless switched on by name (--collector.NAME), as "
        "node_exporter's flag.",
    )

    def __getattr__(self, name: str) -> bool:
        # Only reached for a name that is not a registered collector; typed for the ones that are.
        raise AttributeError(name)

    def enabled(self) -> dict[str, bool]:
        return {
            f.name: bool(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != DISABLE_DEFAULTS
        }


def _collector_switches() -> type[CollectorSwitches]:
    switches = [
        (
            r.name,
            bool,
            setting(
                r.default,
                boolean,
                env=f"PIXCRAWLER_COLLECTOR_{r.name.upper()}",
                flag=f"--collector.{r.name}",
                help=r.help,
            ),
        )
        for r in REGISTRY.registrations()
    ]
    made = dataclasses.make_dataclass(
        "Collectors", switches, bases=(CollectorSwitches,), frozen=True
    )
    assert issubclass(made, CollectorSwitches)
    return made


Collectors = _collector_switches()


@dataclass(frozen=True)
class SourceSections:
    """The sources' own sections, one field per registration that declares one, keyed at the
    top level of the configuration (``database.url``)."""

    def get(self, kind: type[S]) -> S:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) is kind:
                return value
        raise LookupError(f"no collector registers the settings {kind.__name__}")


def _source_sections() -> type[SourceSections]:
    sections = [
        (r.section, r.settings, field(default_factory=r.settings))
        for r in REGISTRY.registrations()
        if r.settings is not None
    ]
    made = dataclasses.make_dataclass("Sources", sections, bases=(SourceSections,), frozen=True)
    assert issubclass(made, SourceSections)
    return made


Sources = _source_sections()


@dataclass(frozen=True)
class Log:
    level: str = setting(
        "info",
        # The spellings other programs use for the same levels, in any case (LOG_LEVEL=WARN).
        choice(
            "debug",
            "info",
            "warning",
            "error",
            aliases={"warn": "warning", "err": "error", "critical": "error", "fatal": "error"},
        ),
        env=("PIXCRAWLER_LOG_LEVEL", "LOG_LEVEL"),
        flag=("--log.level", "--log-level"),
        help="Lowest level logged: debug, info, warning (or warn) or error, in any case "
        "(LOG_LEVEL as seed 004 spells it: DEBUG, INFO, ...).",
    )
    format: str = setting(
        "text",
        choice("text", "json", aliases={"standard": "text"}),
        env=("PIXCRAWLER_LOG_FORMAT", "LOG_FORMAT"),
        flag=("--log.format", "--log-format"),
        help="'text' for people, 'json' for one JSON object per line (LOG_FORMAT=standard, "
        "seed 004's word, is text).",
    )


@dataclass(frozen=True)
class Config:
    mode: str = setting(
        "local",
        choice("local", "azure"),
        env="PIXCRAWLER_MODE",
        help="'local' reads the container and host; 'azure' also reads Azure Monitor.",
    )
    environment: str = setting(
        "auto",
        choice("auto", *environment.ENVIRONMENTS, aliases={"azure": "azure_app_service"}),
        env=("PIXCRAWLER_ENVIRONMENT", "PIXCRAWLER_RESOURCE_ENVIRONMENT"),
        help="Where the exporter runs; 'auto' detects it ('azure' is accepted for "
        "azure_app_service; seed 003 names the variable PIXCRAWLER_RESOURCE_ENVIRONMENT).",
    )
    poll_interval_seconds: float = setting(
        60.0,
        number(1, 86400),
        env="PIXCRAWLER_POLL_INTERVAL_SECONDS",
        help="How often statuses are evaluated and changes logged, scraped or not.",
    )
    cgroup_path: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_CGROUP_PATH",
        help="Cgroup to watch, as written in /proc/PID/cgroup; empty means the exporter's own.",
    )
    cgroup_process: str | None = setting(
        None,
        optional_regex,
        env="PIXCRAWLER_CGROUP_PROCESS",
        help="Watch the cgroup of the oldest process, outside the exporter's container, whose "
        "command line matches this regular expression: a sidecar sharing the crawler's PID "
        "namespace reads the crawler's memory and CPU. Empty: the exporter's own cgroup.",
    )
    web: Web = field(default_factory=Web)
    paths: Paths = field(default_factory=Paths)
    collectors: CollectorSwitches = field(default_factory=Collectors)
    sources: SourceSections = flat(Sources)
    capacity: Capacity = field(default_factory=Capacity)
    thresholds: Thresholds = field(default_factory=Thresholds)
    log: Log = field(default_factory=Log)
    rules: Rules = field(default_factory=Rules)

    def source(self, kind: type[S]) -> S:
        """A source's section by its class: ``config.source(DatabaseSettings).url``."""
        return self.sources.get(kind)

    def with_source(self, section: SourceSettings) -> Config:
        """This configuration with one source's section replaced."""
        name = next(f.name for f in dataclasses.fields(self.sources) if type(section) is f.type)
        return dataclasses.replace(
            self, sources=dataclasses.replace(self.sources, **{name: section})
        )


def specs() -> Iterator[Spec]:
    """Every setting of the model, in declaration order, with its dotted key."""
    return walk(Config)
