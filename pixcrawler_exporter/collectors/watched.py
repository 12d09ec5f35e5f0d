"""Which cgroup the memory, CPU and pressure collectors read.

The exporter's own by default, one named by ``cgroup_path``, or, with ``cgroup_process``, the
cgroup of a crawler process that the exporter sees in a shared PID namespace (Kubernetes'
``shareProcessNamespace: true``, ``docker run --pid container:NAME``). A sidecar's own cgroup is
a 30 MB exporter; the crawler's is what its limits, statuses and alerts are about.

The process is found by its command line and read through ``/proc/PID/root``: its container's
``/sys/fs/cgroup`` shows its own cgroup, which the exporter's does not. It is found again when it
exits, since a restarted container is a new process in a new cgroup.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pixcrawler_exporter.collect.errors import CollectorError
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.collectors.cgroup_find import discover
from pixcrawler_exporter.collectors.procfs import read_file

log = logging.getLogger(__name__)


class Watched:
    """A cgroup found once at start: the exporter's own, or the one ``cgroup_path`` names."""

    def __init__(self, layout: cgroup.CgroupLayout, own: cgroup.CgroupLayout | None = None):
        self._layout = layout
        # The exporter's own cgroup while another one is watched (exported apart), else None.
        self.own = own

    @property
    def pid(self) -> int | None:
        """The watched process, or None when the cgroup is not found through a process."""
        return None

    def layout(self) -> cgroup.CgroupLayout:
        return self._layout

    def require(self, known: bool, what: str) -> None:
        """Called with whether a read found the cgroup's `what` figures. A cgroup found at
        start that has none reads as the host (a bare host has none either); a process's that
        has none went away while it was read, which is no reason to show the host instead."""


@dataclass(frozen=True)
class _Found:
    pid: int
    start: str  # its start time since boot: a PID used again is another process
    layout: cgroup.CgroupLayout


class WatchedProcess(Watched):
    """The cgroup of the oldest process whose command line matches ``pattern``, outside the
    exporter's own cgroup."""

    def __init__(self, pattern: str, procfs: Path, own: cgroup.CgroupLayout) -> None:
        super().__init__(own, own)
        self.pattern = re.compile(pattern)
        self.procfs = procfs
        self._found: _Found | None = None

    @property
    def pid(self) -> int | None:
        found = self._found
        return found.pid if found is not None else None

    def layout(self) -> cgroup.CgroupLayout:
        found = self._found
        if found is None or _start(self.procfs, found.pid) != found.start:
            found = self._found = self._find()
        return found.layout

    def require(self, known: bool, what: str) -> None:
        found = self._found
        if not known and found is not None:
            self._found = None
            raise CollectorError(
                f"cgroup_process: no {what} figures in the cgroup of process {found.pid}: "
                "it exited while it was read; it is looked for again at the next read"
            )

    def _find(self) -> _Found:
        own_membership = read_file(self.procfs / "self/cgroup")
        matches: list[tuple[int, int, str]] = []
        for entry in os.scandir(self.procfs):
            if not entry.name.isdigit():
                continue
            process = self.procfs / entry.name
            try:
                cmdline = read_file(process / "cmdline")
                # Kernel threads and zombies have no command line; the exporter's own container
                # (a health check matching the pattern, say) is never the one to watch.
                if not cmdline or read_file(process / "cgroup") == own_membership:
                    continue
                start = _start(self.procfs, int(entry.name))
            except OSError:
                continue  # gone meanwhile
            # NUL-separated arguments, matched as the shell line they would read as.
            if start is not None and self.pattern.search(
                cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
            ):
                matches.append((int(start), int(entry.name), start))
        if not matches:
            raise CollectorError(
                f"cgroup_process: no process outside the exporter's container matches "
                f"{self.pattern.pattern!r}; is the PID namespace shared with the crawler's "
                "(shareProcessNamespace: true, docker run --pid container:NAME)?"
            )
        _, pid, start = min(matches)  # the oldest: the container's main process
        root = self.procfs / str(pid) / "root"
        try:
            os.stat(root)
        except PermissionError:
            raise CollectorError(_denied(self.procfs, pid, root)) from None
        except OSError as exc:
            raise CollectorError(f"cgroup_process: process {pid}: {exc}") from None
        try:
            layout = discover(self.procfs, pid=pid)
        except cgroup.CgroupError as exc:
            raise CollectorError(f"cgroup_process: process {pid}: {exc}") from None
        if layout.memory is None and layout.cpuacct is None:
            raise CollectorError(
                f"cgroup_process: process {pid} ({_name(self.procfs, pid)}) has no memory or "
                f"CPU cgroup below {root}/sys/fs/cgroup"
            )
        # Once per process found (a restart), not per scrape. Its name only: a command line
        # can hold a password.
        log.info(
            "watching the cgroup of process %d (%s)",
            pid,
            _name(self.procfs, pid),
            extra={"pid": pid, "cgroup": str(layout.memory or layout.cpuacct)},
        )
        return _Found(pid, start, layout)


def _start(procfs: Path, pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None once gone."""
    try:
        stat = read_file(procfs / str(pid) / "stat")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its closing one.
    return stat.rpartition(b")")[2].split()[19].decode()


def _name(procfs: Path, pid: int) -> str:
    try:
        return read_file(procfs / str(pid) / "comm").decode(errors="replace").strip()
    except OSError:
        return "?"


def _status(procfs: Path, pid: str) -> dict[str, str]:
    """Real UID, real GID and permitted capabilities of a process, from its status (which
    anyone may read)."""
    found = {"Uid": "?", "Gid": "?", "CapPrm": "?"}
    try:
        for line in read_file(procfs / pid / "status").decode().splitlines():
            key, _, value = line.partition(":")
            if key in found and value.split():
                found[key] = value.split()[0]
    except OSError:
        pass
    return found


def _denied(procfs: Path, pid: int, root: Path) -> str:
    theirs, ours = _status(procfs, str(pid)), _status(procfs, "self")
    if (theirs["Uid"], theirs["Gid"]) == (ours["Uid"], ours["Gid"]):
        why = (
            f"it holds capabilities the exporter lacks (CapPrm {theirs['CapPrm']} against "
            f"{ours['CapPrm']}): drop them from the crawler (capabilities: drop: [ALL], "
            "docker run --cap-drop ALL)"
        )
    else:
        why = (
            f"it runs as UID {theirs['Uid']} GID {theirs['Gid']}, the exporter as UID "
            f"{ours['Uid']} GID {ours['Gid']}; the kernel allows it for the same UID and GID "
            "only: run the exporter as the crawler's user (runAsUser and runAsGroup, "
            "docker run --user UID:GID)"
        )
    return (
        f"cgroup_process: may not read process {pid} ({_name(procfs, pid)}) through {root}: {why}"
    )


def select(
    procfs: Path, sysfs: Path, cgroup_path: str | None, cgroup_process: str | None
) -> tuple[cgroup.CgroupLayout, Watched]:
    """The exporter's own cgroup layout, and what the system collectors are to watch."""
    own = discover(procfs, sysfs)
    if cgroup_process is not None:
        return own, WatchedProcess(cgroup_process, procfs, own)
    if cgroup_path is not None:
        return own, Watched(discover(procfs, sysfs, cgroup_path), own)
    return own, Watched(own)
