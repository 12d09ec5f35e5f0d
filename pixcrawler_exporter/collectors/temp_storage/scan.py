"""Counts the bytes and files of the crawler's temp files below one directory.

A pure function: no logging, no state. It never follows a symlink below the starting directory,
never leaves the starting directory's filesystem, and holds only the directories still to visit,
so a tree of millions of files costs no more memory than one of ten.
"""

from __future__ import annotations

import errno
import fnmatch
import math
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# A subdirectory swapped for a symlink between its parent's listing and its opening is refused
# (ELOOP); one swapped for a file, too (ENOTDIR). Both mean the listed directory is gone.
OPEN_SUBDIR = OPEN_DIR | os.O_NOFOLLOW
GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
# Linux's PATH_MAX, less room for the terminating NUL. A directory whose path is longer cannot
# be opened by path; it and what is below it are counted as not counted, in one short error.
_PATH_MAX = 4095

Matcher = Callable[[str], object]


@dataclass(frozen=True)
class ScanResult:
    bytes: int
    files: int
    errors: tuple[str, ...]  # one "<directory>: <reason>" per directory that could not be read
    # False when the starting directory itself could not be opened: nothing was counted, so the
    # zeros above mean "unknown", not "empty".
    opened: bool = True
    # Modification time of the oldest matching file (a crashed worker's chunk left behind); None
    # without any. Left out of equality: it says when, not what, the tree holds.
    oldest_mtime: float | None = field(default=None, compare=False)


def matcher(patterns: Sequence[str]) -> Matcher:
    """One case-insensitive regex for all patterns: a single C call per file name."""
    regex = "|".join(fnmatch.translate(p) for p in patterns) or r"(?!)"
    return re.compile(regex, re.IGNORECASE).match


def scan(directory: str, patterns: Sequence[str], recursive: bool) -> ScanResult:
    """Apparent size (as ``du -sb`` counts it) and number of the files matching ``patterns``.

    Files and directories removed during the walk are left out silently: temp files come and
    go all the time. A directory that cannot be read is left out and named in ``errors``.
    """
    match = matcher(patterns)
    try:
        # The configured directory itself may be a symlink (/tmp often is): that one is followed.
        fd = os.open(directory, OPEN_DIR)
    except OSError as exc:
        return ScanResult(0, 0, (describe_error(directory, exc),), opened=False)
    root_dev = os.fstat(fd).st_dev

    total = files = too_deep = 0
    oldest = math.inf
    errors: list[str] = []
    # (path, inode) of directories still to visit; never files, so memory follows the number of
    # directories waiting, not of files.
    stack: list[tuple[str, int]] = []
    opened: tuple[int, str] | None = (fd, directory)
    while opened is not None:
        fd, path = opened
        try:
            size, count, deep, first = list_directory(
                fd, path, match, root_dev, stack if recursive else None
            )
            total += size
            files += count
            too_deep += deep
            oldest = min(oldest, first)
        except FileNotFoundError:
            pass  # removed after it was opened: listing a removed directory fails with ENOENT
        except OSError as exc:
            errors.append(describe_error(path, exc))
        finally:
            os.close(fd)
        opened = _open_next(stack, errors)
    if too_deep:
        errors.append(too_deep_error(directory, too_deep))
    return ScanResult(
        total, files, tuple(errors), oldest_mtime=oldest if oldest != math.inf else None
    )


def too_deep_error(directory: str, count: int) -> str:
    return (
        f"{directory}: {count} directories nested beyond PATH_MAX ({_PATH_MAX + 1} "
        "bytes) and everything below them not counted"
    )


def _open_next(stack: list[tuple[str, int]], errors: list[str]) -> tuple[int, str] | None:
    """Open the next directory still to visit; None when there is none left."""
    while stack:
        path, inode = stack.pop()
        try:
            fd = os.open(path, OPEN_SUBDIR)
        except OSError as exc:
            if exc.errno not in GONE:
                errors.append(describe_error(path, exc))
            continue  # else removed or replaced since its parent was listed: nothing to count
        # O_NOFOLLOW guards the last component only; the inode check makes sure a parent
        # swapped for a symlink meanwhile did not lead somewhere else.
        if os.fstat(fd).st_ino == inode:
            return fd, path
        os.close(fd)
    return None


def list_directory(
    fd: int, path: str, match: Matcher, root_dev: int, subdirs: list[tuple[str, int]] | None
) -> tuple[int, int, int, float]:
    """Bytes, number and oldest mtime (inf: none) of the matching files directly in the open
    directory ``fd``, and the number of its subdirectories too deep to open by path; its other
    subdirectories on the same filesystem are appended to ``subdirs`` (None: not wanted)."""
    total = files = too_deep = 0
    oldest = math.inf
    # Listing by descriptor makes entry.stat() an fstatat() relative to it, so the kernel does
    # not resolve the whole path again for every file. The stat calls are most of the walk's
    # time; is_file()/is_dir() answer from the listing's d_type without a system call.
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                if match(entry.name):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    total += st.st_size
                    files += 1
                    if st.st_mtime < oldest:  # not min(): a call per file costs the walk ~10%
                        oldest = st.st_mtime
            elif subdirs is not None and entry.is_dir(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                # A mount point below the directory belongs to another filesystem's owner.
                if st.st_dev != root_dev or not stat.S_ISDIR(st.st_mode):
                    continue
                sub = os.path.join(path, entry.name)
                if len(os.fsencode(sub)) > _PATH_MAX:
                    too_deep += 1
                else:
                    subdirs.append((sub, st.st_ino))
    return total, files, too_deep, oldest


def describe_error(path: str, exc: OSError) -> str:
    return f"{path}: {exc.strerror or exc}"
