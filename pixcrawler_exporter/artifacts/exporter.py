"""Alerts on the exporter and the sources it reads going dark: the exporter down, a collector
failing, a configuration refused, the database unreadable, Azure Monitor's figures stale."""

from __future__ import annotations

import math

from pixcrawler_exporter.artifacts.alerting import FOR, INSTANCE, Group, alert, duration
from pixcrawler_exporter.collectors.azure.settings import AzureSettings
from pixcrawler_exporter.config import Config

# Azure Monitor publishes platform metrics minutes late, so staleness is not judged in less time.
AZURE_MIN_STALE_SECONDS = 600


def exporter_group() -> Group:
    """The exporter itself: down, a collector failing, or a configuration refused."""
    up = "up"  # scoped by the selector like every other series
    return Group(
        "pixcrawler-exporter.exporter",
        [
            alert(
                "PixCrawlerExporterDown",
                # absent(): a job gone from service discovery would otherwise leave every
                # PixCrawler alert silent instead of firing.
                f"{up} == 0 or absent({up})",
                120,
                "critical",
                "PixCrawler exporter {{ with $labels.instance }}{{ . }}{{ else }}"
                "of job {{ $labels.job }}{{ end }} is down",
                "{{ if $labels.instance }}Prometheus could not scrape "
                f"{INSTANCE} (job {{{{ $labels.job }}}}) for {FOR}: up is {{{{ $value }}}}."
                "{{ else }}Prometheus has had no target of job {{ $labels.job }} for "
                f"{FOR}.{{{{ end }}}} No other PixCrawler alert can fire without its metrics.",
            ),
            alert(
                "PixCrawlerCollectorFailing",
                # The database collector fails whenever the database does, and
                # PixCrawlerDatabaseDown says so with the cause beside it; the celery collector
                # whenever its broker does, and PixCrawlerRedisDown says so.
                'pixcrawler_exporter_collector_success{collector!~"database|celery"} == 0',
                300,
                "warning",
                f"Collector {{{{ $labels.collector }}}} on {INSTANCE} is failing",
                f"The {{{{ $labels.collector }}}} collector on {INSTANCE} failed every scrape "
                f"for {FOR} (success {{{{ $value }}}}): its metrics are missing, so alerts on "
                "them cannot fire.",
            ),
            alert(
                "PixCrawlerExporterConfigReloadFailed",
                "pixcrawler_exporter_config_last_reload_successful == 0",
                300,
                "warning",
                f"The exporter on {INSTANCE} refused its new configuration",
                f"The last configuration reload of {INSTANCE} failed and has not succeeded for "
                f"{FOR} (successful {{{{ $value }}}}): it still runs the previous configuration, "
                "and the next restart will fail on the new one.",
            ),
        ],
    )


def database_group() -> Group:
    """The crawl database, unreachable."""
    return Group(
        "pixcrawler-exporter.database",
        [
            alert(
                "PixCrawlerDatabaseDown",
                # The second arm is a database collector that failed without any reading: an
                # exporter from before database_up was always present left it out when the
                # database hung, and nothing else would fire.
                "pixcrawler_database_up == 0 or (min without (collector) "
                '(pixcrawler_exporter_collector_success{collector="database"}) == 0 '
                "unless pixcrawler_database_up)",
                300,
                "critical",
                f"{INSTANCE} cannot read the PixCrawler database",
                f"Every collection from PostgreSQL by {INSTANCE} failed or went unanswered for "
                f"{FOR} (database_up {{{{ $value }}}}): active chunks are unknown, and so is "
                "capacity. pixcrawler_database_errors_total says why.",
            ),
        ],
    )


def azure_group(cfg: Config) -> Group:
    """Azure Monitor metrics that stopped arriving."""
    stale_after = max(
        AZURE_MIN_STALE_SECONDS, math.ceil(3 * cfg.source(AzureSettings).refresh_interval_seconds)
    )
    return Group(
        "pixcrawler-exporter.azure",
        [
            alert(
                "PixCrawlerAzureMetricsStale",
                # The second arm is an exporter that never read Azure Monitor and so has no
                # timestamp yet: +Inf is the honest age of metrics never read.
                f"time() - pixcrawler_azure_last_success_timestamp_seconds > {stale_after}"
                " or (pixcrawler_azure_up == 0 unless on (job, instance)"
                " pixcrawler_azure_last_success_timestamp_seconds) + Inf",
                300,
                "warning",
                f"Azure Monitor metrics on {INSTANCE} are stale",
                f"The last successful read of Azure Monitor by {INSTANCE} is "
                "{{ $value | humanizeDuration }} old (+Inf: none since it started), more than "
                f"{duration(stale_after)}, for {FOR}.",
            ),
        ],
    )
