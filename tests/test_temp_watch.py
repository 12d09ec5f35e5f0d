"""Temp storage followed by inotify: fresh without scans, exact, and scanning where it cannot be."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from inotify_simple import Event, INotify, flags

from pixcrawler_exporter.collectors import procfs
from pixcrawler_exporter.collectors.temp_storage import watch
from pixcrawler_exporter.collectors.temp_storage.collector import TempStorageCollector
from pixcrawler_exporter.collectors.temp_storage.reading import DirectoryUsage
from pixcrawler_exporter.collectors.temp_storage.scan import scan
from tests.conftest import Exporter, sample
from tests.helpers.temp import IMAGES, wait_for, write

Make = Callable[..., TempStorageCollector]


@pytest.fixture
def watched() -> Iterator[Make]:
    """Collectors that follow events; the next full scan is an hour away."""
    made: list[TempStorageCollector] = []

    def make(*dirs: Path, recursive: bool = True) -> TempStorageCollector:
        collector = TempStorageCollector(
            [str(d) for d in dirs], IMAGES, recursive, 3600, watch=True
        )
        made.append(collector)
        collector.start()
        collector.read()  # the first scan
        return collector

    yield make
    for collector in made:
        collector.close()


def usage(collector: TempStorageCollector, directory: Path) -> DirectoryUsage:
    return collector.read().directories[str(directory)]


def settles_at(collector: TempStorageCollector, directory: Path) -> None:
    """The collector's figures reach what a full scan counts now, without a scan of its own."""
    result = scan(str(directory), IMAGES, collector.recursive)
    expected = DirectoryUsage(result.bytes, result.files)
    wait_for(lambda: usage(collector, directory) == expected, timeout=3)
    assert collector.scans == 1


