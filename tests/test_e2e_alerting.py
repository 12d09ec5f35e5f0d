"""End to end: the exporter, a real Prometheus with the rules loaded, a real Alertmanager, and a
webhook receiver run here. Real breaches (temp files past the quota, active chunks in a real
database past the threshold, the exporter hanging) must reach the webhook as firing
notifications with their labels and annotations, then as resolved ones; and every query of the
dashboard must return data from that Prometheus.

The rules are rendered from the exporter's own configuration with every ``for:`` divided by 60
(``rules.render(for_scale=...)``): 2m becomes 2s. Expressions, thresholds and annotations are the
shipped ones.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from grafana import dashboard as generator
from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import recording, rules
from tests.conftest import Exporter, http_get, need, need_tool, sample, start_exporter
from tests.helpers.alerting import (
    AlertStack,
    Webhook,
    assert_pages_and_resolves,
    start_alertmanager,
    start_prometheus,
    write_prometheus_config,
)
from tests.helpers.dashboard import PIPELINE_ROW, exposed, fill, row_panels, source_metrics
from tests.helpers.processes import stop
from tests.helpers.wait import wait_until
from tests.pg import CRAWL_JOBS_TABLE

if TYPE_CHECKING:
    from tests.azure_fake import FakeAzure
    from tests.pg import PostgresServer

# Imported by pytest as a plugin, not here: a module imported first is not assert-rewritten.
pytest_plugins = ["tests.pg"]
# Real PostgreSQL, exporter, Prometheus and Alertmanager, tens of seconds per test.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = "pixcrawler"
FOR_SCALE = 1 / 60
TEMP_LIMIT_MB = 1
MIB = 1024 * 1024
E2E_DATABASE = "pixcrawler_e2e"

# Metrics from a source the stack may not have, and metrics a host's kernel may not report.
DATABASE_METRICS = {
    "pixcrawler_database_up",
    "pixcrawler_database_errors_total",
    "pixcrawler_chunks_active",
    "pixcrawler_jobs",
    "pixcrawler_job_chunks",
    "pixcrawler_jobs_counters_out_of_sync",
    "pixcrawler_jobs_stalled",
    # Built on the active count from the database.
    "pixcrawler_chunks_available",
    "pixcrawler_capacity_utilization_ratio",
    "pixcrawler_can_start_chunk",
}
HOST_DEPENDENT = {
    "pixcrawler_memory_oom_kills_total": "the kernel reports no OOM kill count for this cgroup",
    "pixcrawler_cpu_throttled_seconds_total": "this cgroup has no CFS throttling statistics",
    "pixcrawler_cpu_throttled_periods_total": "this cgroup has no CFS throttling statistics",
    "pixcrawler_pressure_stall_seconds_total": "this kernel has no pressure stall information",
}
CRAWL_JOBS = (
    CRAWL_JOBS_TABLE
    + """
