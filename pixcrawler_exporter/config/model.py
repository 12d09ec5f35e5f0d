"""The configuration model: the root, the exporter's own sections (web, paths, collectors, log)
and the sections of each source, declared in ``sources`` and ``thresholds``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pixcrawler_exporter import environment
from pixcrawler_exporter.config.parsers import (
    absolute_path,
    boolean,
    choice,
    integer,
    listen_address,
    number,
    optional_text,
)
from pixcrawler_exporter.config.settings import Spec, setting, walk
from pixcrawler_exporter.config.sources import Azure, Capacity, Database, Disk, Temp
from pixcrawler_exporter.config.thresholds import Thresholds

DEFAULT_PORT = 8395


@dataclass(frozen=True)
class Web:
    listen: str = setting(
        f":{DEFAULT_PORT}",
        listen_address,
        env="PIXCRAWLER_LISTEN",
        flag="--listen",
        help="Address the HTTP server listens on; ':PORT' means every interface.",
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


@dataclass(frozen=True)
class Collectors:
    memory: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_MEMORY",
        flag="--collector.memory",
        help="Container-correct memory: cgroup limit, usage, working set, OOM kills; host memory.",
    )
    cpu: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_CPU",
        flag="--collector.cpu",
        help="CPU limit in cores, CPU seconds used, CFS throttling.",
    )
    pressure: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_PRESSURE",
        flag="--collector.pressure",
        help="Pressure stall information (PSI) for cpu, memory and io.",
    )
    disk: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_DISK",
        flag="--collector.disk",
        help="Size and free space of the filesystems holding disk.paths.",
    )
    network: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_NETWORK",
        flag="--collector.network",
        help="Bytes received and sent per network interface, loopback excluded.",
    )
    temp_storage: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_TEMP_STORAGE",
        flag="--collector.temp_storage",
        help="Bytes and files of the crawler's temp files, from a background scan.",
    )
    azure: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_AZURE",
        flag="--collector.azure",
        help="Azure Monitor platform metrics and log queries (only in mode azure).",
    )
    database: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_COLLECTOR_DATABASE",
        flag="--collector.database",
        help="Active chunks and jobs from PostgreSQL (off while database.url is unset).",
    )


@dataclass(frozen=True)
class Log:
    level: str = setting(
        "info",
        choice("debug", "info", "warning", "error"),
        env="PIXCRAWLER_LOG_LEVEL",
        flag="--log-level",
        help="Lowest level logged.",
    )
    format: str = setting(
        "text",
        choice("text", "json"),
        env="PIXCRAWLER_LOG_FORMAT",
        flag="--log-format",
        help="'text' for people, 'json' for one JSON object per line.",
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
        env="PIXCRAWLER_ENVIRONMENT",
        help="Where the exporter runs; 'auto' detects it ('azure' is accepted for "
        "azure_app_service).",
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
    web: Web = field(default_factory=Web)
    paths: Paths = field(default_factory=Paths)
    collectors: Collectors = field(default_factory=Collectors)
    disk: Disk = field(default_factory=Disk)
    temp: Temp = field(default_factory=Temp)
    database: Database = field(default_factory=Database)
    azure: Azure = field(default_factory=Azure)
    capacity: Capacity = field(default_factory=Capacity)
    thresholds: Thresholds = field(default_factory=Thresholds)
    log: Log = field(default_factory=Log)


def specs() -> Iterator[Spec]:
    """Every setting of the model, in declaration order, with its dotted key."""
    return walk(Config)
