"""Temp files on tmpfs use memory: detected on a real tmpfs mount, counted in the memory figure
and in whether one more chunk can start."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pixcrawler_exporter import config
from pixcrawler_exporter.collect.scraper import Outcome, Snapshot
from pixcrawler_exporter.collectors.database.reading import DatabaseReading
from pixcrawler_exporter.collectors.memory import MemoryReading
from pixcrawler_exporter.collectors.temp_storage.collector import TempStorageCollector
from pixcrawler_exporter.collectors.temp_storage.memoryfs import in_memory
from pixcrawler_exporter.derive.capacity import MIB, capacity
from pixcrawler_exporter.derive.status import StatusTracker
from tests.conftest import Exporter, need, sample
from tests.helpers.realcgroup import new_cgroup

IMAGES = ("*.jpg",)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs mounted below tmp_path, as docker run --tmpfs would mount one."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    point = tmp_path / "ram"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], capture_output=True
    )
    need(mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr!r}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def _images(directory: Path, count: int, size: int = MIB) -> None:
    for i in range(count):
        (directory / f"img{i}.jpg").write_bytes(b"\xff" * size)


def test_statfs_tells_tmpfs_from_disk(tmpfs: Path, tmp_path: Path) -> None:
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True)
    assert in_memory(str(tmpfs)) is True
    assert in_memory(str(tmpfs) + "/.") is True
    assert in_memory(str(tmp_path)) is (fs.stdout.strip() in ("tmpfs", "ramfs"))
    assert in_memory(str(tmp_path / "does-not-exist")) is None


def _memory(limit: int, unreclaimable: int, shmem: int) -> MemoryReading:
    return MemoryReading(
        limit_bytes=limit,
        cgroup_limited=True,
        usage_bytes=unreclaimable,
        working_set_bytes=unreclaimable,
        host_total_bytes=4 * limit,
        host_available_bytes=2 * limit,
        oom_kills=None,
        unreclaimable_bytes=unreclaimable,
        breakdown={"shmem": shmem},
        stall_percent=None,
    )


def _snapshot(**readings: object) -> Snapshot:
    return Snapshot({n: Outcome(n, r, None, 0.0) for n, r in readings.items()}, time.time())


def test_temp_files_in_ram_count_as_memory_and_bound_capacity(tmpfs: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    _images(tmpfs, 8)
    _images(disk, 2)
    collector = TempStorageCollector([str(tmpfs), str(disk)], IMAGES, True, 3600)
    collector.start()
    try:
        temp = collector.read()
    finally:
        collector.close()
    assert temp.in_memory == {str(tmpfs): True, str(disk): False}
    assert temp.in_memory_bytes == 8 * MIB

    # Chunks of 100 x 0.5 MiB: 50 MiB each. Temp quota: plenty.
    cfg = config.load(
        {"PIXCRAWLER_CHUNK_SIZE_IMAGES": "100", "PIXCRAWLER_MAX_TEMP_STORAGE_MB": "100000"},
        dotenv_path=tmp_path / ".env",
    ).config
    tracker = StatusTracker(cfg, "local")
    chunks = DatabaseReading(up=True, active_chunks=1, samples={}, errors_total={})
    # The tmpfs pages are charged to another cgroup (shmem 0 here): they are added.
    facts = tracker.update(
        _snapshot(memory=_memory(100 * MIB, 40 * MIB, 0), temp_storage=temp, database=chunks)
    )
    assert facts.values["memory"] == pytest.approx(48 / 100)
    # 52 MiB left: one 50 MiB chunk fits.
    assert facts.capacity.can_start is True
    # Charged to the watched cgroup already (shmem holds them): not counted twice; 50 MiB left.
    facts = tracker.update(
        _snapshot(memory=_memory(100 * MIB, 50 * MIB, 8 * MIB), temp_storage=temp, database=chunks)
    )
    assert facts.values["memory"] == pytest.approx(50 / 100)
    assert facts.capacity.can_start is True
    # 45 MiB of memory left: the next chunk's files would not fit in RAM, however large the quota.
    facts = tracker.update(
        _snapshot(memory=_memory(100 * MIB, 55 * MIB, 8 * MIB), temp_storage=temp, database=chunks)
    )
    assert facts.capacity.can_start is False
    # Memory unknown while temp files are in RAM: no made-up answer.
    facts = tracker.update(_snapshot(temp_storage=temp, database=chunks))
    assert facts.capacity.can_start is None


def test_capacity_memory_room() -> None:
    cfg = config.load({}, dotenv_path=Path("/nonexistent/.env")).config.capacity
    chunk = 500 * 0.5 * MIB
    assert capacity(cfg, 1, 0).can_start is True  # on disk: memory does not bound it
    assert capacity(cfg, 1, 0, chunk).can_start is True
    assert capacity(cfg, 1, 0, chunk - 1).can_start is False
    assert capacity(cfg, 1, 0, None).can_start is None


def test_exporter_reports_tmpfs_temp_dir_and_counts_it_as_memory(
    tmpfs: Path, tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    _images(tmpfs, 16)  # written by this test, outside the watched cgroup
    limit = 256 * MIB
    with new_cgroup(limit, cpu=False) as (_, path):
        exp = exporter_factory(
            env={
                "PIXCRAWLER_TEMP_DIRS": f"{tmpfs}:{disk}",
                "PIXCRAWLER_TEMP_PATTERNS": "*.jpg",
                "PIXCRAWLER_CGROUP_PATH": path,
            }
        )
        samples = exp.scrape()
        _, _, body = exp.get("/status")
    assert sample(samples, "pixcrawler_temp_storage_in_memory", directory=str(tmpfs)) == 1
    assert sample(samples, "pixcrawler_temp_storage_in_memory", directory=str(disk)) == 0
    assert sample(samples, "pixcrawler_temp_storage_bytes", directory=str(tmpfs)) == 16 * MIB
    assert sample(samples, "pixcrawler_memory_limit_bytes") == limit
    unreclaimable = sample(samples, "pixcrawler_memory_unreclaimable_bytes")
    assert unreclaimable is not None and unreclaimable < MIB  # nothing runs in the cgroup
    memory_pct = json.loads(body)["metrics"]["memory_pct"]
    assert memory_pct == pytest.approx((unreclaimable + 16 * MIB) / limit * 100, abs=0.01)
