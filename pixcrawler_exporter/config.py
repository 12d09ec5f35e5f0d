"""Every setting: its default, environment variable, YAML key, validation, redaction and provenance.

Precedence, highest first: command-line flag > environment variable > YAML file (``--config``) >
``.env`` file in the working directory > default. Nothing else in the package reads
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from pixcrawler_exporter import azure_model, environment
from pixcrawler_exporter.queries import Query, default_queries, parse_queries

REDACTED = "<redacted>"
DEFAULT_PORT = 8395


class ConfigError(Exception):
    """A setting is wrong. The message names the setting, the bad value and what is accepted."""


# --- parsers: each takes a raw value (text from env/flags/.env, or a YAML value) ---------------
# They raise ValueError whose message says what is accepted.

Parser = Callable[[Any], Any]


def integer(low: int, high: int) -> Parser:
    def parse(raw: Any) -> int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw.strip()) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return value

    return parse


def number(low: float, high: float, scale: float = 1.0, unit: str = "") -> Parser:
    """A float in [low, high] after dividing by ``scale`` (percent variables use scale=100)."""

    def parse(raw: Any) -> float:
        accepted = f"a number from {low * scale:g} to {high * scale:g}{unit}"
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw.strip() if isinstance(raw, str) else raw) / scale
        except (TypeError, ValueError):
            raise ValueError(accepted) from None
        if not low <= value <= high:  # also rejects NaN
            raise ValueError(accepted)
        return value

    return parse


def optional_number(low: float, high: float) -> Parser:
    inner = number(low, high)
    return lambda raw: None if raw is None or raw == "" else inner(raw)


def boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("true or false")


def choice(*options: str, aliases: Mapping[str, str] | None = None) -> Parser:
    aliases = aliases or {}

    def parse(raw: Any) -> str:
        word = raw.strip().lower() if isinstance(raw, str) else ""
        if word in options:
            return word
        if word in aliases:
            return aliases[word]
        raise ValueError(f"one of {', '.join(options)}")

    return parse


def text(raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise ValueError("a string")
    return str(raw)


def optional_text(raw: Any) -> str | None:
    return None if raw is None or raw == "" else text(raw)


def path_list(raw: Any) -> tuple[str, ...]:
    """A list of absolute paths: a YAML list, or text separated by ':' (like $PATH)."""
    items = raw.split(":") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("a list of absolute paths (separated by ':' in a variable)")
    paths = tuple(i for i in (s.strip() for s in items) if i)
    if not paths or not all(p.startswith("/") for p in paths):
        raise ValueError("a non-empty list of absolute paths (separated by ':' in a variable)")
    return paths


def absolute_path(raw: Any) -> str:
    value = text(raw)
    if not value.startswith("/"):
        raise ValueError("an absolute path")
    return value


def listen_address(raw: Any) -> str:
    accepted = "HOST:PORT, [IPv6]:PORT or :PORT with a port from 1 to 65535"
    value = text(raw).strip()
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(accepted)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(accepted)
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(accepted) from None
    elif ":" in host:
        raise ValueError(accepted + " (write IPv6 addresses in brackets)")
    return value


# --- the model ---------------------------------------------------------------------------------


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


def patterns(raw: Any) -> tuple[str, ...]:
    """Shell-style file name patterns: a YAML list, or comma-separated text."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("a list of file name patterns such as '*.jpg' (comma-separated)")
    found = tuple(i for i in (s.strip() for s in items) if i)
    if not found:
        raise ValueError("at least one file name pattern such as '*.jpg' (comma-separated)")
    return found


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


def database_url(raw: Any) -> str | None:
    """A PostgreSQL URL; the SQLAlchemy form 'postgresql+asyncpg://' is accepted as is."""
    if raw is None or raw == "":
        return None
    value = text(raw).strip()
    scheme, sep, rest = value.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if not sep or base not in {"postgresql", "postgres"} or not rest:
        raise ValueError("a URL such as postgresql://user:password@host:5432/pixcrawler")
    return f"postgresql://{rest}"


def name_overrides(raw: Any) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ValueError("a mapping of preset name to table or column name")
    return dict(raw)


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
    collectors: Collectors = field(default_factory=Collectors)
    disk: Disk = field(default_factory=Disk)
    temp: Temp = field(default_factory=Temp)
    database: Database = field(default_factory=Database)
    azure: Azure = field(default_factory=Azure)
    capacity: Capacity = field(default_factory=Capacity)
    thresholds: Thresholds = field(default_factory=Thresholds)
    log: Log = field(default_factory=Log)


# --- loading -----------------------------------------------------------------------------------


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
            yield from specs(_section(f), prefix + f.name + ".")


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
        else _build(_section(f), values, prefix + f.name + ".")
        for f in dataclasses.fields(cls)
    }
    return cls(**kwargs)


def _section(f: dataclasses.Field[Any]) -> type:
    # A section's field is declared with its class as default_factory.
    factory = f.default_factory
    assert isinstance(factory, type), f.name
    return factory


def _dotenv(path: str | Path) -> dict[str, str]:
    try:
        if not Path(path).is_file():
            return {}
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def read_yaml_mapping(path: str, what: str) -> dict[Any, Any]:
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


# --- printing ----------------------------------------------------------------------------------


def render(loaded: Loaded) -> str:
    """The effective configuration as YAML that ``--config`` accepts, secrets redacted, each line
    commented with where its value came from."""
    lines = [f"# environment detected: {loaded.detected_environment}"]
    open_sections: list[str] = []
    for spec in specs():
        *sections, name = spec.key.split(".")
        common = 0
        while (
            common < min(len(sections), len(open_sections))
            and sections[common] == open_sections[common]
        ):
            common += 1
        for depth in range(common, len(sections)):
            lines.append("  " * depth + f"{sections[depth]}:")
        open_sections = sections
        value = _get(loaded.config, spec.key)
        if spec.meta["secret"] and value is not None:
            value = REDACTED
        shown = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6)
        shown = shown.removesuffix("\n").removesuffix("\n...")
        lines.append("  " * len(sections) + f"{name}: {shown}  # {loaded.sources[spec.key]}")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """What yaml.safe_dump can write: tuples as lists, dataclasses (queries) as mappings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v not in (None, ())}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _get(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def env_names() -> set[str]:
    return {name for spec in specs() for name in spec.meta["env"]}
