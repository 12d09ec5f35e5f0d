"""cgroup discovery and readers, against fake /proc and /sys trees built in tmp_path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pixcrawler_exporter.collectors.cgroup import (
    CgroupError,
    CgroupLayout,
    CpuStats,
    MemoryStats,
    read_cpu,
    read_memory,
    read_pressure,
)
from pixcrawler_exporter.collectors.cgroup_find import discover
from tests.helpers.cgroup import Host, Mount, hybrid_host, v1_host, v2_host

UNLIMITED_V1 = "9223372036854771712\n"
PSI = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total={}\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total={}\n"
)


def test_v1_layout_reroots_mount_points_under_sysfs(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    cg = host.sysfs / "fs/cgroup"
    assert host.discover() == CgroupLayout(
        version="v1",
        memory=cg / "memory/docker/abc",
        cpu=cg / "cpu,cpuacct/docker/abc",
        cpuacct=cg / "cpu,cpuacct/docker/abc",
        cpuset=cg / "cpuset/docker/abc",
        unified=None,
    )


def test_v2_layout_follows_cgroup_controllers(tmp_path: Path) -> None:
    host = v2_host(tmp_path, controllers="memory pids")
    d = host.sysfs / "fs/cgroup/system.slice/app.service"
    # cpu usage is in every v2 cgroup's cpu.stat; quota and cpuset need their controllers.
    assert host.discover() == CgroupLayout("v2", d, None, d, None, d)


def test_v2_layout_with_all_controllers(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    d = host.sysfs / "fs/cgroup/system.slice/app.service"
    assert host.discover() == CgroupLayout("v2", d, d, d, d, d)


def test_hybrid_layout_takes_controllers_from_v1(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    cg = host.sysfs / "fs/cgroup"
    assert host.discover() == CgroupLayout(
        version="hybrid",
        memory=cg / "memory/api/f23",
        cpu=cg / "cpu",
        cpuacct=cg / "cpuacct",
        cpuset=cg / "cpuset",
        unified=cg / "unified",
    )


def test_no_cgroup_file_means_none(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.write("/proc/self/mountinfo", "22 1 259:1 / / rw - ext4 /dev/root rw\n")
    assert host.discover() == CgroupLayout("none", None, None, None, None, None)


def test_no_cgroup_mounts_means_none(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup("0::/\n", [Mount("/sys/fs/cgroup/systemd", options="name=systemd")])
    assert host.discover() == CgroupLayout("none", None, None, None, None, None)


def test_namespace_root_is_the_mount_point(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup("0::/\n", [Mount("/sys/fs/cgroup", "cgroup2")])
    host.write("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
    d = host.sysfs / "fs/cgroup"
    assert host.discover() == CgroupLayout("v2", d, d, d, None, d)


def test_mount_root_equal_to_process_path_is_the_mount_point(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup(
        "4:memory:/docker/abc\n",
        [Mount("/sys/fs/cgroup/memory", options="memory", root="/docker/abc")],
    )
    host.mkdir("/sys/fs/cgroup/memory/docker/abc")  # a decoy: the mount already shows /docker/abc
    assert host.discover().memory == host.sysfs / "fs/cgroup/memory"


def test_process_below_mount_root(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup(
        "4:memory:/docker/abc/worker\n",
        [Mount("/sys/fs/cgroup/memory", options="memory", root="/docker/abc")],
    )
    host.mkdir("/sys/fs/cgroup/memory/worker")
    assert host.discover().memory == host.sysfs / "fs/cgroup/memory/worker"


def test_process_outside_mount_root_falls_back_to_mount_point(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup(
        "4:memory:/other\n0::/../../x\n",
        [
            Mount("/sys/fs/cgroup/memory", options="memory", root="/docker/abc"),
            Mount("/sys/fs/cgroup/unified", "cgroup2"),
        ],
    )
    host.mkdir("/sys/fs/cgroup/memory")
    host.mkdir("/sys/fs/cgroup/unified")
    layout = host.discover()
    assert layout.memory == host.sysfs / "fs/cgroup/memory"
    assert layout.unified == host.sysfs / "fs/cgroup/unified"


def test_cgroup_path_overrides_every_controller(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    for d in ("memory", "cpu", "cpuacct", "cpuset", "unified"):
        host.mkdir(f"/sys/fs/cgroup/{d}/kubepods/pod1/abc")
    cg = host.sysfs / "fs/cgroup"
    sub = "kubepods/pod1/abc"
    assert host.discover(cgroup_path="/kubepods/pod1/abc") == CgroupLayout(
        "hybrid",
        cg / "memory" / sub,
        cg / "cpu" / sub,
        cg / "cpuacct" / sub,
        cg / "cpuset" / sub,
        cg / "unified" / sub,
    )


def test_missing_directory_is_none(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup(
        "4:memory:/gone\n3:cpu:/\n",
        [
            Mount("/sys/fs/cgroup/memory", options="memory"),
            Mount("/sys/fs/cgroup/cpu", options="cpu"),
        ],
    )
    host.mkdir("/sys/fs/cgroup/cpu")
    assert host.discover() == CgroupLayout(
        "v1", None, host.sysfs / "fs/cgroup/cpu", None, None, None
    )


def test_mountinfo_escapes_spaces(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup("4:memory:/a b\n", [Mount("/sys/fs/my cgroups/memory", options="memory")])
    raw = (host.procfs / "self/mountinfo").read_text()
    assert "/sys/fs/my\\040cgroups/memory" in raw
    host.mkdir("/sys/fs/my cgroups/memory/a b")
    assert host.discover().memory == host.sysfs / "fs/my cgroups/memory/a b"


def test_mountinfo_with_non_utf8_bytes_elsewhere(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    mountinfo = host.procfs / "self/mountinfo"
    stick = b"70 22 8:17 / /media/M\xfcnchen rw - vfat /dev/sdb1 rw\n"
    mountinfo.write_bytes(mountinfo.read_bytes() + stick)
    assert host.discover().memory == host.sysfs / "fs/cgroup/memory/api/f23"


def test_mount_outside_sys_is_not_rerooted(tmp_path: Path) -> None:
    host = Host(tmp_path)
    point = tmp_path / "elsewhere/memory"
    host.setup("4:memory:/\n", [Mount(str(point), options="memory")])
    point.mkdir(parents=True)
    assert host.discover().memory == point


def _other_container(host: Host, pid: int, cgroup: str, mounts: str) -> Path:
    """Process ``pid`` of another container: its membership and mount table as this exporter,
    in a cgroup namespace of its own, reads them; its root where /proc/PID/root leads."""
    host.write(f"/proc/{pid}/cgroup", cgroup)
    host.write(f"/proc/{pid}/mountinfo", mounts)
    return host.procfs / str(pid) / "root"


def test_pid_finds_another_containers_cgroup_below_its_root_v2(tmp_path: Path) -> None:
    # Kubernetes on cgroup v2: each container in a cgroup namespace of its own, so the
    # crawler's cgroup reads "/../ID" here, and its /sys/fs/cgroup is rooted at it.
    host = v2_host(tmp_path)
    root = _other_container(
        host,
        7,
        "0::/../cri-containerd-abc.scope\n",
        "22 1 0:40 / / rw - overlay overlay rw\n"
        "30 22 0:41 /../cri-containerd-abc.scope /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
    )
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu memory pids\n")
    d = root / "sys/fs/cgroup"
    assert discover(host.procfs, host.sysfs, pid=7) == CgroupLayout("v2", d, d, d, None, d)
    # The exporter's own view is untouched.
    assert host.discover().memory == host.sysfs / "fs/cgroup/system.slice/app.service"


def test_pid_finds_another_containers_cgroup_below_its_root_v1(tmp_path: Path) -> None:
    # Docker on cgroup v1: no cgroup namespace, each controller a bind mount of the
    # container's own directory; a cgroup below it (systemd in the container) is followed.
    host = v1_host(tmp_path)
    root = _other_container(
        host,
        12,
        "4:memory:/docker/def/sub\n3:cpu,cpuacct:/docker/def\n0::/\n",
        "22 1 0:40 / / rw - overlay overlay rw\n"
        "30 22 0:41 /docker/def /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
        "31 22 0:42 /docker/def /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n",
    )
    for d in ("memory/sub", "cpu,cpuacct"):
        (root / "sys/fs/cgroup" / d).mkdir(parents=True)
    cg = root / "sys/fs/cgroup"
    assert discover(host.procfs, host.sysfs, pid=12) == CgroupLayout(
        "v1", cg / "memory/sub", cg / "cpu,cpuacct", cg / "cpu,cpuacct", None, None
    )


def test_a_cgroup_namespace_path_below_the_mount_root_is_followed(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.setup("0::/../ctr/inner\n", [Mount("/sys/fs/cgroup", "cgroup2", root="/../ctr")])
    host.write("/sys/fs/cgroup/cgroup.controllers", "memory\n")
    host.mkdir("/sys/fs/cgroup/inner")
    assert host.discover().memory == host.sysfs / "fs/cgroup/inner"
    # Above the mount's root it cannot be reached: the mount, as before.
    host.write("/proc/self/cgroup", "0::/../other\n")
    assert host.discover().memory == host.sysfs / "fs/cgroup"


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/proc/self/cgroup", "not a cgroup line\n"),
        ("/proc/self/mountinfo", "22 1 259:1 / / rw no separator here\n"),
    ],
)
def test_discover_rejects_garbage(tmp_path: Path, path: str, content: str) -> None:
    host = v1_host(tmp_path)
    host.write(path, content)
    with pytest.raises(
        CgroupError, match=re.escape(str(host.path(path))) + ".*" + content.strip()[:20]
    ):
        host.discover()


# --- memory ---------------------------------------------------------------------------------


def test_v1_memory_with_limit(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/memory/docker/abc",
        memory__limit_in_bytes="536870912\n",
        memory__usage_in_bytes="104857600\n",
        memory__stat="cache 100\ninactive_file 7\ntotal_inactive_file 4096\n",
        memory__oom_control="oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )
    assert read_memory(host.discover()) == MemoryStats(
        536870912, 104857600, 3, {"file": 100, "inactive_file": 4096}
    )


@pytest.mark.parametrize("unlimited", [UNLIMITED_V1, "-1\n"])
def test_v1_memory_unlimited_is_none(tmp_path: Path, unlimited: str) -> None:
    host = v1_host(tmp_path)
    # An old kernel: no oom_kill line, no total_* keys.
    host.files(
        "/sys/fs/cgroup/memory/docker/abc",
        memory__limit_in_bytes=unlimited,
        memory__usage_in_bytes="1000\n",
        memory__stat="inactive_file 7\n",
        memory__oom_control="oom_kill_disable 0\nunder_oom 0\n",
    )
    assert read_memory(host.discover()) == MemoryStats(None, 1000, None, {"inactive_file": 7})


def test_v2_memory(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/system.slice/app.service",
        memory__max="1073741824\n",
        memory__current="52428800\n",
        memory__stat="anon 1\nfile 2\ninactive_file 8192\nactive_file 3\n",
        memory__events="low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n",
    )
    assert read_memory(host.discover()) == MemoryStats(
        1073741824, 52428800, 2, {"anon": 1, "file": 2, "inactive_file": 8192, "active_file": 3}
    )


def test_v2_memory_max_is_none(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/system.slice/app.service", memory__max="max\n", memory__current="5\n"
    )
    assert read_memory(host.discover()) == MemoryStats(None, 5, None)


def test_hybrid_memory_reads_v1_files(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/memory/api/f23",
        memory__limit_in_bytes=UNLIMITED_V1,
        memory__usage_in_bytes="9449472\n",
        memory__stat="inactive_file 1810432\ntotal_inactive_file 1810432\n",
        memory__oom_control="oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    )
    assert read_memory(host.discover()) == MemoryStats(None, 9449472, 0, {"inactive_file": 1810432})


def test_missing_memory_files_are_none_not_zero(tmp_path: Path) -> None:
    assert read_memory(v1_host(tmp_path).discover()) == MemoryStats(None, None, None)
    assert read_memory(CgroupLayout("none", None, None, None, None, None)) == MemoryStats(
        None, None, None
    )


# A v1 cgroup as this kernel writes it (shortened): a crawler's 250 MiB of read-back images
# beside 30 MiB of its own memory.
V1_MEMORY_STAT = """\
cache 262144000
rss 31457280
shmem 4096
active_anon 31461376
inactive_anon 0
active_file 209715200
inactive_file 52424704
unevictable 0
hierarchical_memory_limit 314572800
total_cache 262144000
total_rss 31457280
total_shmem 4096
total_mapped_file 0
total_inactive_anon 0
total_active_anon 31461376
total_inactive_file 52424704
total_active_file 209715200
total_unevictable 8192
"""


def test_v1_memory_breakdown_and_reclaimable(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/memory/docker/abc",
        memory__limit_in_bytes="314572800\n",
        memory__usage_in_bytes="295698432\n",
        memory__stat=V1_MEMORY_STAT,
        memory__kmem__usage_in_bytes="2093056\n",
    )
    stats = read_memory(host.discover())
    assert stats.breakdown == {
        "anon": 31457280,
        "file": 262144000,
        "active_anon": 31461376,
        "inactive_anon": 0,
        "active_file": 209715200,
        "inactive_file": 52424704,
        "shmem": 4096,
        "unevictable": 8192,
        "kernel": 2093056,
    }
    assert stats.inactive_file_bytes == 52424704
    assert stats.reclaimable_bytes == 209715200 + 52424704
    assert stats.stall_percent is None  # v1 has no per-cgroup PSI


def test_v2_memory_breakdown_kernel_and_pressure(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/system.slice/app.service",
        memory__max="314572800\n",
        memory__current="300000000\n",
        memory__stat=(
            "anon 280000000\nfile 12000000\nkernel 8000000\nkernel_stack 1000\nshmem 4096\n"
            "active_anon 279000000\ninactive_anon 1000000\nactive_file 2000000\n"
            "inactive_file 10000000\nunevictable 0\nslab_reclaimable 3000000\n"
            "slab_unreclaimable 500000\nslab 3500000\n"
        ),
        memory__pressure=(
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\n"
            "full avg10=2.00 avg60=0.00 avg300=0.00 total=45\n"
        ),
    )
    stats = read_memory(host.discover())
    assert stats.breakdown["kernel"] == 8000000
    assert stats.breakdown["slab_reclaimable"] == 3000000
    assert "kernel_stack" not in stats.breakdown
    assert stats.reclaimable_bytes == 2000000 + 10000000 + 3000000
    assert stats.stall_percent == 12.5


def test_v2_memory_kernel_from_its_parts_on_older_kernels(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/system.slice/app.service",
        memory__current="5\n",
        memory__stat="anon 1\nkernel_stack 10\npagetables 20\npercpu 30\nsock 40\nslab 50\n",
    )
    stats = read_memory(host.discover())
    assert stats.breakdown == {"anon": 1, "kernel": 150}
    assert stats.reclaimable_bytes is None  # no file LRU figures: nothing known reclaimable


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("memory.max", "lots\n"),
        ("memory.current", "12 34\n"),
        ("memory.current", ""),
        ("memory.current", "\n"),
        ("memory.stat", "anon\n"),
        ("memory.events", "oom_kill many\n"),
        ("memory.pressure", "some avg10=x avg60=0 avg300=0 total=1\n"),
        ("memory.max", "x" * 200),
    ],
)
def test_memory_garbage_names_the_file(tmp_path: Path, name: str, content: str) -> None:
    host = v2_host(tmp_path)
    bad = "/sys/fs/cgroup/system.slice/app.service/" + name
    host.write(bad, content)
    with pytest.raises(CgroupError) as info:
        read_memory(host.discover())
    message = str(info.value)
    assert str(host.path(bad)) in message
    assert content.strip()[:20] in message
    assert len(message) < len(str(host.path(bad))) + 100  # long contents are cut short


# --- cpu ------------------------------------------------------------------------------------


def test_v1_cpu_with_quota(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc",
        cpu__cfs_quota_us="150000\n",
        cpu__cfs_period_us="100000\n",
        cpu__stat="nr_periods 40\nnr_throttled 7\nthrottled_time 2500000000\n",
        cpuacct__usage="12500000000\n",
    )
    host.files(
        "/sys/fs/cgroup/cpuset/docker/abc",
        cpuset__effective_cpus="0-3,8,10-11\n",
        cpuset__cpus="0\n",
    )
    assert read_cpu(host.discover()) == CpuStats(1.5, 12.5, 2.5, 7, 7)


def test_v1_cpu_without_quota(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc",
        cpu__cfs_quota_us="-1\n",
        cpu__cfs_period_us="100000\n",
    )
    # Older kernels have no cpuset.effective_cpus.
    host.files("/sys/fs/cgroup/cpuset/docker/abc", cpuset__cpus="2\n")
    assert read_cpu(host.discover()) == CpuStats(None, None, None, None, 1)


def test_v2_cpu(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/system.slice/app.service",
        cpu__max="50000 100000\n",
        cpu__stat="usage_usec 3000000\nuser_usec 2\nsystem_usec 1\nnr_periods 9\n"
        "nr_throttled 4\nthrottled_usec 250000\n",
        cpuset__cpus__effective="0-1\n",
    )
    assert read_cpu(host.discover()) == CpuStats(0.5, 3.0, 0.25, 4, 2)


def test_v2_cpu_max_is_none(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    host.files("/sys/fs/cgroup/system.slice/app.service", cpu__max="max 100000\n")
    assert read_cpu(host.discover()) == CpuStats(None, None, None, None, None)


def test_v2_without_cpu_controller_still_reports_usage(tmp_path: Path) -> None:
    host = v2_host(tmp_path, controllers="memory")
    host.files(
        "/sys/fs/cgroup/system.slice/app.service",
        cpu__stat="usage_usec 1500000\nuser_usec 1\nsystem_usec 1\n",
    )
    assert read_cpu(host.discover()) == CpuStats(None, 1.5, None, None, None)


def test_hybrid_cpu_reads_v1_files(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/cpu",
        cpu__cfs_quota_us="-1\n",
        cpu__cfs_period_us="100000\n",
        cpu__stat="nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n",
    )
    host.files("/sys/fs/cgroup/cpuacct", cpuacct__usage="49793328053\n")
    host.files("/sys/fs/cgroup/cpuset", cpuset__effective_cpus="0-1\n")
    host.files("/sys/fs/cgroup/unified", cpu__stat="usage_usec 1\n")  # must not be used
    assert read_cpu(host.discover()) == CpuStats(None, 49.793328053, 0.0, 0, 2)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cpu.max", "50000\n"),
        ("cpu.max", "max 0\n"),
        ("cpu.max", "half 100000\n"),
        ("cpu.stat", "usage_usec 1.5\n"),
        ("cpu.stat", ""),
        ("cpuset.cpus.effective", "3-1\n"),
        ("cpuset.cpus.effective", "0-\n"),
        ("cpuset.cpus.effective", "a,b\n"),
        ("cpuset.cpus.effective", "\n"),
    ],
)
def test_cpu_garbage_names_the_file(tmp_path: Path, name: str, content: str) -> None:
    host = v2_host(tmp_path)
    bad = "/sys/fs/cgroup/system.slice/app.service/" + name
    host.write(bad, content)
    with pytest.raises(CgroupError, match=re.escape(str(host.path(bad)))):
        read_cpu(host.discover())


def test_v1_cpu_period_zero_is_garbage(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc",
        cpu__cfs_quota_us="1000\n",
        cpu__cfs_period_us="0\n",
    )
    with pytest.raises(CgroupError, match=r"/cpu\.cfs_period_us: period not positive"):
        read_cpu(host.discover())


@pytest.mark.parametrize(
    ("cpus", "count"),
    [("0\n", 1), ("0-3\n", 4), ("0-3,8,10-11\n", 7), ("0-63,128-191\n", 128)],
)
def test_cpuset_ranges(tmp_path: Path, cpus: str, count: int) -> None:
    host = v2_host(tmp_path)
    host.files("/sys/fs/cgroup/system.slice/app.service", cpuset__cpus__effective=cpus)
    assert read_cpu(host.discover()).cpuset_cpus == count


# --- pressure -------------------------------------------------------------------------------


def test_pressure_prefers_the_cgroup_and_falls_back_to_proc(tmp_path: Path) -> None:
    host = hybrid_host(tmp_path)
    host.files(
        "/sys/fs/cgroup/unified",
        cpu__pressure=PSI.format(5190024, 0),
        io__pressure=PSI.format(1665416, 1576588),
    )
    host.write("/proc/pressure/cpu", PSI.format(999, 999))  # shadowed by the cgroup's own
    # Kernels before 5.13 have no "full" line for cpu, and a resource may be absent entirely.
    host.write("/proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n")
    assert read_pressure(host.discover(), host.procfs) == {
        ("cpu", "some"): 5.190024,
        ("cpu", "full"): 0.0,
        ("io", "some"): 1.665416,
        ("io", "full"): 1.576588,
        ("memory", "some"): 2.5,
    }


def test_pressure_without_cgroup_uses_proc(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    for i, resource in enumerate(("cpu", "memory", "io")):
        host.write(f"/proc/pressure/{resource}", PSI.format(i * 1_000_000, i * 500_000))
    assert read_pressure(host.discover(), host.procfs) == {
        ("cpu", "some"): 0.0,
        ("cpu", "full"): 0.0,
        ("memory", "some"): 1.0,
        ("memory", "full"): 0.5,
        ("io", "some"): 2.0,
        ("io", "full"): 1.0,
    }


def test_pressure_with_nothing_is_empty(tmp_path: Path) -> None:
    assert read_pressure(v2_host(tmp_path).discover(), tmp_path / "proc") == {}


@pytest.mark.parametrize(
    "content", ["some total=abc\n", "sometimes avg10=0.00 total=5\n", "some avg10=1\n", ""]
)
def test_pressure_garbage_names_the_file(tmp_path: Path, content: str) -> None:
    host = v2_host(tmp_path)
    bad = "/sys/fs/cgroup/system.slice/app.service/memory.pressure"
    host.write(bad, content)
    with pytest.raises(CgroupError, match=re.escape(str(host.path(bad)))):
        read_pressure(host.discover(), host.procfs)


# --- this machine ---------------------------------------------------------------------------


def test_real_machine_is_consistent_with_proc_self_cgroup() -> None:
    layout = discover()
    try:
        membership = Path("/proc/self/cgroup").read_text()
        fstypes = {
            line.split(" - ")[1].split()[0]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
        }
    except FileNotFoundError:
        assert layout.version == "none"
        return
    paths: dict[str, str] = {}
    for line in membership.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path

    v1_controllers = "memory" in paths or "cpu" in paths
    expected = {
        (True, True): "hybrid",
        (True, False): "v1",
        (False, True): "v2",
        (False, False): "none",
    }[(v1_controllers and "cgroup" in fstypes, "cgroup2" in fstypes)]
    assert layout.version == expected
    if expected == "none":
        return
    memory_path = paths["memory"] if expected != "v2" else paths[""]
    assert layout.memory is not None and layout.memory.is_dir()
    # The dir is the cgroup path below some mount; a namespaced "/" is the mount itself.
    assert memory_path == "/" or str(layout.memory).endswith(memory_path)
    if "cgroup2" in fstypes:
        assert layout.unified is not None and layout.unified.is_dir()
    usage = read_memory(layout).usage_bytes
    if any((layout.memory / f).exists() for f in ("memory.current", "memory.usage_in_bytes")):
        assert usage is not None and usage > 0
    assert read_cpu(layout).cpuset_cpus in (None, *range(1, (os.cpu_count() or 1) + 1))
    assert all(v >= 0 for v in read_pressure(layout).values())
