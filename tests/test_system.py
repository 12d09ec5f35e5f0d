"""The system collectors end to end: a real exporter process, scraped over HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pixcrawler_exporter.collectors import procfs
from pixcrawler_exporter.collectors.disk import DiskCollector
from tests.conftest import Exporter, need_tool, sample
from tests.helpers.cgroup import v2_host
from tests.helpers.realcgroup import joiner, new_cgroup

MEMORY_LIMIT = 512 * 1024 * 1024


@pytest.fixture
def limited_cgroup() -> Iterator[tuple[list[Path], str]]:
    """A new cgroup limited to 512 MiB and half a core: (directories to join, cgroup path)."""
    with new_cgroup(MEMORY_LIMIT) as made:
        yield made


def test_exporter_inside_a_limited_cgroup_reports_its_limits(
    limited_cgroup: tuple[list[Path], str], exporter_factory: Callable[..., Exporter]
) -> None:
    dirs, _ = limited_cgroup
    exp = exporter_factory(preexec=joiner(dirs))
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_memory_limit_bytes") == MEMORY_LIMIT
    assert sample(samples, "pixcrawler_cpu_limit_cores") == 0.5
    assert sample(samples, "pixcrawler_host_memory_total_bytes") == psutil.virtual_memory().total
    usage = sample(samples, "pixcrawler_memory_usage_bytes")
    working_set = sample(samples, "pixcrawler_memory_working_set_bytes")
    assert usage is not None and working_set is not None
    # The exporter's own process, not the host's gigabytes.
    assert 5 * 2**20 < working_set <= usage < MEMORY_LIMIT
    assert sample(samples, "pixcrawler_memory_usage_ratio") == pytest.approx(
        working_set / MEMORY_LIMIT
    )
    assert sample(samples, "pixcrawler_cpu_throttled_periods_total") is not None
    for collector in ("memory", "cpu", "pressure", "disk", "network"):
        assert sample(samples, "pixcrawler_exporter_collector_success", collector=collector) == 1, (
            collector
        )


def test_cgroup_path_watches_another_cgroup(
    limited_cgroup: tuple[list[Path], str], exporter_factory: Callable[..., Exporter]
) -> None:
    _, path = limited_cgroup
    exp = exporter_factory(env={"PIXCRAWLER_CGROUP_PATH": path})
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_memory_limit_bytes") == MEMORY_LIMIT
    assert sample(samples, "pixcrawler_cpu_limit_cores") == 0.5
    assert sample(samples, "pixcrawler_memory_usage_bytes") == 0  # nothing runs in it


def test_promtool_check_metrics_on_a_real_scrape(exporter_factory: Callable[..., Exporter]) -> None:
    promtool = need_tool("promtool")
    exp = exporter_factory()
    for accept in ("", "application/openmetrics-text; version=1.0.0"):
        status, _, body = exp.get("/metrics", {"Accept": accept} if accept else None)
        assert status == 200
        if accept:
            continue  # promtool checks the text format; OpenMetrics is checked for shape above
        result = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert result.stdout.decode() + result.stderr.decode() == ""  # no lint warnings either


def _fake_host(tmp_path: Path, memory_max: str) -> tuple[Path, Path]:
    """A cgroup v2 host in files: real /proc figures psutil needs, cgroup files the test writes."""
    host = v2_host(tmp_path)
    for name in ("meminfo", "stat", "net/dev"):
        target = host.procfs / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f"/proc/{name}", target)
    host.files(
        "/sys/fs/cgroup/system.slice/app.service",
        memory__max=memory_max,
        memory__current="1048576\n",
        memory__stat="anon 1000\ninactive_file 4096\n",
        cpu__max="150000 100000\n",
        cpu__stat="usage_usec 2500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 400000\n",
    )
    return host.procfs, host.sysfs


def test_fixture_host_through_path_flags(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    procfs, sysfs = _fake_host(tmp_path, "268435456\n")
    exp = exporter_factory(f"--path.procfs={procfs}", f"--path.sysfs={sysfs}")
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_memory_limit_bytes") == 268435456
    assert sample(samples, "pixcrawler_memory_usage_bytes") == 1048576
    assert sample(samples, "pixcrawler_memory_working_set_bytes") == 1048576 - 4096
    assert sample(samples, "pixcrawler_memory_oom_kills_total") is None  # no memory.events: absent
    assert sample(samples, "pixcrawler_cpu_limit_cores") == 1.5
    assert sample(samples, "pixcrawler_cpu_usage_seconds_total") == 2.5
    assert sample(samples, "pixcrawler_cpu_throttled_seconds_total") == 0.4
    assert sample(samples, "pixcrawler_cpu_throttled_periods_total") == 3
    info = [labels for name, labels in samples if name == "pixcrawler_environment_info"]
    assert len(info) == 1 and ("cgroup_version", "v2") in info[0]


def test_garbage_cgroup_file_fails_only_its_collector(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    procfs, sysfs = _fake_host(tmp_path, "lots of memory\n")
    exp = exporter_factory(f"--path.procfs={procfs}", f"--path.sysfs={sysfs}")
    for _ in range(3):
        samples = exp.scrape()
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="memory") == 0
        assert sample(samples, "pixcrawler_memory_limit_bytes") is None
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="cpu") == 1
        assert sample(samples, "pixcrawler_cpu_limit_cores") == 1.5
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="network") == 1
    log = exp.log()
    assert log.count("collector failed") == 1, log
    assert "memory.max" in log and "lots of memory" in log


def test_unanswering_disk_path_is_reported_failed(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = exporter_factory(env={"PIXCRAWLER_DISK_PATHS": f"/:{tmp_path}/does-not-exist"})
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_disk_error", path="/") == 0
    assert sample(samples, "pixcrawler_disk_error", path=f"{tmp_path}/does-not-exist") == 1
    assert sample(samples, "pixcrawler_disk_size_bytes", path="/") == pytest.approx(
        os.statvfs("/").f_blocks * os.statvfs("/").f_frsize
    )
    assert sample(samples, "pixcrawler_disk_size_bytes", path=f"{tmp_path}/does-not-exist") is None


def test_local_filesystems_are_asked_on_the_scrapes_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    monkeypatch.setattr(procfs, "is_local", lambda path: Path(path) == local)
    collector = DiskCollector([str(local), str(remote)], Path("/"), 2.0)
    asked_from: dict[str, str] = {}
    real_statvfs = os.statvfs

    def statvfs(path: Path) -> os.statvfs_result:
        asked_from[str(path)] = threading.current_thread().name
        return real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    try:
        reading = collector.read()
    finally:
        collector.close()
    assert reading.errors == {}
    assert set(reading.usage) == {str(local), str(remote)}
    assert asked_from[str(local)] == threading.current_thread().name
    assert asked_from[str(remote)].startswith("statvfs")


def test_disk_usage_ratio_is_dfs_use_percent(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    # df's Use%: used / (used + available). Blocks reserved for root are neither: 1 - avail /
    # size counted them as used, which on a host with most of its disk reserved (60% on the
    # machine this was found on) read 71% where df read 28%, and paged DiskFillingUp.
    exp = exporter_factory(
        env={"PIXCRAWLER_DISK_PATHS": "/", "PIXCRAWLER_TEMP_DIRS": str(tmp_path)}
    )
    ratio = sample(exp.scrape(), "pixcrawler_disk_usage_ratio", path="/")
    st = os.statvfs("/")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    df = used / (used + st.f_bavail * st.f_frsize)
    assert ratio is not None and abs(ratio - df) < 0.002, (ratio, df)
