"""A fake machine's /proc and /sys cgroup trees under tmp_path, for the cgroup and system tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pixcrawler_exporter.collectors.cgroup import CgroupLayout
from pixcrawler_exporter.collectors.cgroup_find import discover


@dataclass(frozen=True)
class Mount:
    point: str  # as the exporter sees it, e.g. /sys/fs/cgroup/memory
    fstype: str = "cgroup"
    options: str = ""  # super options: the controllers for v1
    root: str = "/"


@dataclass
class Host:
    """A fake machine under tmp_path; paths are given as the real machine would spell them."""

    tmp: Path

    @property
    def procfs(self) -> Path:
        return self.tmp / "proc"

    @property
    def sysfs(self) -> Path:
        return self.tmp / "sys"

    def path(self, absolute: str) -> Path:
        return self.tmp / absolute.lstrip("/")

    def write(self, absolute: str, text: str) -> None:
        target = self.path(absolute)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def files(self, directory: str, **contents: str) -> None:
        """Files in one cgroup dir; keyword names use "__" where the kernel uses "."."""
        for name, text in contents.items():
            self.write(f"{directory}/{name.replace('__', '.')}", text)

    def mkdir(self, absolute: str) -> None:
        self.path(absolute).mkdir(parents=True, exist_ok=True)

    def setup(self, cgroup: str, mounts: Sequence[Mount]) -> None:
        self.write("/proc/self/cgroup", cgroup)
        # Unrelated mounts around the cgroup ones, as on any real machine.
        lines = ["22 1 259:1 / / rw,relatime - ext4 /dev/root rw"]
        for i, m in enumerate(mounts):
            point = m.point.replace(" ", "\\040")
            options = ",".join(filter(None, ["rw", m.options]))
            lines.append(
                f"{30 + i} 22 0:{40 + i} {m.root} {point} rw,nosuid shared:{i} - "
                f"{m.fstype} {m.fstype} {options}"
            )
        lines.append("60 22 0:50 / /proc rw - proc proc rw")
        self.write("/proc/self/mountinfo", "\n".join(lines) + "\n")

    def discover(self, cgroup_path: str | None = None) -> CgroupLayout:
        return discover(self.procfs, self.sysfs, cgroup_path)


V1_MOUNTS = (
    Mount("/sys/fs/cgroup/memory", options="memory"),
    Mount("/sys/fs/cgroup/cpu,cpuacct", options="cpu,cpuacct"),
    Mount("/sys/fs/cgroup/cpuset", options="cpuset"),
    Mount("/sys/fs/cgroup/systemd", options="xattr,name=systemd"),
)
V1_CGROUP = (
    "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:cpuset:/docker/abc\n"
    "1:name=systemd:/docker/abc\n0::/\n"
)


def v1_host(tmp_path: Path) -> Host:
    host = Host(tmp_path)
    host.setup(V1_CGROUP, V1_MOUNTS)
    for controller in ("memory", "cpu,cpuacct", "cpuset"):
        host.mkdir(f"/sys/fs/cgroup/{controller}/docker/abc")
    return host


def v2_host(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> Host:
    host = Host(tmp_path)
    host.setup("0::/system.slice/app.service\n", [Mount("/sys/fs/cgroup", "cgroup2", "nsdelegate")])
    host.write("/sys/fs/cgroup/cgroup.controllers", controllers + "\n")
    host.mkdir("/sys/fs/cgroup/system.slice/app.service")
    return host


def hybrid_host(tmp_path: Path) -> Host:
    """Like the machine these tests were written on: v1 controllers apart, cgroup2 at unified."""
    host = Host(tmp_path)
    mounts = [
        Mount("/sys/fs/cgroup/cpu", options="cpu"),
        Mount("/sys/fs/cgroup/cpuacct", options="cpuacct"),
        Mount("/sys/fs/cgroup/cpuset", options="cpuset"),
        Mount("/sys/fs/cgroup/memory", options="memory"),
        Mount("/sys/fs/cgroup/pids", options="pids"),
        Mount("/sys/fs/cgroup/systemd", options="name=systemd"),
        Mount("/sys/fs/cgroup/unified", "cgroup2"),
    ]
    cgroup = (
        "6:name=systemd:/\n5:pids:/\n4:memory:/api/f23\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"
    )
    host.setup(cgroup, mounts)
    host.write("/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n")
    for d in ("memory/api/f23", "cpu", "cpuacct", "cpuset"):
        host.mkdir(f"/sys/fs/cgroup/{d}")
    return host


# --- discover -------------------------------------------------------------------------------
