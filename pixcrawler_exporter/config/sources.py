"""Settings of the sources read and of what is derived from them: disk, temp files, the
database, Azure Monitor and capacity."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from pixcrawler_exporter.collectors.azure import model as azure_model
from pixcrawler_exporter.collectors.database.queries import Query, parse_queries
from pixcrawler_exporter.config.parsers import (
    boolean,
    choice,
    database_url,
    integer,
    name_overrides,
    number,
    optional_number,
    optional_text,
    path_list,
    patterns,
)
from pixcrawler_exporter.config.settings import setting


def default_temp_dir() -> str:
    """Python's temp directory (``$TMPDIR``, else ``/tmp``), even where it cannot be written."""
    try:
        return tempfile.gettempdir()
    except FileNotFoundError:
        # gettempdir() insists on a directory it can write to, and a read-only root filesystem
        # (readOnlyRootFilesystem, docker run --read-only) has none. The exporter only reads
        # this directory, so it takes the one gettempdir() tries first instead of failing.
        for name in ("TMPDIR", "TEMP", "TMP"):
            if value := os.environ.get(name):
                return value
        return "/tmp"


@dataclass(frozen=True)
class Disk:
    paths: tuple[str, ...] = setting(
        (default_temp_dir(), "/"),
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
        (default_temp_dir(),),
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
        help="How often the background scan walks the directories; where inotify follows "
        "them (local filesystems), how often it reconciles.",
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
    password_file: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_DB_PASSWORD_FILE",
        help="File holding the database password (a mounted secret), for a database.url "
        "without one; read at start and on every reload.",
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
    names: Mapping[str, object] | None = setting(
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
    arm_endpoint: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_AZURE_ARM_ENDPOINT",
        help="Azure Resource Manager, asked for a resource's region and a web app's App Service "
        "plan (sovereign clouds, tests); unset means https://management.azure.com.",
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
    client_secret_file: str | None = setting(
        None,
        optional_text,
        env="AZURE_CLIENT_SECRET_FILE",
        help="File holding the client secret (a mounted secret), instead of client_secret; read "
        "at start and on every reload.",
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
