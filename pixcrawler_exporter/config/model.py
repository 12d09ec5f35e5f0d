"""The configuration model: every setting declared once with its default, environment
variable(s), flag, help, secrecy and per-environment default."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pixcrawler_exporter import environment
from pixcrawler_exporter.collect.registration import REGISTRY
from pixcrawler_exporter.collectors.azure import model as azure_model
from pixcrawler_exporter.collectors.database.queries import Query, parse_queries
from pixcrawler_exporter.config.parsers import (
    Parser,
    absolute_path,
    boolean,
    choice,
    database_url,
    integer,
    listen_address,
    name_overrides,
    number,
    optional_number,
    optional_text,
    path_list,
    patterns,
)

DEFAULT_PORT = 8395


def setting(
    default: Any,
    parse: Parser,
    *,
    env: str | tuple[str, ...] = (),
    flag: str | None = None,
    help: str,  # noqa: A002 - reads best at the declaration site
    secret: bool = False,
    env_parse: Parser | None = None,
    by_environment: Mapping[str, Any] | None = None,
) -> Any:
    """Declare a config field: its parser, environment variable(s), flag and help in one place."""
    names = (env,) if isinstance(env, str) else env
    meta = {
        "parse": parse,
        "env": names,
        "flag": flag,
        "help": help,
        "secret": secret,
        "env_parse": env_parse or parse,
        # Defaults that differ by where the exporter runs (seed 000); ``default`` elsewhere.
        "by_environment": by_environment or {},
    }
    if isinstance(default, list | dict):
        raise TypeError("use a tuple for list defaults")
    return field(default=default, metadata=meta)


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
class CollectorSwitches:
    """``collectors.NAME``: one switch per collector registration (collect/registration.py), so
    adding a collector adds its key, flag and variable without an edit here."""

    def __getattr__(self, name: str) -> bool:
        # Only reached for a name that is not a registered collector; typed for the ones that are.
        raise AttributeError(name)

    def enabled(self) -> dict[str, bool]:
        return {f.name: bool(getattr(self, f.name)) for f in dataclasses.fields(self)}


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
class Disk:
    paths: tuple[str, ...] = setting(
        (tempfile.gettempdir(), "/"),
        path_list,
        env="PIXCRAWLER_DISK_PATHS",
        help="Paths whose filesystems are reported (':'-separated in the variable).",
    )
    timeout_seconds: float = setting(
        2.0,
        number(0.01, 60),
        env="PIXCRAWLER_DISK_TIMEOUT_SECONDS",
        help="A filesystem that does not answer statvfs within this is reported failed.",
    )


@dataclass(frozen=True)
class Temp:
    dirs: tuple[str, ...] = setting(
        (tempfile.gettempdir(),),
        path_list,
        env="PIXCRAWLER_TEMP_DIRS",
        help="Directories holding the crawler's temp files (':'-separated in the variable).",
    )
    patterns: tuple[str, ...] = setting(
        ("*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif"),
        patterns,
        env="PIXCRAWLER_TEMP_PATTERNS",
        help="File name patterns counted as the crawler's files (comma-separated in the "
        "variable); case-insensitive.",
    )
    scan_interval_seconds: float = setting(
        30.0,
        number(1, 86400),
        env="PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS",
        help="How often the background scan walks the directories.",
    )
    recursive: bool = setting(
        True,
        boolean,
        env="PIXCRAWLER_TEMP_RECURSIVE",
        help="Walk subdirectories too (never following symlinks or leaving the filesystem).",
    )


@dataclass(frozen=True)
class Database:
    url: str | None = setting(
        None,
        database_url,
        env="PIXCRAWLER_DB_URL",
        secret=True,
        help="PostgreSQL URL; unset turns the database collector off.",
    )
    statement_timeout_seconds: float = setting(
        2.0,
        number(0.01, 600),
        env="PIXCRAWLER_DB_STATEMENT_TIMEOUT_SECONDS",
        help="The server cancels a query that runs longer than this.",
    )
    connect_timeout_seconds: float = setting(
        3.0,
        number(1, 600),
        env="PIXCRAWLER_DB_CONNECT_TIMEOUT_SECONDS",
        help="Give up connecting after this.",
    )
    preset: str = setting(
        "crawl_jobs",
        choice("crawl_jobs", "processing_chunks", "none"),
        env="PIXCRAWLER_DB_PRESET",
        help="Default queries: 'crawl_jobs' (seed 003's job table), 'processing_chunks' (seed "
        "001's per-chunk table) or 'none' (only database.queries).",
    )
    names: Mapping[str, Any] | None = setting(
        None,
        name_overrides,
        help="Table and column names for the preset, e.g. {table: jobs, active_chunks: active} "
        "(YAML only; see README for each preset's names).",
    )
    queries: tuple[Query, ...] = setting(
        (),
        parse_queries,
        help="Extra queries mapped to metrics, sql_exporter style (YAML only; see README).",
    )
    min_interval_seconds: float = setting(
        0.0,
        number(0, 86400),
        env="PIXCRAWLER_DB_MIN_INTERVAL_SECONDS",
        help="Serve cached results younger than this instead of querying; 0 queries on "
        "every scrape.",
    )


@dataclass(frozen=True)
class Azure:
    resource_id: str | None = setting(
        None,
        azure_model.parse_resource_id,
        env="PIXCRAWLER_AZURE_RESOURCE_ID",
        help="One Azure resource to read platform metrics of, with its type's default metrics.",
    )
    metrics_endpoint: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_AZURE_METRICS_ENDPOINT",
        help="Regional Azure Monitor metrics endpoint; '{region}' in it is replaced by each "
        "resource's region. Unset means https://{region}.metrics.monitor.azure.com.",
    )
    authority_host: str | None = setting(
        None,
        optional_text,
        env="AZURE_AUTHORITY_HOST",
        help="Microsoft Entra sign-in authority (sovereign clouds, tests); unset uses the "
        "public cloud's.",
    )
    tenant_id: str | None = setting(
        None, optional_text, env="AZURE_TENANT_ID", help="Tenant of the service principal."
    )
    client_id: str | None = setting(
        None, optional_text, env="AZURE_CLIENT_ID", help="Client (application) id."
    )
    client_secret: str | None = setting(
        None,
        optional_text,
        env="AZURE_CLIENT_SECRET",
        secret=True,
        help="Client secret; unset uses DefaultAzureCredential (workload or managed identity).",
    )
    refresh_interval_seconds: float = setting(
        60.0,
        number(5, 86400),
        env="PIXCRAWLER_AZURE_REFRESH_INTERVAL_SECONDS",
        help="How often the background refresher queries Azure Monitor.",
    )
    lookback_seconds: float = setting(
        600.0,
        number(60, 86400),
        env="PIXCRAWLER_AZURE_LOOKBACK_SECONDS",
        help="Window queried on each refresh; platform metrics arrive minutes late.",
    )
    max_age_seconds: float | None = setting(
        None,
        optional_number(1, 10**6),
        env="PIXCRAWLER_AZURE_MAX_AGE_SECONDS",
        help="Values older than this are dropped from the scrape; unset means 3 x the refresh "
        "interval.",
    )
    resources: tuple[azure_model.AzureResource, ...] = setting(
        (),
        azure_model.parse_resources,
        help="Resources to read platform metrics of (YAML only): each a resource id or a mapping "
        "of id, region, metrics and aggregation; adds to resource_id.",
    )
    workspace_id: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_AZURE_WORKSPACE_ID",
        help="Log Analytics workspace (of App Insights) that log_queries run against.",
    )
    logs_endpoint: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_AZURE_LOGS_ENDPOINT",
        help="Log Analytics query endpoint; unset uses the public cloud's.",
    )
    log_queries: tuple[azure_model.LogQuery, ...] = setting(
        (),
        azure_model.parse_log_queries,
        help="Named KQL queries (YAML only) exported as pixcrawler_azure_log_query_value: name, "
        "query, value_column, label_columns, timespan.",
    )


@dataclass(frozen=True)
class Capacity:
    max_concurrent_chunks: int = setting(
        35,
        integer(1, 100),
        env=("PIXCRAWLER_MAX_CONCURRENT_CHUNKS", "PIXCRAWLER_RESOURCE_MAX_CONCURRENT_CHUNKS"),
        by_environment={"azure_functions": 10},
        help="Chunks allowed to run at once (azure_functions: 10).",
    )
    max_temp_storage_mb: float = setting(
        20000.0,
        number(1, 10**9),
        env=("PIXCRAWLER_MAX_TEMP_STORAGE_MB", "PIXCRAWLER_RESOURCE_MAX_TEMP_STORAGE_MB"),
        by_environment={"azure_app_service": 8000.0, "azure_functions": 400.0},
        help="Temp storage quota in MB of 1024 x 1024 bytes (azure_app_service: 8000, "
        "azure_functions: 400).",
    )
    chunk_size_images: int = setting(
        500,
        integer(1, 10**6),
        env=("PIXCRAWLER_CHUNK_SIZE_IMAGES", "PIXCRAWLER_RESOURCE_CHUNK_SIZE_IMAGES"),
        help="Images per processing chunk.",
    )
    estimated_image_size_mb: float = setting(
        0.5,
        number(0.001, 10**4),
        env=("PIXCRAWLER_ESTIMATED_IMAGE_SIZE_MB", "PIXCRAWLER_RESOURCE_ESTIMATED_IMAGE_SIZE_MB"),
        help="Expected size of one downloaded image in MB, for storage-bound capacity.",
    )


THRESHOLD_RESOURCES = ("disk", "memory", "cpu", "temp_storage", "chunks")


def _thresholds(resource: str, env: str, warning: float, critical: float) -> Any:
    """A ``{warning, critical}`` section. Ratios in YAML; the seed's variables take percents
    (``PIXCRAWLER_DISK_THRESHOLD_WARN=80`` is 0.8); chunk thresholds are counts everywhere."""
    if resource == "chunks":
        parse: Parser = integer(0, 10**6)
        env_parse = parse
    else:
        parse, env_parse = number(0, 1), number(0, 1, scale=100, unit=" (percent)")
    fields = [
        (
            severity,
            float,
            setting(
                default,
                parse,
                env=f"PIXCRAWLER_{env}_THRESHOLD_{suffix}",
                env_parse=env_parse,
                help=f"{severity.capitalize()} threshold for {resource.replace('_', ' ')}"
                + (" (active chunks)." if resource == "chunks" else " usage (0-1)."),
            ),
        )
        for severity, suffix, default in (
            ("warning", "WARN", warning),
            ("critical", "ALERT", critical),
        )
    ]
    return dataclasses.make_dataclass(f"{resource.title()}Thresholds", fields, frozen=True)


DiskThresholds = _thresholds("disk", "DISK", 0.8, 0.9)


MemoryThresholds = _thresholds("memory", "MEMORY", 0.8, 0.9)


CpuThresholds = _thresholds("cpu", "CPU", 0.8, 0.95)


TempStorageThresholds = _thresholds("temp_storage", "TEMP_STORAGE", 0.8, 0.9)


ChunksThresholds = _thresholds("chunks", "CHUNK", 35, 40)


@dataclass(frozen=True)
class Thresholds:
    disk: Any = field(default_factory=DiskThresholds)
    memory: Any = field(default_factory=MemoryThresholds)
    cpu: Any = field(default_factory=CpuThresholds)
    temp_storage: Any = field(default_factory=TempStorageThresholds)
    chunks: Any = field(default_factory=ChunksThresholds)


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
    collectors: CollectorSwitches = field(default_factory=Collectors)
    disk: Disk = field(default_factory=Disk)
    temp: Temp = field(default_factory=Temp)
    database: Database = field(default_factory=Database)
    azure: Azure = field(default_factory=Azure)
    capacity: Capacity = field(default_factory=Capacity)
    thresholds: Thresholds = field(default_factory=Thresholds)
    log: Log = field(default_factory=Log)


@dataclass(frozen=True)
class Spec:
    key: str  # dotted YAML key
    field: dataclasses.Field[Any]

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.field.metadata


def specs(cls: type = Config, prefix: str = "") -> Iterator[Spec]:
    """Every setting of the model, in declaration order, with its dotted key."""
    for f in dataclasses.fields(cls):
        if "parse" in f.metadata:
            yield Spec(prefix + f.name, f)
        else:
            yield from specs(section_class(f), prefix + f.name + ".")


def section_class(f: dataclasses.Field[Any]) -> type:
    # A section's field is declared with its class as default_factory.
    factory = f.default_factory
    assert isinstance(factory, type), f.name
    return factory
