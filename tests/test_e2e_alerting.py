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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from grafana import dashboard as generator
from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import rules
from tests.conftest import (
    Exporter,
    free_port,
    http_get,
    need,
    need_tool,
    sample,
    start_exporter,
)
from tests.helpers.dashboard import metric_names, panels
from tests.helpers.processes import spawn, stop, wait_ready
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
INSERT INTO crawl_jobs (status, total_chunks, active_chunks) VALUES ('running', 10, 2);
"""
)


# --- the webhook receiver ---------------------------------------------------------------------


@dataclass
class Webhook:
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def alerts(self, name: str, status: str) -> list[dict[str, Any]]:
        """Alerts named ``name`` in notifications received so far, as Alertmanager sent them."""
        with self.lock:
            return [
                a
                for n in self.notifications
                for a in n["alerts"]
                if a["labels"].get("alertname") == name and a["status"] == status
            ]

    def summary(self) -> str:
        with self.lock:
            return "\n".join(
                f"{n['status']}: {[a['labels']['alertname'] for a in n['alerts']]}"
                for n in self.notifications
            )


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    exporter: Exporter
    prometheus: str
    alertmanager: str
    webhook: Webhook
    temp_dir: Path
    rules_text: str
    logs: dict[str, Path]
    database: PostgresServer | None
    azure: FakeAzure

    @property
    def instance(self) -> str:
        return self.exporter.url.removeprefix("http://")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, _, body = http_get(url)
        assert status == 200, body
        return json.loads(body)["data"]["result"]  # type: ignore[no-any-return]

    def detail(self) -> str:
        status, _, body = http_get(f"{self.prometheus}/api/v1/alerts")
        alerts = (
            json.loads(body)["data"]["alerts"] if status == 200 else body.decode(errors="replace")
        )
        logs = "\n".join(
            f"--- {name}:\n{path.read_text(errors='replace')[-3000:]}"
            for name, path in self.logs.items()
        )
        return (
            f"Prometheus alerts: {alerts}\nnotifications:\n{self.webhook.summary()}\n"
            f"--- exporter:\n{self.exporter.log()[-3000:]}\n{logs}"
        )

    def expected_annotations(self, name: str, value: str) -> dict[str, str]:
        """The rule's annotations as Prometheus expands them for this exporter and ``value``."""
        rule = next(
            r
            for g in yaml.safe_load(self.rules_text)["groups"]
            for r in g["rules"]
            if r.get("alert") == name
        )
        out = {}
        for key, text in rule["annotations"].items():
            text = text.replace("{{ $labels.instance }}", self.instance)
            out[key] = re.sub(r"\{\{ \$value[^}]*\}\}", value, text)
        return out


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
    prometheus_bin = need_tool("prometheus")
    alertmanager_bin = need_tool("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("e2e")
    temp_dir = tmp / "crawl-tmp"
    temp_dir.mkdir()
    env = {
        "PIXCRAWLER_TEMP_DIRS": str(temp_dir),
        "PIXCRAWLER_MAX_TEMP_STORAGE_MB": str(TEMP_LIMIT_MB),
        "PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS": "1",
        "PIXCRAWLER_SCRAPE_TIMEOUT_OFFSET_SECONDS": "0.2",
        "PIXCRAWLER_POLL_INTERVAL_SECONDS": "1",
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
    from tests.azure_fake import resource_id, start_fake

    fake = start_fake(tmp)
    env.update(fake.exporter_env(resource_id("pixcrawler-plan")))

    # The same thresholds for the exporter and the rules: the configuration both are made from.
    cfg = config.load(env, {}, None, dotenv_path=tmp / "absent.env").config
    rules_text = rules.render(cfg, job=JOB, for_scale=FOR_SCALE)
    (tmp / "rules.yml").write_text(rules_text)

    webhook = Webhook()
    started: list[subprocess.Popen[bytes]] = []
    exporter: Exporter | None = None
    try:
        hook_url = webhook.start()
        am_port, prom_port = free_port(), free_port()
        (tmp / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "test",
                        "group_by": ["alertname", "instance"],
                        "group_wait": "1s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "test",
                            "webhook_configs": [{"url": hook_url, "send_resolved": True}],
                        }
                    ],
                }
            )
        )
        logs = {"alertmanager": tmp / "alertmanager.log", "prometheus": tmp / "prometheus.log"}
        am = spawn(
            [
                alertmanager_bin,
                f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # no gossip port: one instance
                "--log.level=warn",
            ],
            logs["alertmanager"],
        )
        started.append(am)
        alertmanager = f"http://127.0.0.1:{am_port}"
        wait_ready(f"{alertmanager}/-/ready", am, logs["alertmanager"])

        exporter = start_exporter(tmp, (), env)
        instance = exporter.url.removeprefix("http://")
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(tmp / "rules.yml")],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [instance]}]}
                    ],
                }
            )
        )
        if database is not None:
            backfill_failed_chunks(tmp / "prom-data", instance)
        prom = spawn(
            [
                prometheus_bin,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s",
                "--log.level=warn",
            ],
            logs["prometheus"],
        )
        started.append(prom)
        prometheus = f"http://127.0.0.1:{prom_port}"
        wait_ready(f"{prometheus}/-/ready", prom, logs["prometheus"])
        s = Stack(
            exporter, prometheus, alertmanager, webhook, temp_dir, rules_text, logs, database, fake
        )
        # Scraped twice and the rules evaluated: the recorded CPU ratio needs two samples.
        wait_until(
            "the first recorded CPU ratio",
            lambda: s.query(f'{rules.CPU_USAGE_RATIO}{{job="{JOB}"}}'),
            30,
            s.detail,
        )
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


