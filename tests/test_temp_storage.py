"""The temp storage collector: a background scan, a cached read, its metrics and its logs."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest

from pixcrawler_exporter import config
from pixcrawler_exporter.collect.contract import CollectorError
from pixcrawler_exporter.collect.scraper import Outcome, Snapshot
from pixcrawler_exporter.collectors.temp_storage import collector as temp_storage
from pixcrawler_exporter.collectors.temp_storage.collector import TempStorageCollector
from pixcrawler_exporter.collectors.temp_storage.reading import (
    DirectoryUsage,
    TempStorageReading,
)
from pixcrawler_exporter.collectors.temp_storage.scan import ScanResult
from pixcrawler_exporter.derive import capacity, status
from pixcrawler_exporter.derive.capacity import TempQuota
from pixcrawler_exporter.derive.status import StatusTracker
from tests.conftest import Exporter, parse_samples, sample
from tests.helpers.temp import IMAGES, wait_for, write

MIB = 1024 * 1024


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(collector: TempStorageCollector, reading: TempStorageReading) -> str:
    return text(collector.metrics(reading))


def text(families: Iterable[Metric]) -> str:
    return generate_latest(_Families(families)).decode()


@pytest.fixture
def collectors() -> Iterator[Callable[..., TempStorageCollector]]:
    """Builds collectors and closes every one at the end, even when the test failed."""
    made: list[TempStorageCollector] = []

    def make(
        dirs: Sequence[Path],
        interval: float = 3600,
        recursive: bool = True,
        first_scan_wait: float = 5.0,
    ) -> TempStorageCollector:
        collector = TempStorageCollector(
            [str(d) for d in dirs], IMAGES, recursive, interval, first_scan_wait
        )
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.close()


@pytest.fixture
def two_dirs(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    write(first / "a.jpg", 1000)
    write(first / "job" / "b.PNG", 24)
    write(first / "job" / "b.json", 5000)
    write(second / "c.png", 2000)
    return first, second


def test_reads_every_directory_from_the_first_scan(
    collectors: Callable[..., TempStorageCollector], two_dirs: tuple[Path, Path]
) -> None:
    first, second = two_dirs
    collector = collectors(two_dirs)
    before = time.time()
    collector.start()
    reading = collector.read()
    assert reading.directories == {
        str(first): DirectoryUsage(1024, 2),
        str(second): DirectoryUsage(2000, 1),
    }
    assert reading.errors == {}
    assert reading.total_bytes == 3024
    assert reading.scan_errors_total == 0
    assert before <= reading.last_scan_timestamp_seconds <= time.time()
    assert 0 < reading.scan_duration_seconds < 5


def test_non_recursive_counts_the_top_directories_only(
    collectors: Callable[..., TempStorageCollector], two_dirs: tuple[Path, Path]
) -> None:
    collector = collectors(two_dirs, recursive=False)
    collector.start()
    assert collector.read().total_bytes == 3000


def test_read_serves_the_last_scan_without_walking(
    collectors: Callable[..., TempStorageCollector], two_dirs: tuple[Path, Path]
) -> None:
    first, _ = two_dirs
    collector = collectors(two_dirs)  # the next scan is an hour away
    collector.start()
    reading = collector.read()
    write(first / "new.jpg", 4096)
    time.sleep(0.2)
    for _ in range(3):
        assert collector.read() is reading
    assert collector.scans == 1


def test_the_next_scan_after_the_interval_sees_changes(
    collectors: Callable[..., TempStorageCollector], two_dirs: tuple[Path, Path]
) -> None:
    first, _ = two_dirs
    collector = collectors(two_dirs, interval=0.3)
    collector.start()
    assert collector.read().total_bytes == 3024
    started = time.monotonic()
    write(first / "new.jpg", 4096)
    wait_for(lambda: collector.read().total_bytes == 3024 + 4096)
    assert time.monotonic() - started <= 0.3 + 2
    assert collector.scans >= 2


@pytest.fixture
def blocked_scan(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The walk blocks until the event is set: a tree too big to scan before the first scrape."""
    release = threading.Event()

    def slow_scan(directory: str, patterns: Sequence[str], recursive: bool) -> ScanResult:
        release.wait(10)
        return ScanResult(123, 4, ())

    monkeypatch.setattr(temp_storage, "scan", slow_scan)
    yield release
    release.set()