def test_created_files_and_directories_count_without_a_scan(watched: Make, tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", 100)
    collector = watched(tmp_path)
    assert usage(collector, tmp_path) == DirectoryUsage(100, 1)
    reading = collector.read()
    assert reading.modes == {str(tmp_path): "events"}
    assert reading.watches == 1

    write(tmp_path / "b.png", 20)
    write(tmp_path / "job-1" / "chunk-1" / "c.jpg", 3)  # new directories, a file inside at once
    write(tmp_path / "job-1" / "notes.txt", 999)  # not a temp file
    settles_at(collector, tmp_path)
    assert usage(collector, tmp_path) == DirectoryUsage(123, 3)
    assert collector.read().watches == 3


def test_rewritten_deleted_and_removed_trees_count_without_a_scan(
    watched: Make, tmp_path: Path
) -> None:
    for i in range(5):
        write(tmp_path / "job" / f"chunk-{i}" / f"{i}.jpg", 1000 + i)
    write(tmp_path / "keep.jpg", 7)
    collector = watched(tmp_path)
    assert usage(collector, tmp_path).files == 6

    write(tmp_path / "keep.jpg", 70)  # grown in place: close after write
    (tmp_path / "job" / "chunk-0" / "0.jpg").unlink()
    shutil.rmtree(tmp_path / "job" / "chunk-1")
    settles_at(collector, tmp_path)
    assert usage(collector, tmp_path) == DirectoryUsage(70 + 1002 + 1003 + 1004, 4)
    assert collector.read().watches == 1 + 1 + 4  # root, job, chunk-0, chunk-2..4

    shutil.rmtree(tmp_path / "job")
    settles_at(collector, tmp_path)
    assert usage(collector, tmp_path) == DirectoryUsage(70, 1)
    assert collector.read().watches == 1


def test_renamed_files_and_directories_count_where_they_went(watched: Make, tmp_path: Path) -> None:
    inside, outside = tmp_path / "temp", tmp_path / "elsewhere"
    write(inside / "a" / "x.jpg", 10)
    write(inside / "b" / "y.part", 20)
    write(outside / "z" / "w.jpg", 40)
    collector = watched(inside)

    (inside / "b" / "y.part").rename(inside / "b" / "y.jpg")  # now a temp file
    (inside / "a").rename(inside / "b" / "a")  # a tree moved within
    (outside / "z").rename(inside / "z")  # a tree moved in
    settles_at(collector, inside)
    assert usage(collector, inside) == DirectoryUsage(70, 3)

    (inside / "b").rename(outside / "b")  # a tree moved out, with the one moved into it
    settles_at(collector, inside)
    assert usage(collector, inside) == DirectoryUsage(40, 1)
    assert collector.read().watches == 2


def test_non_recursive_follows_the_top_directory_only(watched: Make, tmp_path: Path) -> None:
    collector = watched(tmp_path, recursive=False)
    write(tmp_path / "a.jpg", 5)
    write(tmp_path / "sub" / "b.jpg", 6)
    settles_at(collector, tmp_path)
    assert usage(collector, tmp_path) == DirectoryUsage(5, 1)
    assert collector.read().watches == 1


def test_a_lost_event_queue_is_answered_by_listing_everything(
    watched: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = watched(tmp_path)
    # Events are dropped on the floor, then the kernel reports the overflow.
    real_read = watch.Watcher.read
    dropping = True

    def read(self: watch.Watcher, timeout: float) -> list[Event]:
        events = real_read(self, timeout)
        if dropping and events:
            return [Event(-1, flags.Q_OVERFLOW, 0, "")]
        return events

    monkeypatch.setattr(watch.Watcher, "read", read)
    write(tmp_path / "sub" / "lost.jpg", 321)
    settles_at(collector, tmp_path)
    assert usage(collector, tmp_path) == DirectoryUsage(321, 1)
    dropping = False
    write(tmp_path / "sub" / "seen.jpg", 1)
    settles_at(collector, tmp_path)
    assert collector.read().modes == {str(tmp_path): "events"}


def test_no_watches_left_falls_back_to_scanning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "small" / "a.jpg", 1)
    for i in range(3):
        write(tmp_path / "big" / f"d{i}" / "b.jpg", 10)
    real_add = INotify.add_watch
    budget = [2]

    def add_watch(self: INotify, path: str, mask: int) -> int:
        if str(path).startswith(str(tmp_path / "big")):
            if budget[0] == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            budget[0] -= 1
        return int(real_add(self, path, mask))

    monkeypatch.setattr(INotify, "add_watch", add_watch)
    collector = TempStorageCollector(
        [str(tmp_path / "small"), str(tmp_path / "big")], IMAGES, True, 0.3, watch=True
    )
    try:
        collector.start()
        reading = collector.read()
        assert reading.modes == {str(tmp_path / "small"): "events", str(tmp_path / "big"): "scan"}
        assert reading.directories[str(tmp_path / "big")] == DirectoryUsage(30, 3)
        assert reading.watches == 1  # the big tree's watches were given back
        assert any("no more inotify watches" in r.getMessage() for r in caplog.records)
        write(tmp_path / "big" / "d0" / "c.jpg", 5)  # counted by the next scan
        wait_for(lambda: usage(collector, tmp_path / "big") == DirectoryUsage(35, 4))
    finally:
        collector.close()


def test_filesystems_that_do_not_report_every_change_are_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = os.stat(tmp_path).st_dev
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"36 35 {os.major(dev)}:{os.minor(dev)} / /mnt rw,relatime shared:1 - nfs4 srv:/x rw\n"
    )
    assert not procfs.is_local(str(tmp_path), mountinfo)
    mountinfo.write_text(
        f"36 35 {os.major(dev)}:{os.minor(dev)} / /mnt rw,relatime - ext4 /dev/vda1 rw\n"
    )
    assert procfs.is_local(str(tmp_path), mountinfo)
    assert not procfs.is_local(str(tmp_path / "missing"), mountinfo)

    monkeypatch.setattr(procfs, "is_local", lambda directory: False)
    collector = TempStorageCollector([str(tmp_path)], IMAGES, True, 3600, watch=True)
    try:
        collector.start()
        reading = collector.read()
        assert reading.modes == {str(tmp_path): "scan"}
        assert reading.watches == 0
    finally:
        collector.close()


def test_close_releases_the_inotify_instance(watched: Make, tmp_path: Path) -> None:
    def inotify_fds() -> int:
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(FileNotFoundError):  # the one listdir itself held
                found += "inotify" in os.readlink(f"/proc/self/fd/{fd}")
        return found

    before = inotify_fds()
    collector = watched(tmp_path)
    assert inotify_fds() == before + 1
    collector.close()
    wait_for(lambda: inotify_fds() == before)


