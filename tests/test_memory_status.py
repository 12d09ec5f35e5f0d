"""The memory status in a real cgroup: reclaimable page cache must not page, anonymous memory must.

A crawler writes its images and reads them back (to validate or upload them): the page cache
fills the cgroup to its limit, and so does the working set, while nothing is near an OOM kill.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pixcrawler_exporter.collectors.memory import MemoryReading
from tests.conftest import Exporter, Samples, need, sample
from tests.helpers.realcgroup import joiner, new_cgroup

LIMIT = 300 * 2**20
FILE_MB = 260

# Writes FILE_MB of "images" 10 MiB at a time and reads them back twice (so the kernel sees them
# used again and keeps them on the active list), or holds anonymous memory; then waits.
WORKLOAD = """
import os, sys, time
mode, where, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "files":
    block = os.urandom(1 << 20)
    names = [os.path.join(where, f"img{i}.jpg") for i in range(size // 10)]
    for name in names:
        with open(name, "wb") as f:
            for _ in range(10):
                f.write(block)
    for _ in range(2):
        for name in names:
            with open(name, "rb") as f:
                while f.read(1 << 20):
                    pass
else:
    held = b"\\x01" * size  # written, so every page is really there
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def memory_cgroup() -> Iterator[tuple[list[Path], str]]:
    with new_cgroup(LIMIT, cpu=False) as made:
        yield made


def _run_workload(dirs: list[Path], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, *args],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=joiner(dirs),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the workload holds its memory (or dies)
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"workload ended early: {proc.wait()}")
    return proc


def _observe(
    factory: Callable[..., Exporter], cgroup: tuple[list[Path], str], *workload: str
) -> tuple[Samples, dict[str, Any], str]:
    """Run the workload in the cgroup and scrape an exporter watching it: samples, /status, log.

    The exporter stays outside the cgroup, so its own memory is not counted."""
    dirs, path = cgroup
    proc = _run_workload(dirs, *workload)
    try:
        exp = factory(
            env={"PIXCRAWLER_CGROUP_PATH": path, "PIXCRAWLER_COLLECTOR_TEMP_STORAGE": "false"}
        )
        samples = exp.scrape()
        _, _, body = exp.get("/status")
    finally:
        proc.kill()
        proc.wait()
    return samples, json.loads(body), exp.log()


def _ratio(samples: Samples, name: str) -> float:
    value = sample(samples, name)
    assert value is not None, name
    return value / LIMIT


def test_read_back_images_in_page_cache_do_not_raise_memory_alert(
    tmp_path: Path,
    memory_cgroup: tuple[list[Path], str],
    exporter_factory: Callable[..., Exporter],
) -> None:
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True)
    # On tmpfs the files would be shmem, memory the kernel cannot drop: a true alert.
    need(fs.stdout.strip() != "tmpfs", f"{tmp_path} is on tmpfs, not a disk")
    samples, doc, log = _observe(
        exporter_factory, memory_cgroup, "files", str(tmp_path), str(FILE_MB)
    )
    assert sample(samples, "pixcrawler_memory_limit_bytes") == LIMIT
    # What used to page: the working set is at the alert threshold, nearly all of it cache.
    assert _ratio(samples, "pixcrawler_memory_working_set_bytes") >= 0.9
    cache = sum(
        sample(samples, "pixcrawler_memory_stat_bytes", stat=s) or 0
        for s in ("active_file", "inactive_file")
    )
    assert cache >= 200 * 2**20
    anon = sample(samples, "pixcrawler_memory_stat_bytes", stat="anon")
    assert anon is not None and anon < 0.2 * LIMIT
    assert _ratio(samples, "pixcrawler_memory_unreclaimable_bytes") < 0.3
    assert sample(samples, "pixcrawler_resource_status", resource="memory") == 0
    evaluated = sample(samples, "pixcrawler_resource_usage_ratio", resource="memory")
    assert evaluated is not None and evaluated < 0.3
    assert doc["statuses"]["memory"] == "OK"
    assert doc["metrics"]["memory_pct"] < 30
    assert "RESOURCE ALERT" not in log and "RESOURCE WARNING" not in log


def test_anonymous_memory_near_the_limit_raises_memory_alert(
    memory_cgroup: tuple[list[Path], str], exporter_factory: Callable[..., Exporter]
) -> None:
    # With the interpreter's own few MiB this is about 95% of the limit.
    samples, doc, log = _observe(
        exporter_factory, memory_cgroup, "anon", "-", str(int(LIMIT * 0.93))
    )
    assert _ratio(samples, "pixcrawler_memory_unreclaimable_bytes") >= 0.93
    anon = sample(samples, "pixcrawler_memory_stat_bytes", stat="anon")
    assert anon is not None and anon >= 0.9 * LIMIT
    assert sample(samples, "pixcrawler_resource_status", resource="memory") == 2
    # The figure the status was evaluated from, exported as such: what the alerts read.
    assert sample(samples, "pixcrawler_resource_usage_ratio", resource="memory") == pytest.approx(
        _ratio(samples, "pixcrawler_memory_unreclaimable_bytes")
    )
    assert doc["statuses"]["memory"] == "ALERT"
    assert doc["metrics"]["memory_pct"] >= 93
    assert "RESOURCE ALERT: memory at 9" in log


@pytest.mark.parametrize(
    ("stall", "expected"),
    [(None, 100), (0.0, 100), (9.99, 100), (10.0, 250), (55.0, 250)],
)
def test_memory_pressure_makes_the_working_set_count(stall: float | None, expected: int) -> None:
    # Cache the kernel can only reclaim by stalling the cgroup is not free to take.
    reading = MemoryReading(
        limit_bytes=300,
        cgroup_limited=True,
        usage_bytes=280,
        working_set_bytes=250,
        host_total_bytes=1000,
        host_available_bytes=500,
        oom_kills=None,
        unreclaimable_bytes=100,
        breakdown={},
        stall_percent=stall,
    )
    assert reading.status_bytes == expected
