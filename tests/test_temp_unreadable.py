"""A temp directory that is missing, mistyped or not a directory is unknown, never empty storage:
the temp collector fails, can_start_chunk is absent and /health is degraded. So before the first
scan has completed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pixcrawler_exporter import config
from pixcrawler_exporter.app import App
from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.collectors.temp_storage import collector as temp_storage
from pixcrawler_exporter.collectors.temp_storage.collector import TempStorageCollector
from pixcrawler_exporter.collectors.temp_storage.scan import ScanResult
from pixcrawler_exporter.collectors.temp_storage.scan import scan as real_scan
from pixcrawler_exporter.web import server
from tests.conftest import Exporter, Samples, sample

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts are rewritten
    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg"]

SUCCESS = "pixcrawler_exporter_collector_success"


@pytest.fixture
def jobs(postgres: PostgresServer) -> PostgresServer:
    """Two chunks active: the database side of can_start_chunk is known and says yes."""
    from tests.pg import CRAWL_JOBS_TABLE

    postgres.execute(
        CRAWL_JOBS_TABLE + "INSERT INTO crawl_jobs (status, active_chunks) VALUES ('running', 2);"
    )
    return postgres


def _scrape_until(exp: Exporter, done: Callable[[Samples], bool], timeout: float = 15) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = exp.scrape()
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_missing_temp_directory_fails_the_collector_not_reads_as_empty(
    jobs: PostgresServer,
    tmp_path: Path,
    exporter_factory: Callable[..., Exporter],
) -> None:
    good = tmp_path / "crawler-temp"
    good.mkdir()
    (good / "a.jpg").write_bytes(b"x" * 1000)
    mistyped = tmp_path / "crawler-tmep"
    exp = exporter_factory(
        env={
            "PIXCRAWLER_DB_URL": jobs.url,
            "PIXCRAWLER_TEMP_DIRS": f"{good}:{mistyped}",
            "PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS": "1",
        }
    )
    samples = exp.scrape()
    assert sample(samples, SUCCESS, collector="temp_storage") == 0
    assert sample(samples, SUCCESS, collector="database") == 1
    assert sample(samples, "pixcrawler_chunks_active") is not None
    # The readable directory is still reported; the missing one is absent, not 0.
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(good)) == 1000
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(mistyped)) is None
    assert sample(samples, "pixcrawler_temp_storage_error", directory=str(mistyped)) == 1
    assert sample(samples, "pixcrawler_temp_storage_error", directory=str(good)) == 0
    assert sample(samples, "pixcrawler_can_start_chunk") is None
    assert sample(samples, "pixcrawler_resource_status", resource="temp_storage") is None
    # The share of the quota in use is unknown too, not the readable directory's share alone:
    # one figure for the resource, the one its status is evaluated from. The quota stands.
    assert sample(samples, "pixcrawler_temp_storage_usage_ratio") is None
    assert sample(samples, "pixcrawler_resource_usage_ratio", resource="temp_storage") is None
    assert sample(samples, "pixcrawler_temp_storage_limit_bytes") == 20000 * 2**20

    code, _, body = exp.get("/health")
    health = json.loads(body)
    assert code == 503 and health["status"] == "degraded"
    assert health["sources"]["temp_storage"]["healthy"] is False
    assert str(mistyped) in health["sources"]["temp_storage"]["detail"]
    assert "No such file or directory" in health["sources"]["temp_storage"]["detail"]
    doc = json.loads(exp.get("/status")[2])
    assert doc["capacity"]["can_start_chunk"] is None
    assert doc["metrics"]["temp_storage_mb"] is None
    assert doc["statuses"]["temp_storage"] is None

    mistyped.mkdir()  # the operator fixes the path, or the crawler creates it
    samples = _scrape_until(exp, lambda s: sample(s, SUCCESS, collector="temp_storage") == 1)
    assert sample(samples, SUCCESS, collector="temp_storage") == 1
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(mistyped)) == 0
    assert sample(samples, "pixcrawler_can_start_chunk") == 1
    assert sample(samples, "pixcrawler_temp_storage_usage_ratio") == 1000 / (20000 * 2**20)
    assert exp.get("/health")[0] == 200


def test_a_file_as_temp_directory_fails_the_collector(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    not_a_dir = tmp_path / "temp.jpg"
    not_a_dir.write_bytes(b"x")
    exp = exporter_factory(env={"PIXCRAWLER_TEMP_DIRS": str(not_a_dir)})
    assert sample(exp.scrape(), SUCCESS, collector="temp_storage") == 0
    code, _, body = exp.get("/health")
    assert code == 503
    assert "Not a directory" in json.loads(body)["sources"]["temp_storage"]["detail"]


@pytest.fixture
def slow_first_scan(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Scans block until the event is set: a tree too big to walk before the first scrape."""
    release = threading.Event()

    def scan(directory: str, patterns: tuple[str, ...], recursive: bool) -> ScanResult:
        release.wait(30)
        return real_scan(directory, patterns, recursive)

    monkeypatch.setattr(temp_storage, "scan", scan)
    yield release
    release.set()


def test_before_the_first_scan_completes_capacity_is_unknown_and_health_degraded(
    slow_first_scan: threading.Event, tmp_path: Path
) -> None:
    loaded = config.load({"PIXCRAWLER_TEMP_DIRS": str(tmp_path)}, dotenv_path=tmp_path / ".env")
    collector = TempStorageCollector([str(tmp_path)], ("*.jpg",), True, 3600, 0.1)
    layout = cgroup.CgroupLayout("none", None, None, None, None, None)
    app = App(loaded, registry.Built([collector], layout, loaded.config))
    collector.start()
    try:
        request = server.Request("GET", "/health", {})
        health = app.health_response(request)
        doc = json.loads(health.body)
        assert health.status == 503 and doc["status"] == "degraded"
        assert "no temp storage scan has completed yet" in doc["sources"]["temp_storage"]["detail"]
        status = json.loads(app.status_response(request).body)
        assert status["capacity"]["can_start_chunk"] is None
        assert status["metrics"]["temp_storage_mb"] is None

        slow_first_scan.set()
        deadline = time.monotonic() + 10
        while collector.scans == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.health_response(request).status == 200
    finally:
        app.close()
