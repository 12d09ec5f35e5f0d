"""A source's heavy packages are imported only when its collector is on (issue 15's footprint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("psycopg", "azure", "yaml", "dotenv", "psutil", "celery", "kombu", "redis")
# Builds the collectors as the exporter does for the environment it is given, then says which of
# the heavy packages were imported.
PROGRAM = f"""
import json, os, sys
from pixcrawler_exporter import cli, config
from pixcrawler_exporter.collect import registry
built = registry.build(config.load(os.environ, {{}}, None))
for c in built.collectors:
    c.close()
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def imported(tmp_path: Path, **env: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={"PIXCRAWLER_TEMP_DIRS": str(tmp_path), "PIXCRAWLER_LOG_LEVEL": "error", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_defaults_import_none_of_them(tmp_path: Path) -> None:
    assert imported(tmp_path) == []


def test_the_database_collector_imports_psycopg_when_on(tmp_path: Path) -> None:
    url = "postgresql://u@127.0.0.1:1/db"
    assert imported(tmp_path, PIXCRAWLER_DB_URL=url) == ["psycopg"]


def test_the_celery_collector_imports_kombu_and_redis_when_on_never_celery(tmp_path: Path) -> None:
    # The collector speaks to the broker with kombu and redis-py; Celery itself (~15 MB with its
    # dependencies) is not needed to read its queues or its event stream.
    # (kombu comes with the listener thread, when the collector starts.)
    url = "redis://127.0.0.1:1/0"
    assert imported(tmp_path, PIXCRAWLER_CELERY_BROKER_URL=url) == ["redis"]