GRANT SELECT ON crawl_jobs TO pixcrawler;
-- 8 of its 10 chunks done and 2 running: its counters add up, as a sound job's do.
INSERT INTO crawl_jobs (status, total_chunks, active_chunks, completed_chunks)
VALUES ('running', 10, 2, 8);
"""
)


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack(AlertStack):
    temp_dir: Path
    database: PostgresServer | None
    azure: FakeAzure


def backfill_failed_chunks(data_dir: Path, instance: str) -> None:
    """Give Prometheus a past of the failed-chunk count: its recording rule compares with ten
    minutes ago, and a Prometheus started seconds ago has no ten minutes ago."""
    now = int(time.time())
    series = f'pixcrawler_job_chunks{{job="{JOB}",instance="{instance}",state="failed"}}'
    lines = ["# TYPE pixcrawler_job_chunks gauge"]
    lines += [f"{series} 0 {now - age}" for age in range(20 * 60, 60, -15)]
    source = data_dir.parent / "history.om"
    source.write_text("\n".join([*lines, "# EOF", ""]))
    done = subprocess.run(
        [
            need_tool("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    # Skipped (or failed, strict) before anything is started.
    need_tool("prometheus")
    need_tool("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    temp_dir = tmp / "crawl-tmp"
    temp_dir.mkdir()
    env = {
        "PIXCRAWLER_TEMP_DIRS": str(temp_dir),
        "PIXCRAWLER_MAX_TEMP_STORAGE_MB": str(TEMP_LIMIT_MB),
        "PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS": "1",
        "PIXCRAWLER_SCRAPE_TIMEOUT_OFFSET_SECONDS": "0.2",
        "PIXCRAWLER_POLL_INTERVAL_SECONDS": "1",
        # PixCrawlerJobStalled's for: (30m by default, 30 s scaled) is the configured longest
        # chunk: 10m here, 10 s, within the 15 s of PixCrawlerJobCountersOutOfSync that the same
        # breach waits for anyway.
        "PIXCRAWLER_ALERT_CHUNK_DURATION_SECONDS": "600",
    }
    from tests.pg import find_binaries

    database: PostgresServer | None = None
    if find_binaries() is not None:
        database = request.getfixturevalue("postgres_server")
        database.start()  # an earlier test may have stopped it
        database.execute(f"DROP DATABASE IF EXISTS {E2E_DATABASE}", database="postgres")
        database.execute(f"CREATE DATABASE {E2E_DATABASE}", database="postgres")
        database.execute(CRAWL_JOBS, database=E2E_DATABASE)
        env["PIXCRAWLER_DB_URL"] = database.url_with(database.password, E2E_DATABASE)
    from pixcrawler_exporter.collectors.azure.presets import LOG_PRESETS
    from tests.azure_fake import WORKSPACE, resource_id, start_fake

    fake = start_fake(tmp)
    env.update(fake.exporter_env(resource_id("pixcrawler-plan")))
    # Seed 002's telemetry presets, all on, so that every dashboard panel has data: the fake's
    # workspace answers their KQL (0 where it holds no row).
    env.update(
        {
            "PIXCRAWLER_AZURE_WORKSPACE_ID": WORKSPACE,
            "PIXCRAWLER_AZURE_LOGS_ENDPOINT": fake.url,
            "PIXCRAWLER_AZURE_LOG_PRESETS": ",".join(p.name for p in LOG_PRESETS),
        }
    )

    # The same thresholds for the exporter and the rules: the configuration both are made from.
    cfg = config.load(env, {}, None, dotenv_path=tmp / "absent.env").config
    rules_text = rules.render(cfg, job=JOB, for_scale=FOR_SCALE)
    (tmp / "rules.yml").write_text(rules_text)

    webhook = Webhook()
    started: list[subprocess.Popen[bytes]] = []
    exporter: Exporter | None = None
    try:
        am = start_alertmanager(tmp, webhook.start())
        started.append(am.proc)
        exporter = start_exporter(tmp, (), env)
        instance = exporter.url.removeprefix("http://")
        prom_config = write_prometheus_config(tmp, tmp / "rules.yml", JOB, [instance], am)
        if database is not None:
            backfill_failed_chunks(tmp / "prom-data", instance)
        prom = start_prometheus(tmp, prom_config)
        started.append(prom.proc)
        s = Stack(
            exporter=exporter,
            prometheus=prom.url,
            alertmanager=am.url,
            webhook=webhook,
            rules_text=rules_text,
            logs={"alertmanager": am.log, "prometheus": prom.log},
            job=JOB,
            temp_dir=temp_dir,
            database=database,
            azure=fake,
        )
        # Scraped twice and the rules evaluated: the recorded CPU ratio needs two samples.
        wait_until(
            "the first recorded CPU ratio",
            lambda: s.query(f'{recording.CPU_USAGE_RATIO}{{job="{JOB}"}}'),
            30,
            s.detail,
        )
        webhook.settle()
        yield s
    finally:
        for proc in reversed(started):
            stop(proc)
        if exporter is not None:
            stop(exporter.proc)
        webhook.stop()
        fake.stop()
        if database is not None:
            database.execute(f"DROP DATABASE IF EXISTS {E2E_DATABASE} WITH (FORCE)", "postgres")


def test_the_stack_starts_once_start_up_alerts_have_resolved() -> None:
    # What Alertmanager sent when Prometheus started slower than a scaled for: (the absent()
    # branch of PixCrawlerExporterDown, without an instance): firing, then resolved.
    down = {"alertname": "PixCrawlerExporterDown", "job": JOB, "severity": "critical"}
    start = "2026-12-03T18:02:57.619Z"
    webhook = Webhook()
    webhook.notifications.append(
        {"alerts": [{"status": "firing", "labels": down, "startsAt": start}]}
    )
    threading.Timer(
        0.5,
        lambda: webhook.notifications.append(
            {"alerts": [{"status": "resolved", "labels": down, "startsAt": start}]}
        ),
    ).start()
    webhook.settle(timeout=5)
    assert not webhook.alerts("PixCrawlerExporterDown", "firing")
    # One that does not resolve is a stack that did not start quiet: it fails, naming it.
    webhook.notifications.append(
        {"alerts": [{"status": "firing", "labels": down, "startsAt": start}]}
    )
    with pytest.raises(AssertionError, match="PixCrawlerExporterDown"):
        webhook.settle(timeout=0.5)


# --- breaches ---------------------------------------------------------------------------------


def test_temp_storage_past_the_quota_pages_and_resolves(stack: Stack) -> None:
    files = [stack.temp_dir / "chunk-1" / f"image-{i}.jpg" for i in range(19)]
    size = math.ceil(0.95 * TEMP_LIMIT_MB * MIB / len(files))

    def breach() -> None:
        # 95% of the quota: past the critical threshold (90%), in a subdirectory as a chunk
        # writes its images.
        files[0].parent.mkdir()
        for f in files:
            f.write_bytes(b"\xff" * size)

    def recover() -> None:
        for f in files:
            f.unlink()

    assert_pages_and_resolves(
        stack,
        "PixCrawlerTempStorageCritical",
        {"severity": "critical", "resource": "temp_storage"},
        "95%",
        breach,
        recover,
        companions=("PixCrawlerTempStorageHigh",),
    )


def test_azure_plan_memory_pages_through_the_status_figure(stack: Stack) -> None:
    """Mode azure: the plan's MemoryPercentage on its busiest instance decides the memory status
    (the three instances' average, 59 %, would be OK), and the shipped memory alerts read the same
    figure, not the container's own (which stays far below here)."""

    def status() -> dict[str, Any]:
        return json.loads(stack.exporter.get("/status")[2])  # type: ignore[no-any-return]

    def breach() -> None:
        stack.azure.set_instances("MemoryPercentage", {"w1": 40, "w2": 45, "w3": 92})
        wait_until(
            "the plan's 92% in /status",
            lambda: status()["metrics"]["memory_pct"] == 92.0,
            30,
            stack.detail,
        )
        samples = stack.exporter.scrape()
        assert sample(samples, "pixcrawler_resource_usage_ratio", resource="memory") == 0.92
        assert sample(samples, "pixcrawler_resource_status", resource="memory") == 2
        # What the shipped rules used to read: the container's working set, nowhere near.
        local = sample(samples, "pixcrawler_memory_usage_ratio")
        assert local is not None and local < 0.8

    def recover() -> None:
        stack.azure.set_instances("MemoryPercentage", {"w1": 40, "w2": 45, "w3": 42})

    assert_pages_and_resolves(
        stack,
        "PixCrawlerMemoryUsageCritical",
        {"severity": "critical", "resource": "memory"},
        "92%",
        breach,
        recover,
        companions=("PixCrawlerMemoryUsageHigh",),
        timeout=60,
    )
    assert "RESOURCE ALERT: memory at 92.0%" in stack.exporter.log()


def test_active_chunks_in_the_database_past_the_threshold_page_and_resolve(stack: Stack) -> None:
    need(
        stack.database is not None, "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    )
    assert stack.database is not None
    db = stack.database
    critical = int(config.Config().thresholds.chunks.critical)

    def breach() -> None:
        db.execute(
            "INSERT INTO crawl_jobs (status, total_chunks, active_chunks) "
            f"VALUES ('running', 100, {critical - 1})",
            database=E2E_DATABASE,
        )

    def recover() -> None:
        db.execute("UPDATE crawl_jobs SET status = 'completed', active_chunks = 0", E2E_DATABASE)

    assert_pages_and_resolves(
        stack,
        "PixCrawlerActiveChunksCritical",
        {"severity": "critical", "resource": "chunks"},
        str(critical + 1),  # 2 active before, plus critical - 1
        breach,
        recover,
    )


def test_a_running_job_whose_counters_are_out_of_sync_pages_and_resolves(stack: Stack) -> None:
    """Seed 003's "job never completes": a running job's active chunks freed without their end
    being counted, counted job by job in the real database; both alerts through the rendered
    rules, then the seed's reconcile resolves them."""
    need(
        stack.database is not None, "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    )
    assert stack.database is not None
    db = stack.database

    def breach() -> None:
        # 2 of 4 chunks completed, none active: 0 + 2 + 0 is not 4, and 2 are left.
        db.execute(
            "INSERT INTO crawl_jobs (status, total_chunks, active_chunks, completed_chunks) "
            "VALUES ('running', 4, 0, 2)",
            database=E2E_DATABASE,
        )

    def recover() -> None:
        db.execute(
            "UPDATE crawl_jobs SET active_chunks = total_chunks - completed_chunks - failed_chunks"
            " WHERE status = 'running'",
            E2E_DATABASE,
        )

    assert_pages_and_resolves(
        stack,
        "PixCrawlerJobCountersOutOfSync",
        {"severity": "warning"},
        "1",
        breach,
        recover,
        # for: the stack's 10m chunk duration, 10 s here.
        companions=("PixCrawlerJobStalled",),
        timeout=90,
    )


# --- the dashboard against this Prometheus ----------------------------------------------------


def dashboard_queries() -> list[Any]:
    """Every query but the work pipeline's: this stack has no broker (test_e2e_pipeline.py
    runs those against one)."""
    found = []
    for row, members in row_panels(generator.dashboard()).items():
        for p in members if row != PIPELINE_ROW else ():
            for t in p["targets"]:
                found.append(pytest.param(p["title"], t["expr"], id=f"{p['title']} {t['refId']}"))
    return found


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_every_dashboard_query_returns_data(stack: Stack, title: str, expr: str) -> None:
    missing = source_metrics(expr) - exposed(stack.exporter)
    for metric in sorted(missing):
        if metric in DATABASE_METRICS:
            need(
                stack.database is not None,
                "PostgreSQL server binaries (initdb, pg_ctl) are not installed",
            )
        if metric in HOST_DEPENDENT:
            pytest.skip(f"{metric}: {HOST_DEPENDENT[metric]}")
    assert not missing, f"the exporter does not expose {sorted(missing)}"
    filled = fill(expr, JOB, stack.instance)
    wait_until(f"{title}: {filled} returning data", lambda: stack.query(filled), 10, stack.detail)


def test_dashboard_variables_find_the_job_and_instance(stack: Stack) -> None:
    variables = {v["name"]: v for v in generator.dashboard()["templating"]["list"]}
    for name, expected in (("job", JOB), ("instance", stack.instance)):
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["query"]["query"])
        assert m
        selector = m.group(1).replace("$job", JOB)
        url = f"{stack.prometheus}/api/v1/label/{m.group(2)}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        status, _, body = http_get(url)
        assert status == 200, body
        assert expected in json.loads(body)["data"]


# --- last: the exporter itself hangs ----------------------------------------------------------


def test_a_hung_exporter_pages_and_resolves(stack: Stack) -> None:
    pid = stack.exporter.proc.pid
    # Its description is conditional on the instance label, beyond expected_annotations().
    instance = stack.instance
    annotations = {
        "summary": f"PixCrawler exporter {instance} is down",
        "description": f"Prometheus could not scrape {instance} (job {JOB}) for 2m: up is 0. "
        "No other PixCrawler alert can fire without its metrics.",
        "runbook_url": f"{rules.RUNBOOK_URL}#pixcrawlerexporterdown",
    }
    # A stopped process still accepts connections (the kernel queues them) but never answers:
    # Prometheus's scrapes time out, as they do against a hung exporter.
    assert_pages_and_resolves(
        stack,
        "PixCrawlerExporterDown",
        {"severity": "critical"},
        "0",
        lambda: os.kill(pid, signal.SIGSTOP),
        lambda: os.kill(pid, signal.SIGCONT),
        annotations,
    )