def test_first_read_waits_for_the_first_scan_at_most_first_scan_wait(
    collectors: Callable[..., TempStorageCollector], tmp_path: Path, blocked_scan: threading.Event
) -> None:
    collector = collectors([tmp_path], first_scan_wait=0.3)
    collector.start()
    started = time.monotonic()
    with pytest.raises(CollectorError, match=r"^no temp storage scan has completed yet$"):
        collector.read()
    assert 0.3 <= time.monotonic() - started < 1.0
    # Only the first read waits: later scrapes answer at once until the scan completes.
    started = time.monotonic()
    with pytest.raises(CollectorError):
        collector.read()
    assert time.monotonic() - started < 0.1
    blocked_scan.set()
    wait_for(lambda: collector.scans == 1)
    assert collector.read().directories == {str(tmp_path): DirectoryUsage(123, 4)}


def test_first_read_returns_as_soon_as_the_first_scan_completes(
    collectors: Callable[..., TempStorageCollector], tmp_path: Path, blocked_scan: threading.Event
) -> None:
    collector = collectors([tmp_path], first_scan_wait=5)
    collector.start()
    threading.Timer(0.2, blocked_scan.set).start()
    started = time.monotonic()
    assert collector.read().total_bytes == 123
    assert 0.2 <= time.monotonic() - started < 2


def test_close_stops_the_scan_thread_promptly(
    collectors: Callable[..., TempStorageCollector], tmp_path: Path
) -> None:
    collector = collectors([tmp_path])
    collector.start()
    collector.read()
    started = time.monotonic()
    collector.close()
    assert time.monotonic() - started < 0.5
    assert not any(t.name == "temp-storage-scan" and t.is_alive() for t in threading.enumerate())


def test_failing_directory_logs_once_per_change_and_counts_every_scan(
    collectors: Callable[..., TempStorageCollector],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=temp_storage.__name__)
    missing = tmp_path / "missing"
    collector = collectors([missing], interval=0.05)
    collector.start()
    wait_for(lambda: collector.scans >= 3)
    reading = collector.read()
    assert reading.errors == {str(missing): (f"{missing}: No such file or directory",)}
    # Unknown, not empty: the collector fails rather than report 0 bytes.
    assert reading.directories == {}
    assert reading.error == f"temp directory unreadable: {missing}: No such file or directory"

    write(missing / "a.jpg", 10)
    wait_for(lambda: collector.read().total_bytes == 10)
    collector.close()
    final = collector.read()
    assert final.errors == {}
    assert final.error is None
    failed_scans = final.scan_errors_total
    assert 3 <= failed_scans < collector.scans

    logged = [(r.levelname, r.getMessage(), r.__dict__.get("directory")) for r in caplog.records]
    assert logged == [
        ("WARNING", "temp directory not fully readable", str(missing)),
        ("INFO", "temp directory readable again", str(missing)),
    ]
    assert caplog.records[0].__dict__["error"] == f"{missing}: No such file or directory"


