"""Real cgroups made for a test (root only): a memory limit, optionally half a core, and a way to
start a process inside. v1, hybrid and v2 machines alike."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.conftest import need

CPU_QUOTA_US, CPU_PERIOD_US = 50_000, 100_000  # 0.5 core
_serial = itertools.count()


def _cgroup_mounts() -> dict[str, Path]:
    """controller (or 'cgroup2') -> mount point, from the real mount table."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = Path(left.split()[4])
        fstype, _, options = right.split()
        if fstype == "cgroup2":
            mounts.setdefault("cgroup2", point)
        elif fstype == "cgroup":
            for opt in options.split(","):
                mounts.setdefault(opt, point)
    return mounts


@contextlib.contextmanager
def new_cgroup(memory_limit: int, cpu: bool = True) -> Iterator[tuple[list[Path], str]]:
    """A new cgroup limited to ``memory_limit`` bytes and, with ``cpu``, half a core:
    (directories to join, cgroup path). Needs root; skips where cgroups cannot be made."""
    need(os.geteuid() == 0, "creating cgroups needs root")
    mounts = _cgroup_mounts()
    name = f"pixcrawler-test-{os.getpid()}-{next(_serial)}"
    made: list[Path] = []
    try:
        if "memory" in mounts and "cpu" in mounts:  # v1 or hybrid: one directory per controller
            mem, cpu_dir = mounts["memory"] / name, mounts["cpu"] / name
            for d in dict.fromkeys((mem, cpu_dir) if cpu else (mem,)):
                d.mkdir()
                made.append(d)
            (mem / "memory.limit_in_bytes").write_text(str(memory_limit))
            if cpu:
                (cpu_dir / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (cpu_dir / "cpu.cfs_quota_us").write_text(str(CPU_QUOTA_US))
        elif "cgroup2" in mounts:
            root = mounts["cgroup2"]
            (root / "cgroup.subtree_control").write_text("+memory +cpu")
            d = root / name
            d.mkdir()
            made.append(d)
            (d / "memory.max").write_text(str(memory_limit))
            if cpu:
                (d / "cpu.max").write_text(f"{CPU_QUOTA_US} {CPU_PERIOD_US}")
        else:
            need(False, "no cgroup memory and cpu controllers are mounted")
    except OSError as exc:
        for d in reversed(made):
            d.rmdir()
        need(False, f"this machine does not allow creating a limited cgroup: {exc}")
    try:
        yield made, f"/{name}"
    finally:
        for d in reversed(made):
            _remove(d)


def _remove(cgroup: Path) -> None:
    for _ in range(50):  # a killed process leaves the cgroup a moment later
        try:
            cgroup.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def joiner(dirs: Sequence[Path]) -> Callable[[], None]:
    """A preexec function that moves the child into the cgroup before exec."""

    def join() -> None:
        for d in dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    return join


@contextlib.contextmanager
def pids_cgroup(limit: int) -> Iterator[list[Path]]:
    """A new cgroup allowing at most ``limit`` tasks (processes and threads): directories to join
    (see :func:`joiner`). Needs root; skips where the pids controller is not to be had."""
    need(os.geteuid() == 0, "creating cgroups needs root")
    mounts = _cgroup_mounts()
    d = Path()
    try:
        if "pids" in mounts:  # v1 or hybrid
            d = mounts["pids"] / f"pixcrawler-test-{os.getpid()}-{next(_serial)}"
        elif "cgroup2" in mounts:
            root = mounts["cgroup2"]
            (root / "cgroup.subtree_control").write_text("+pids")
            d = root / f"pixcrawler-test-{os.getpid()}-{next(_serial)}"
        else:
            need(False, "no cgroup pids controller is mounted")
        d.mkdir()
    except OSError as exc:
        need(False, f"this machine does not allow creating a pids cgroup: {exc}")
    try:
        (d / "pids.max").write_text(str(limit))
        yield [d]
    finally:
        _remove(d)
