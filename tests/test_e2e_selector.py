"""End to end: rules and dashboard rendered for a set-up that is not the default one (exporters
told apart by `namespace`, grouped by `cluster`, an alert overridden) run in a real Prometheus
that scrapes two exporters, plus a copy of one under labels the selector must leave out."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from grafana import dashboard as generator
from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import recording, rules
from tests.conftest import free_port, http_get, need_tool, start_exporter, stop_process
from tests.helpers.processes import spawn, stop, wait_ready
from tests.helpers.wait import wait_until
from tests.pg import CRAWL_JOBS_TABLE

if TYPE_CHECKING:
    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATABASE = "pixcrawler_selector"
RULES_CONFIG = {
    "rules": {
        "selector": 'job="crawler", namespace="crawl"',
        "group_label": "cluster",
        "alerts": {"PixCrawlerDiskUsageHigh": {"for": "0s", "severity": "info"}},
    },
    # Every filesystem is at least 0% full: the disk warning fires at once on every instance.
    "thresholds": {"disk": {"warning": 0.0}},
}


class Prometheus:
    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, _, body = http_get(
            f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )
        assert status == 200, body
        return json.loads(body)["data"]["result"]  # type: ignore[no-any-return]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        status, _, body = http_get(f"{self.url}/api/v1/alerts")
        assert status == 200, body
        found = json.loads(body)["data"]["alerts"]
        return [a for a in found if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def detail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def prometheus(postgres: PostgresServer, tmp_path: Path) -> Iterator[Prometheus]:
    prometheus_bin = need_tool("prometheus")
    postgres.execute(f"DROP DATABASE IF EXISTS {DATABASE}", database="postgres")
    postgres.execute(f"CREATE DATABASE {DATABASE}", database="postgres")
    postgres.execute(
        CRAWL_JOBS_TABLE
        + "GRANT SELECT ON crawl_jobs TO pixcrawler;"
        + "INSERT INTO crawl_jobs (status, total_chunks, active_chunks) VALUES ('running', 9, 4);",
        database=DATABASE,
    )
    env = {"PIXCRAWLER_DB_URL": postgres.url_with(postgres.password, DATABASE)}
    cfg_file = tmp_path / "rules-config.yml"
    cfg_file.write_text(yaml.safe_dump(RULES_CONFIG))
    cfg = config.load({}, {}, str(cfg_file), dotenv_path=tmp_path / "absent.env").config
    (tmp_path / "rules.yml").write_text(rules.render(cfg))
    (tmp_path / "dashboard.json").write_text(generator.render(cfg))
    exporters = [start_exporter(tmp_path, (), env) for _ in range(2)]
    a, b = (e.url.removeprefix("http://") for e in exporters)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(tmp_path / "rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "crawler",
                        "static_configs": [
                            {"targets": [a], "labels": {"namespace": "crawl", "cluster": "eu"}},
                            {"targets": [b], "labels": {"namespace": "crawl", "cluster": "us"}},
                            # The same exporter again, as a staging copy would be scraped.
                            {"targets": [a], "labels": {"namespace": "staging", "cluster": "eu"}},
                        ],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    proc = spawn(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/-/ready", proc, log)
        yield Prometheus(f"http://127.0.0.1:{port}", log)
    finally:
        stop(proc)
        for e in exporters:
            stop_process(e.proc)
        postgres.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", "postgres")


def test_custom_selector_and_cluster_label_in_a_real_prometheus(
    prometheus: Prometheus, tmp_path: Path
) -> None:
    # The overridden alert fires for the selected instances only, with their cluster label.
    def on_both_clusters() -> list[dict[str, Any]] | None:
        found = prometheus.alerts("PixCrawlerDiskUsageHigh")
        return found if len({a["labels"]["cluster"] for a in found}) == 2 else None

    firing = wait_until(
        "PixCrawlerDiskUsageHigh firing on both selected exporters",
        on_both_clusters,
        30,
        prometheus.detail,
    )
    assert {a["labels"]["namespace"] for a in firing} == {"crawl"}
    assert {a["labels"]["severity"] for a in firing} == {"info"}
    # The fleet's capacity, per cluster, over the selected series only: the staging copy of the
    # eu exporter is not counted twice.
    fleet = wait_until(
        "both clusters' fleet capacity",
        lambda: r if len(r := prometheus.query(recording.CHUNKS_AVAILABLE_FLEET)) == 2 else None,
        30,
        prometheus.detail,
    )
    per_instance = prometheus.query('pixcrawler_chunks_available{namespace="crawl"}')
    expected = {r["metric"]["cluster"]: float(r["value"][1]) for r in per_instance}
    assert {r["metric"]["cluster"]: float(r["value"][1]) for r in fleet} == expected
    assert set(expected) == {"eu", "us"} and expected["eu"] > 0
    assert {tuple(sorted(r["metric"])) for r in fleet} == {("__name__", "cluster")}
    # The dashboard rendered for this set-up asks for exactly the selected series.
    board = json.loads((tmp_path / "dashboard.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables)[:2] == ["datasource", "cluster"]
    expr = next(
        t["expr"]
        for p in board["panels"]
        for t in p.get("targets", [])
        if t["expr"].startswith("pixcrawler_chunks_available{")
    )
    chosen = expr.replace("$job", "crawler").replace("$cluster", "eu").replace("$instance", ".+")
    rows = prometheus.query(chosen)
    assert [(r["metric"]["namespace"], r["metric"]["cluster"]) for r in rows] == [("crawl", "eu")]