def test_metrics_exposition_is_exact(
    collectors: Callable[..., TempStorageCollector], tmp_path: Path
) -> None:
    collector = collectors([tmp_path])
    reading = TempStorageReading(
        directories={"/tmp/pix": DirectoryUsage(1536, 3), "/data/pix": DirectoryUsage(512, 1)},
        errors={},
        scan_duration_seconds=0.25,
        last_scan_timestamp_seconds=1700000000.5,
        scan_errors_total=7,
    )
    assert exposition(collector, reading) == (
        "# HELP pixcrawler_temp_storage_bytes Apparent size of the files below the directory "
        "that match the temp file patterns, from the background scan.\n"
        "# TYPE pixcrawler_temp_storage_bytes gauge\n"
        'pixcrawler_temp_storage_bytes{directory="/tmp/pix"} 1536.0\n'
        'pixcrawler_temp_storage_bytes{directory="/data/pix"} 512.0\n'
        "# HELP pixcrawler_temp_storage_files Number of files below the directory that match "
        "the temp file patterns, from the background scan.\n"
        "# TYPE pixcrawler_temp_storage_files gauge\n"
        'pixcrawler_temp_storage_files{directory="/tmp/pix"} 3.0\n'
        'pixcrawler_temp_storage_files{directory="/data/pix"} 1.0\n'
        "# HELP pixcrawler_temp_storage_error 1 when the configured directory cannot be opened "
        "(missing, deleted or moved away, not a directory, not permitted): its usage is "
        "unknown, so its bytes are absent and the collector fails; 0 when it can.\n"
        "# TYPE pixcrawler_temp_storage_error gauge\n"
        'pixcrawler_temp_storage_error{directory="/tmp/pix"} 0.0\n'
        'pixcrawler_temp_storage_error{directory="/data/pix"} 0.0\n'
        "# HELP pixcrawler_temp_storage_scan_duration_seconds How long the last completed "
        "background scan of all temp directories took.\n"
        "# TYPE pixcrawler_temp_storage_scan_duration_seconds gauge\n"
        "pixcrawler_temp_storage_scan_duration_seconds 0.25\n"
        "# HELP pixcrawler_temp_storage_last_scan_timestamp_seconds Unix time the last "
        "background scan of the temp directories completed.\n"
        "# TYPE pixcrawler_temp_storage_last_scan_timestamp_seconds gauge\n"
        "pixcrawler_temp_storage_last_scan_timestamp_seconds 1.7000000005e+09\n"
        "# HELP pixcrawler_temp_storage_scan_errors_total Directories the background scan "
        "could not read, counted once in every scan that hit them.\n"
        "# TYPE pixcrawler_temp_storage_scan_errors_total counter\n"
        "pixcrawler_temp_storage_scan_errors_total 7.0\n"
    )


def test_the_collector_renders_no_quota(
    collectors: Callable[..., TempStorageCollector], two_dirs: tuple[Path, Path]
) -> None:
    # The quota is configuration, so its limit and the share in use are derived facts
    # (derive/capacity.py): the collector reads and renders bytes, files and ages only.
    first, second = two_dirs
    collector = collectors(two_dirs)
    collector.start()
    reading = collector.read()
    samples = parse_samples(exposition(collector, reading))
    assert {name for name, _ in samples} == {
        "pixcrawler_temp_storage_bytes",
        "pixcrawler_temp_storage_files",
        "pixcrawler_temp_storage_error",
        "pixcrawler_temp_storage_oldest_file_age_seconds",
        "pixcrawler_temp_storage_in_memory",
        "pixcrawler_temp_storage_scan_duration_seconds",
        "pixcrawler_temp_storage_last_scan_timestamp_seconds",
        "pixcrawler_temp_storage_scan_errors_total",
    }
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(first)) == 1024
    assert sample(samples, "pixcrawler_temp_storage_files", directory=str(second)) == 1


def test_describe_declares_every_metric_without_reading(tmp_path: Path) -> None:
    collector = TempStorageCollector([str(tmp_path)], IMAGES, True, 60)
    assert [f.name for f in collector.describe()] == [
        "pixcrawler_temp_storage_bytes",
        "pixcrawler_temp_storage_files",
        "pixcrawler_temp_storage_error",
        "pixcrawler_temp_storage_oldest_file_age_seconds",
        "pixcrawler_temp_storage_in_memory",
        "pixcrawler_temp_storage_scan_duration_seconds",
        "pixcrawler_temp_storage_last_scan_timestamp_seconds",
        "pixcrawler_temp_storage_scan_errors",  # client_python drops _total from the family
        "pixcrawler_temp_storage_mode",
        "pixcrawler_temp_storage_watches",
    ]
    assert collector.scans == 0


