"""Where the project's documents live, for the alerts' runbook links and the landing page."""

REPOSITORY = "https://github.com/pixcrawler/pixcrawler-exporter"
RUNBOOK_URL = f"{REPOSITORY}/blob/main/docs/runbook.md"
DASHBOARD_URL = f"{REPOSITORY}/blob/main/grafana/pixcrawler-exporter.json"
