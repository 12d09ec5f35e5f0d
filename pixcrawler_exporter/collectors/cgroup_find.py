"""Where a process's cgroup lives: its /proc/PID/cgroup read against its mount table.

For the exporter itself, another cgroup given by path, or another container's process: a
container's /sys/fs/cgroup shows its own cgroup only (a bind mount of it under v1, a cgroup
namespace rooted at it under v2), so another container's is found through that container's own
mounts, below /proc/PID/root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pixcrawler_exporter.collectors.cgroup import CgroupError, CgroupLayout
from pixcrawler_exporter.collectors.cgroup import _read as read  # the readers' own rules

# Real v1 controllers, as opposed to named hierarchies (name=systemd) and mount flags.
_V1_CONTROLLERS = frozenset(
    {"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory"}
    | {"misc", "net_cls", "net_prio", "perf_event", "pids", "rdma"}
)
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_NO_CGROUPS = CgroupLayout("none", None, None, None, None, None)


@dataclass(frozen=True)
class _Mount:
    root: str
    point: Path
    controllers: frozenset[str]


def discover(
    procfs: Path = Path("/proc"),
    sysfs: Path = Path("/sys"),
    cgroup_path: str | None = None,
    pid: int | None = None,
) -> CgroupLayout:
    """Where the exporter's (or `cgroup_path`'s, or process `pid`'s) cgroup lives for each
    controller we read."""
    process = procfs / ("self" if pid is None else str(pid))
    membership = read(process / "cgroup")
    mountinfo = read(process / "mountinfo")
    if membership is None or mountinfo is None:
        return _NO_CGROUPS
    paths = _parse_membership(process / "cgroup", membership)
    v1: dict[str, _Mount] = {}
    v2: _Mount | None = None
    root = None if pid is None else process / "root"
    for fstype, mount in _parse_mountinfo(process / "mountinfo", mountinfo, sysfs, root):
        if fstype == "cgroup2" and v2 is None:
            v2 = mount
        elif fstype == "cgroup":
            for name in mount.controllers:
                v1.setdefault(name, mount)

    def locate(mount: _Mount | None, key: str) -> Path | None:
        path = cgroup_path if cgroup_path is not None else paths.get(key)
        if mount is None or path is None:
            return None
        found = _join(mount, path)
        return found if found.is_dir() else None

    unified = locate(v2, "")
    # In hybrid mode a controller with a v1 mount is v1's, whatever cgroup.controllers says.
    owned = read(v2.point / "cgroup.controllers", allow_empty=True) if v2 else None
    v2_owns = frozenset((owned or "").split())

    def controller(name: str, always_v2: bool = False) -> Path | None:
        if name in v1:
            return locate(v1[name], name)
        return unified if always_v2 or name in v2_owns else None

    has_v1 = bool(_V1_CONTROLLERS & v1.keys())
    version: Literal["v1", "v2", "hybrid", "none"]
    if has_v1 and v2:
        version = "hybrid"
    elif has_v1:
        version = "v1"
    elif v2:
        version = "v2"
    else:
        return _NO_CGROUPS
    return CgroupLayout(
        version=version,
        memory=controller("memory"),
        cpu=controller("cpu"),
        # v2 keeps usage_usec in every cgroup's cpu.stat, cpu controller enabled or not.
        cpuacct=controller("cpuacct", always_v2=True),
        cpuset=controller("cpuset"),
        unified=unified,
    )


def _parse_membership(path: Path, text: str) -> dict[str, str]:
    """Controller name → cgroup path from /proc/PID/cgroup; the v2 hierarchy is keyed ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].startswith("/"):
            raise CgroupError(path, line)
        hierarchy, controllers, cgroup = fields
        if hierarchy == "0" and not controllers:
            paths[""] = cgroup
        for name in filter(None, controllers.split(",")):
            paths[name] = cgroup
    return paths


def _parse_mountinfo(
    path: Path, text: str, sysfs: Path, root: Path | None
) -> list[tuple[str, _Mount]]:
    mounts: list[tuple[str, _Mount]] = []
    for line in filter(str.strip, text.splitlines()):
        # Optional fields of any number come before " - "; spaces inside paths are escaped.
        head, separator, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not separator or len(fields) < 6 or len(after) < 3:
            raise CgroupError(path, line)
        fstype, _source, options = after[:3]
        if fstype in ("cgroup", "cgroup2"):
            point = _reroot(_unescape(fields[4]), sysfs, root)
            controllers = frozenset(options.split(","))
            mounts.append((fstype, _Mount(_unescape(fields[3]), point, controllers)))
    return mounts


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _reroot(mount_point: str, sysfs: Path, root: Path | None) -> Path:
    """Mount points are as the exporter sees them (--path.sysfs says where that /sys really is),
    or as another process does, whose root is `root`."""
    point = PurePosixPath(mount_point)
    if root is not None:
        return root / point.relative_to("/")
    if point.is_relative_to("/sys"):
        return sysfs / point.relative_to("/sys")
    return Path(point)


def _join(mount: _Mount, cgroup: str) -> Path:
    """The cgroup's directory below a mount that shows the hierarchy from `mount.root` down
    (both as our cgroup namespace writes them: "/../ID" for one outside it)."""
    relative = PurePosixPath("/", cgroup).relative_to("/")
    root = PurePosixPath("/", mount.root).relative_to("/")
    if not relative.is_relative_to(root) or ".." in relative.relative_to(root).parts:
        # Outside the mount's view (across a cgroup namespace boundary): the mount is our best.
        return mount.point
    return mount.point / relative.relative_to(root)
