"""Whether a directory lives in RAM: tmpfs or ramfs, as Docker's ``--tmpfs`` and Kubernetes'
``emptyDir: {medium: Memory}`` mount it. Files there use the container's memory, not disk.

statfs(2)'s f_type names the filesystem the path is on, whatever mount or symlink led there,
which the mount table can only approximate; Python has no statfs, so libc's is called.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

TMPFS_MAGIC = 0x01021994
RAMFS_MAGIC = 0x858458F6
_IN_MEMORY = frozenset({TMPFS_MAGIC, RAMFS_MAGIC})


class _StatFs(ctypes.Structure):
    # f_type comes first on every Linux ABI (a long, __fsword_t); the rest is room for the
    # remainder of struct statfs, whose layout differs between ABIs and is not read.
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 256)]


def _load_statfs() -> ctypes._NamedFuncPointer | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.statfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]
    function.restype = ctypes.c_int
    return function


_statfs = _load_statfs()


def in_memory(path: str) -> bool | None:
    """True on tmpfs or ramfs, False elsewhere, None when it cannot be told (the path cannot
    be reached, or this libc has no statfs)."""
    if _statfs is None:
        return None
    buf = _StatFs()
    if _statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return None
    return (buf.f_type & 0xFFFFFFFF) in _IN_MEMORY