def assert_pages_and_resolves(
    stack: Stack,
    name: str,
    labels: dict[str, str],
    value: str,
    breach: Callable[[], None],
    recover: Callable[[], None],
    annotations: dict[str, str] | None = None,
    companions: tuple[str, ...] = (),
    timeout: float = 30,
) -> None:
    """``breach`` must bring a firing notification of ``name`` with exactly ``labels`` and the
    annotations for ``value`` (or exactly ``annotations``); ``recover`` must bring the resolved
    one."""
    assert not stack.webhook.alerts(name, "firing"), f"{name} fired before the breach"
    breach()
    (fired, *_) = wait_until(
        f"a firing {name} notification",
        lambda: stack.webhook.alerts(name, "firing"),
        timeout,
        stack.detail,
    )
    assert fired["labels"] == {"alertname": name, "job": JOB, "instance": stack.instance, **labels}
    assert fired["annotations"] == (annotations or stack.expected_annotations(name, value))
    for other in companions:  # alerts the same breach fires, with a longer for:
        wait_until(
            f"a firing {other} notification",
            partial(stack.webhook.alerts, other, "firing"),
            timeout,
            stack.detail,
        )
    recover()
    (resolved, *_) = wait_until(
        f"a resolved {name} notification",
        lambda: stack.webhook.alerts(name, "resolved"),
        timeout,
        stack.detail,
    )
    assert resolved["labels"] == fired["labels"]
    assert resolved["startsAt"] == fired["startsAt"]
    for other in companions:
        wait_until(
            f"a resolved {other} notification",
            partial(stack.webhook.alerts, other, "resolved"),
            timeout,
            stack.detail,
        )


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


# --- the dashboard against this Prometheus ----------------------------------------------------


def dashboard_queries() -> list[Any]:
    found = []
    for p in panels(generator.dashboard()):
        for t in p["targets"]:
            found.append(pytest.param(p["title"], t["expr"], id=f"{p['title']} {t['refId']}"))
    return found


def exposed(stack: Stack) -> set[str]:
    status, _, body = stack.exporter.get("/metrics")
    assert status == 200
    return set(re.findall(r"^(\w+)(?:\{| )", body.decode(), re.M))


def source_metrics(expr: str) -> set[str]:
    """The exporter's metrics an expression reads, through the recording rules it uses."""
    found = set()
    for name in metric_names(expr):
        found |= (
            metric_names(rules.RECORDING_RULES[name]) if name in rules.RECORDING_RULES else {name}
        )
    return found - {"up", "scrape_duration_seconds"}


@pytest.mark.parametrize(("title", "expr"), dashboard_queries())
def test_every_dashboard_query_returns_data(stack: Stack, title: str, expr: str) -> None:
    missing = source_metrics(expr) - exposed(stack)
    for metric in sorted(missing):
        if metric in DATABASE_METRICS:
            need(
                stack.database is not None,
                "PostgreSQL server binaries (initdb, pg_ctl) are not installed",
            )
        if metric in HOST_DEPENDENT:
            pytest.skip(f"{metric}: {HOST_DEPENDENT[metric]}")
    assert not missing, f"the exporter does not expose {sorted(missing)}"
    filled = (
        expr.replace("$job", JOB)
        .replace("$instance", stack.instance)
        .replace("$__rate_interval", "1m")
    )
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
