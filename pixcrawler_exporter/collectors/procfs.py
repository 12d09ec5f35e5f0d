"""The host's figures from procfs, read the way the cgroup files are: a few system calls each.

psutil parses the same files, but through text streams and for every field it offers; for the
two memory figures and the per-interface byte counters a scrape needs, that was a third of the
time of reading every source.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

# Filesystems whose changes all pass through this kernel: inotify sees every one, and statvfs
# answers from memory without asking a server that may be gone.
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "ramfs", "jfs"}
    | {"reiserfs", "bcachefs", "vfat", "exfat", "hfsplus"}
)


@dataclass(frozen=True)
class HostMemory:
    total_bytes: int
    available_bytes: int
    shmem_bytes: int = 0  # tmpfs and shared memory: not reclaimable while the files exist


def read_file(path: Path) -> bytes:
    """The whole file: from a descriptor kept open for a file the kernel writes (see
    _KeptFiles), else with three system calls for a small one (``Path.read_text`` makes about
    ten and builds a text stream around them)."""
    return _kept.read(path)


def _read_open(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(chunks)


# Filesystems whose files the kernel generates on each read from the start of the file: a
# descriptor kept open and read again from offset 0 sees what a new open would.
KERNEL_FILESYSTEMS = frozenset({"proc", "sysfs", "cgroup", "cgroup2"})


class _KeptFiles:
    """procfs, sysfs and cgroup files read on every scrape, each opened once.

    Opening and closing one of these cost four times what reading it does (path lookup on a
    pseudo-filesystem), and a scrape reads about fifteen. A file on any other filesystem (a
    test's fake tree, a file replaced by rename) or absent is opened on every read as before.
    A read that fails on a kept descriptor (its cgroup removed: ENODEV) drops it and opens the
    path anew. At most ``limit`` are kept; the paths found to be other files are remembered up
    to ``limit * 4``, then forgotten together.
    """

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._lock = threading.Lock()  # no descriptor is closed while another thread reads it
        self._fds: dict[Path, int] = {}
        self._other: set[Path] = set()

    def read(self, path: Path) -> bytes:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None and path not in self._other:
                fd = self._keep(path)
            if fd is not None:
                try:
                    return _read_at(fd)
                except OSError:
                    del self._fds[path]
                    with contextlib.suppress(OSError):
                        os.close(fd)
        return _read_open(path)

    def _keep(self, path: Path) -> int | None:
        fd = None
        if filesystem_type(path) in KERNEL_FILESYSTEMS and len(self._fds) < self._limit:
            with contextlib.suppress(OSError):  # read_file's own open says why
                fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        if fd is None:
            if len(self._other) >= 4 * self._limit:
                self._other.clear()
            self._other.add(path)
        return fd


def _read_at(fd: int) -> bytes:
    chunks = [os.pread(fd, 65536, 0)]
    offset = len(chunks[0])
    while chunks[-1]:
        chunks.append(os.pread(fd, 65536, offset))
        offset += len(chunks[-1])
    return b"".join(chunks)


_kept = _KeptFiles()


def host_memory(procfs: Path) -> HostMemory:
    """MemTotal, MemAvailable and Shmem of ``<procfs>/meminfo``, in bytes."""
    wanted = (b"MemTotal", b"MemAvailable", b"Shmem")
    found: dict[bytes, int] = {}
    for line in read_file(procfs / "meminfo").splitlines():
        key, _, rest = line.partition(b":")
        if key in wanted:
            found[key] = int(rest.split()[0]) * 1024
            if len(found) == len(wanted):
                break
    if b"MemTotal" in found and b"MemAvailable" in found:
        return HostMemory(found[b"MemTotal"], found[b"MemAvailable"], found.get(b"Shmem", 0))
    # Kernels before 3.14 have no MemAvailable: psutil estimates it as free(1) used to.
    import psutil

    psutil.PROCFS_PATH = str(procfs)
    vm = psutil.virtual_memory()
    return HostMemory(vm.total, vm.available, getattr(vm, "shared", 0))


def filesystem_type(path: str | Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``, ...), by its device's line
    in mountinfo; None when that cannot be told. The device number is the filesystem's own
    (every tmpfs mount has one of its own), so bind mounts and symlinks lead to the right line."""
    try:
        dev = os.stat(path).st_dev
        text = mountinfo.read_text(errors="replace")
    except OSError:
        return None
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    for line in text.splitlines():
        fields = line.split()
        _, _, tail = line.partition(" - ")
        if len(fields) > 2 and fields[2] == wanted and tail:
            return tail.split()[0]
    return None


def is_local(path: str | Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """Whether ``path`` is on one of the LOCAL_FILESYSTEMS; False when that cannot be told."""
    return filesystem_type(path, mountinfo) in LOCAL_FILESYSTEMS


def net_dev(procfs: Path) -> dict[str, tuple[int, int]]:
    """Bytes received and sent per interface, from ``<procfs>/net/dev``."""
    counters: dict[str, tuple[int, int]] = {}
    for line in read_file(procfs / "net/dev").splitlines()[2:]:
        # "  eth0: 1234 ..." - an interface name may itself hold a colon, the counters never do.
        name, _, rest = line.rpartition(b":")
        fields = rest.split()
        counters[name.strip().decode(errors="surrogateescape")] = (int(fields[0]), int(fields[8]))
    return counters
