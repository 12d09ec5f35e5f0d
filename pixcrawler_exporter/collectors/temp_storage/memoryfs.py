"""Whether a directory lives in RAM: tmpfs or ramfs, as Docker's ``--tmpfs`` and Kubernetes'
``emptyDir: {medium: Memory}`` mount it. Files there use the container's memory, not disk.

Told from the mount table by the directory's device number, as the inotify and disk code tell a
local filesystem: calling statfs(2) through ctypes would cost the exporter 2.4 MB of memory.
"""

from __future__ import annotations

from pixcrawler_exporter.collectors import procfs

_IN_MEMORY = frozenset({"tmpfs", "ramfs"})


def in_memory(path: str) -> bool | None:
    """True on tmpfs or ramfs, False elsewhere, None when it cannot be told (the path cannot
    be reached, or its device has no line in the mount table)."""
    kind = procfs.filesystem_type(path)
    return None if kind is None else kind in _IN_MEMORY
