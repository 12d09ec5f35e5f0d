"""PostgreSQL: active chunks and jobs, and sql_exporter-style custom queries."""

from pixcrawler_exporter.collect.registration import lazy, register

register(
    "database",
    help="Active chunks and jobs from PostgreSQL (off while database.url is unset).",
    load=lazy("pixcrawler_exporter.collectors.database.collector", "DatabaseCollector"),
)
