"""Follows temp trees by inotify, so their counts are fresh within a fraction of a second.

The counts are kept per directory (bytes and number of the matching files directly in it), not
per file: an event only says which directory changed, and that directory is listed again a
moment later, with the other directories of the same burst. Listing a directory again also
finds the subdirectories that appeared (watched, then listed, so no file slips in between) and
those that went (their counts dropped). Memory follows the number of directories, and the counts
are those a scan would give after the listing.

A tree falls back to scanning alone when inotify cannot serve it: the filesystem does not report
changes made elsewhere (network shares, FUSE), or the kernel refuses more watches. A queue that
overflowed has lost events: every tree in event mode is then listed again in full. The same full
listing reconciles every tree at each scan interval.

A configured directory that is deleted or moved away is unknown at once (its watch reports
DELETE_SELF or MOVE_SELF): everything below it is forgotten, as if it had never been opened. One
that cannot be opened is tried again by path (:meth:`Watcher.reopen`) twice a second while
events are followed, so a directory made again is followed within that, not at the next scan. A
retry rather than a watch on the parent directory: the parent may be gone too, and a parent such
as /tmp would wake the exporter for every file anyone writes there; an open() that fails twice a
second per missing directory costs nothing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from inotify_simple import Event, INotify, flags

from pixcrawler_exporter.collectors.temp_storage.scan import (
    GONE,
    OPEN_DIR,
    OPEN_SUBDIR,
    Matcher,
    describe_error,
    list_directory,
    too_deep_error,
)

log = logging.getLogger(__name__)

MASK = (
    flags.CREATE
    | flags.DELETE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CLOSE_WRITE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
    | flags.EXCL_UNLINK
)
# The configured directory itself may be a symlink (/tmp often is): its watch follows it, as its
# opening does. Below it, a symlink is never followed.
ROOT_MASK = MASK & ~flags.DONT_FOLLOW


class WatchesExhaustedError(Exception):
    """The kernel gives no more watches (fs.inotify.max_user_watches): (root, path)."""


@dataclass
class _Dir:
    wd: int
    ino: int  # a directory replaced at the same path is another one: its watch is not ours
    bytes: int = 0
    files: int = 0
    oldest: float = math.inf  # mtime of its oldest matching file
    children: set[str] = field(default_factory=set)


class Tree:
    """One configured directory followed by events."""

    def __init__(self, inotify: INotify, root: str, match: Matcher, recursive: bool) -> None:
        self.inotify = inotify
        self.root = root
        self.match = match
        self.recursive = recursive
        self.dirs: dict[str, _Dir] = {}
        self.by_wd: dict[int, str] = {}
        self.errors: dict[str, str] = {}
        self.bytes = 0
        self.files = 0
        self._dev: int | None = None

    @property
    def watches(self) -> int:
        return len(self.by_wd)

    @property
    def opened(self) -> bool:
        """Whether the configured directory itself is being followed (it exists and opens)."""
        return self.root in self.dirs

    @property
    def oldest_mtime(self) -> float | None:
        oldest = min((d.oldest for d in self.dirs.values()), default=math.inf)
        return None if oldest == math.inf else oldest

    def rebuild(self) -> None:
        """List the whole tree again, keeping the watches that still fit (the full scan)."""
        old = self.dirs
        self.dirs, self.errors, self.bytes, self.files = {}, {}, 0, 0
        self._dev = None
        self.by_wd = {}
        self.relist(self.root)
        for path, d in old.items():
            if d.wd not in self.by_wd:
                self._forget_watch(d.wd, path)

    def relist(self, path: str) -> None:
        """List ``path`` again, and every subdirectory that appeared below it."""
        pending = [path]
        while pending:
            self._list(pending.pop(), pending)

    def drop(self, path: str) -> None:
        """Forget a directory and everything below it."""
        stack = [path]
        while stack:
            p = stack.pop()
            d = self.dirs.pop(p, None)
            self.errors.pop(p, None)
            if d is None:
                continue
            self.bytes -= d.bytes
            self.files -= d.files
            if self.by_wd.get(d.wd) == p:
                self._forget_watch(d.wd, p)
            stack.extend(os.path.join(p, c) for c in d.children)

    def close(self) -> None:
        for wd, path in list(self.by_wd.items()):
            self._forget_watch(wd, path)
        self.dirs.clear()

    def _list(self, path: str, pending: list[str]) -> None:
        is_root = path == self.root
        try:
            fd = os.open(path, OPEN_DIR if is_root else OPEN_SUBDIR)
        except OSError as exc:
            self._failed(path, exc, is_root)
            return
        try:
            st = os.fstat(fd)
            if is_root:
                self._dev = st.st_dev
            elif st.st_dev != self._dev:
                self.drop(path)  # a mount point below the tree is another filesystem's
                return
            d = self.dirs.get(path)
            if d is not None and d.ino != st.st_ino:
                self.drop(path)  # replaced (moved away, another made in its place): start afresh
                d = None
            if d is None:
                d = self.dirs[path] = _Dir(self._watch(path, is_root), st.st_ino)
            subdirs: list[tuple[str, int]] = []
            size, count, too_deep, oldest = list_directory(
                fd, path, self.match, st.st_dev, subdirs if self.recursive else None
            )
        except OSError as exc:
            self._failed(path, exc, is_root)
            return
        finally:
            os.close(fd)
        if too_deep:
            self.errors[path] = too_deep_error(path, too_deep)
        else:
            self.errors.pop(path, None)
        self.bytes += size - d.bytes
        self.files += count - d.files
        d.bytes, d.files, d.oldest = size, count, oldest
        names = {os.path.basename(p) for p, _ in subdirs}
        for gone in d.children - names:
            self.drop(os.path.join(path, gone))
        for new in names - d.children:
            pending.append(os.path.join(path, new))
        d.children = names

    def _watch(self, path: str, is_root: bool) -> int:
        try:
            wd = int(self.inotify.add_watch(path, ROOT_MASK if is_root else MASK))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WatchesExhaustedError(self.root, path) from exc
            raise
        self.by_wd[wd] = path
        return wd

    def _failed(self, path: str, exc: OSError, is_root: bool) -> None:
        if is_root:
            # Deleted, moved away or no longer readable: its usage is unknown, not what was
            # counted before nor 0, as a scan that cannot open it says (``opened`` is False).
            self.drop(path)
            self.errors[path] = describe_error(path, exc)
            return
        if exc.errno in GONE:
            self.drop(path)  # removed or replaced since its parent was listed: nothing to count
            return
        # Unreadable: left out of the counts and named, as a scan does.
        d = self.dirs.get(path)
        if d is not None:
            self.bytes -= d.bytes
            self.files -= d.files
            d.bytes = d.files = 0
        self.errors[path] = describe_error(path, exc)

    def _forget_watch(self, wd: int, path: str) -> None:
        if self.by_wd.get(wd) == path:
            del self.by_wd[wd]
        with contextlib.suppress(OSError):  # the kernel dropped it already: the directory is gone
            self.inotify.rm_watch(wd)


class Watcher:
    """One inotify instance for every configured directory that is followed by events.

    A tree the kernel refuses watches for is handed back to be scanned instead, and no longer
    followed.
    """

    def __init__(self, roots: Sequence[str], match: Matcher, recursive: bool) -> None:
        self.inotify = INotify(nonblocking=True)
        self.trees = {root: Tree(self.inotify, root, match, recursive) for root in roots}
        self._owner: dict[int, Tree] = {}

    @property
    def watches(self) -> int:
        return sum(t.watches for t in self.trees.values())

    def reopen(self) -> bool:
        """Try again to open the configured directories that could not be: whether any of them
        changed (opened now, or failing for another reason)."""
        changed = False
        for tree in [t for t in self.trees.values() if not t.opened]:
            before = tree.errors.get(tree.root)
            kept = self._try(functools.partial(tree.relist, tree.root))
            changed |= not kept or tree.opened or tree.errors.get(tree.root) != before
        if changed:
            self._index()
        return changed

    def rebuild(self) -> list[str]:
        """List every tree again in full; the roots that fell back to scanning."""
        fallen = [tree.root for tree in list(self.trees.values()) if not self._try(tree.rebuild)]
        self._index()
        return fallen

    def read(self, timeout: float) -> list[Event]:
        """The events that arrive within ``timeout`` seconds (none: an empty list)."""
        return list(self.inotify.read(timeout=max(0, int(timeout * 1000))))

    def handle(self, events: Iterable[Event]) -> tuple[bool, list[str]]:
        """Apply a batch of events: whether the queue overflowed (events were lost), and the
        roots that fell back to scanning."""
        dirty: dict[Tree, set[str]] = {}
        overflow = False
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                overflow = True
                continue
            tree = self._owner.get(event.wd)
            path = tree.by_wd.get(event.wd) if tree is not None else None
            if tree is None or path is None:
                continue  # a watch already forgotten
            if event.mask & flags.IGNORED:
                # The kernel removed the watch, so the directory is gone: its parent's listing
                # (or the root's own) says what that does to the counts.
                del tree.by_wd[event.wd]
                path = os.path.dirname(path) if path != tree.root else path
            dirty.setdefault(tree, set()).add(path)
        fallen = []
        for tree, paths in dirty.items():
            # Parents before children: a directory its parent's listing dropped is not listed.
            def relist(tree: Tree = tree, paths: set[str] = paths) -> None:
                for path in sorted(paths, key=len):
                    if path in tree.dirs or path == tree.root:
                        tree.relist(path)

            if not self._try(relist):
                fallen.append(tree.root)
        self._index()
        return overflow, fallen

    def close(self) -> None:
        for tree in self.trees.values():
            tree.close()
        self.inotify.close()

    def _try(self, work: Callable[[], None]) -> bool:
        try:
            work()
        except WatchesExhaustedError as exc:
            root, path = exc.args
            log.warning(
                "no more inotify watches: scanning the directory instead",
                extra={"directory": root, "error": f"{path}: {os.strerror(errno.ENOSPC)}"},
            )
            self.trees.pop(root).close()
            return False
        return True

    def _index(self) -> None:
        self._owner = {wd: tree for tree in self.trees.values() for wd in tree.by_wd}