@pytest.mark.parametrize("interval", [0, -1])
def test_rejects_a_non_positive_interval(tmp_path: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        TempStorageCollector([str(tmp_path)], IMAGES, True, interval)


def test_quota_families_are_derived_and_exact() -> None:
    assert text(capacity.temp_families(TempQuota(8 * 1024, 2048))) == (
        "# HELP pixcrawler_temp_storage_limit_bytes Configured limit of the temp storage of "
        "all directories together.\n"
        "# TYPE pixcrawler_temp_storage_limit_bytes gauge\n"
        "pixcrawler_temp_storage_limit_bytes 8192.0\n"
        "# HELP pixcrawler_temp_storage_usage_ratio Bytes of all temp directories divided by "
        "the limit (above 1 when over it), from the background scan.\n"
        "# TYPE pixcrawler_temp_storage_usage_ratio gauge\n"
        "pixcrawler_temp_storage_usage_ratio 0.25\n"
    )
    # Temp usage unknown (the collector failed): the quota stands, no share of it is made up.
    assert [f.name for f in capacity.temp_families(TempQuota(8 * 1024, None))] == [
        "pixcrawler_temp_storage_limit_bytes"
    ]
    # The collector off: neither.
    assert list(capacity.temp_families(None)) == []


def test_the_quota_share_is_the_temp_status_figure(tmp_path: Path) -> None:
    """One figure for the resource: the ratio exported is the one the status is evaluated from."""
    cfg = config.load({"PIXCRAWLER_MAX_TEMP_STORAGE_MB": "1"}, dotenv_path=tmp_path / ".env").config
    reading = TempStorageReading({"/t": DirectoryUsage(3024, 3)}, {}, 0.1, 0.0, 0)
    snapshot = Snapshot({"temp_storage": Outcome("temp_storage", reading, None, 0.0)}, 0.0)
    facts = StatusTracker(cfg, "local").update(snapshot)
    assert facts.values["temp_storage"] == 3024 / MIB
    samples = parse_samples(text(status.families(facts, cfg)))
    assert sample(samples, "pixcrawler_temp_storage_limit_bytes") == MIB
    assert sample(samples, "pixcrawler_temp_storage_usage_ratio") == 3024 / MIB
    assert sample(samples, "pixcrawler_resource_usage_ratio", resource="temp_storage") == (
        3024 / MIB
    )


# --- end to end -------------------------------------------------------------------------------


def test_exporter_serves_the_background_scan(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    temp = tmp_path / "crawler-temp"
    write(temp / "a.jpg", 300_000)
    write(temp / "chunk-1" / "B.WEBP", 224_288)
    write(temp / "chunk-1" / "c.part", 999_999)
    exporter = exporter_factory(
        env={
            "PIXCRAWLER_TEMP_DIRS": str(temp),
            "PIXCRAWLER_TEMP_PATTERNS": "*.jpg,*.webp",
            "PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS": "1",
            "PIXCRAWLER_MAX_TEMP_STORAGE_MB": "2",
        }
    )
    samples = exporter.scrape()
    assert sample(samples, "pixcrawler_exporter_collector_success", collector="temp_storage") == 1
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(temp)) == 524_288
    assert sample(samples, "pixcrawler_temp_storage_files", directory=str(temp)) == 2
    assert sample(samples, "pixcrawler_temp_storage_limit_bytes") == 2 * MIB
    assert sample(samples, "pixcrawler_temp_storage_usage_ratio") == 0.25
    assert sample(samples, "pixcrawler_temp_storage_scan_errors_total") == 0

    write(temp / "chunk-2" / "d.jpg", 524_288)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples = exporter.scrape()
        if sample(samples, "pixcrawler_temp_storage_files", directory=str(temp)) == 3:
            break
        time.sleep(0.1)
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(temp)) == 2 * 524_288
    assert sample(samples, "pixcrawler_temp_storage_usage_ratio") == 0.5


def test_oldest_file_age_as_of_the_scan(
    collectors: Callable[..., TempStorageCollector], tmp_path: Path
) -> None:
    crashed, fresh, empty = tmp_path / "crashed", tmp_path / "fresh", tmp_path / "empty"
    write(crashed / "chunk-7" / "a.jpg", 10)
    write(crashed / "new.jpg", 10)
    write(crashed / "ancient.json", 10)  # not the crawler's: does not count
    write(fresh / "b.png", 10)
    empty.mkdir()
    now = time.time()
    os.utime(crashed / "chunk-7" / "a.jpg", (now - 7200, now - 7200))
    os.utime(crashed / "ancient.json", (now - 10**6, now - 10**6))
    os.utime(fresh / "b.png", (now + 600, now + 600))  # clock skew: not a negative age
    collector = collectors([crashed, fresh, empty])
    collector.start()
    reading = collector.read()
    ages = reading.oldest_file_age
    assert set(ages) == {str(crashed), str(fresh)}  # none in the empty one: absent
    assert 7200 <= ages[str(crashed)] < 7260
    assert ages[str(fresh)] == 0
    samples = parse_samples(exposition(collector, reading))
    age = sample(samples, "pixcrawler_temp_storage_oldest_file_age_seconds", directory=str(crashed))
    assert age == ages[str(crashed)]
