"""The health check's first documented path, kept for the compose files and ``--health-cmd``s
written against it: ``python -m pixcrawler_exporter.healthcheck`` runs
``pixcrawler-exporter healthcheck`` (pixcrawler_exporter/web/healthcheck.py)."""

from __future__ import annotations

import sys

from pixcrawler_exporter.web.healthcheck import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