def test_oldest_file_age_follows_events(watched: Make, tmp_path: Path) -> None:
    old = tmp_path / "job-1" / "chunk-1" / "left-behind.jpg"
    write(old, 10)
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    write(tmp_path / "fresh.jpg", 10)
    collector = watched(tmp_path)
    assert collector.read().oldest_file_age[str(tmp_path)] >= 3600

    old.unlink()  # the crashed worker's chunk is cleaned up: only the fresh file is left
    wait_for(lambda: collector.read().oldest_file_age[str(tmp_path)] < 600, timeout=3)
    assert collector.scans == 1  # told by events, not by another scan


def _temp_figures(
    exp: Exporter, directory: Path
) -> tuple[float | None, float | None, float | None]:
    """bytes, error and the collector's success, scraped over HTTP."""
    samples = exp.scrape()
    return (
        sample(samples, "pixcrawler_temp_storage_bytes", directory=str(directory)),
        sample(samples, "pixcrawler_temp_storage_error", directory=str(directory)),
        sample(samples, "pixcrawler_exporter_collector_success", collector="temp_storage"),
    )


def _scraped_until(
    exp: Exporter, directory: Path, want: tuple[float | None, float | None, float | None]
) -> float:
    """Seconds until a scrape shows ``want`` (at most 3: the next scan is an hour away)."""
    started = time.monotonic()
    while (got := _temp_figures(exp, directory)) != want:
        assert time.monotonic() - started < 3, f"{got} != {want}"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["deleted", "moved away"])
def test_a_configured_directory_that_goes_is_unknown_at_once_and_followed_when_back(
    tmp_path: Path, exporter_factory: Callable[..., Exporter], how: str
) -> None:
    root, aside = tmp_path / "crawler-temp", tmp_path / "aside"
    write(root / "job" / "a.jpg", 1000)
    exp = exporter_factory(
        env={"PIXCRAWLER_TEMP_DIRS": str(root), "PIXCRAWLER_TEMP_SCAN_INTERVAL_SECONDS": "3600"}
    )
    assert _temp_figures(exp, root) == (1000, 0, 1)
    assert sample(exp.scrape(), "pixcrawler_temp_storage_mode", directory=str(root), mode="events")

    if how == "deleted":
        shutil.rmtree(root)
    else:
        root.rename(aside)
    # Unknown, not the 1000 bytes counted before nor an empty directory: the collector fails.
    _scraped_until(exp, root, (None, 1, 0))
    if how == "moved away":
        write(aside / "job" / "b.jpg", 5)  # no longer the configured directory: not counted
        time.sleep(0.3)
        assert _temp_figures(exp, root) == (None, 1, 0)

    write(root / "c.jpg", 77)  # made again (a cleanup job's rm -rf, then the crawler's mkdir)
    _scraped_until(exp, root, (77, 0, 1))
    write(root / "job" / "d.jpg", 3)  # and followed by events again, below it too
    _scraped_until(exp, root, (80, 0, 1))
    assert sample(exp.scrape(), "pixcrawler_temp_storage_scan_errors_total") == 0  # no new scan


def test_a_symlink_as_the_configured_directory_is_followed_by_events(
    watched: Make, tmp_path: Path
) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    write(real / "a.jpg", 4)
    link.symlink_to(real)
    collector = watched(link)
    reading = collector.read()
    assert reading.unreadable == {}
    assert reading.modes == {str(link): "events"}
    assert usage(collector, link) == DirectoryUsage(4, 1)
    write(real / "sub" / "b.jpg", 6)
    settles_at(collector, link)
    assert usage(collector, link) == DirectoryUsage(10, 2)


def test_a_directory_replaced_at_once_is_followed_not_the_one_moved_away(
    watched: Make, tmp_path: Path
) -> None:
    root, aside = tmp_path / "temp", tmp_path / "aside"
    write(root / "job" / "a.jpg", 1)
    collector = watched(root)
    root.rename(aside)
    write(root / "job" / "b.jpg", 20)  # a new tree in its place before the events are read
    settles_at(collector, root)
    write(aside / "job" / "c.jpg", 300)  # the old tree, no longer configured
    write(root / "job" / "d.jpg", 4000)  # the new one, followed by events
    settles_at(collector, root)
    assert usage(collector, root) == DirectoryUsage(4020, 2)
    assert collector.read().watches == 2
