"""Azure Monitor's configuration section: ``azure.*`` (and the SDK's own ``AZURE_*`` names)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pixcrawler_exporter.collectors.azure import model
from pixcrawler_exporter.collectors.azure.presets import BY_NAME as LOG_PRESET_NAMES
from pixcrawler_exporter.collectors.azure.presets import parse_log_presets
from pixcrawler_exporter.config.parsers import ConfigError, number, optional_number, optional_text
from pixcrawler_exporter.config.settings import Provenance, SourceSettings, setting


@dataclass(frozen=True)
class AzureSettings(SourceSettings):
    resource_id: str | None = setting(
        None,
        model.parse_resource_id,
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
    resources: tuple[model.AzureResource, ...] = setting(
        (),
        model.parse_resources,
        help="Resources to read platform metrics of (YAML only): each a resource id or a mapping "
        "of id, region, metrics and aggregation; adds to resource_id.",
    )
    workspace_id: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_AZURE_WORKSPACE_ID",
        help="Log Analytics workspace (of App Insights) that log_queries and log_presets run "
        "against.",
    )
    logs_endpoint: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_AZURE_LOGS_ENDPOINT",
        help="Log Analytics query endpoint; unset uses the public cloud's.",
    )
    log_queries: tuple[model.LogQuery, ...] = setting(
        (),
        model.parse_log_queries,
        help="Named KQL queries (YAML only) exported as pixcrawler_azure_log_query_value: name, "
        "query, value_column, label_columns, timespan.",
    )
    log_presets: tuple[str, ...] = setting(
        (),
        parse_log_presets,
        env="PIXCRAWLER_AZURE_LOG_PRESETS",
        help="Seed 002's App Insights queries to run, by name (comma-separated in the variable): "
        f"{', '.join(LOG_PRESET_NAMES)}; each is a gauge of its own, counts weighted by "
        "ItemCount (sampling). docs/azure.md lists their KQL.",
    )

    def finish(self, given: Provenance) -> AzureSettings:
        if self.client_secret_file is None:
            return self
        if self.client_secret is not None:
            raise ConfigError(
                "azure.client_secret_file: azure.client_secret is set too; give one or the other"
            )
        secret = given.secret("client_secret_file", self.client_secret_file)
        return dataclasses.replace(self, client_secret=secret)
