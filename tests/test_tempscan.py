"""The temp file walker on real trees: exact counts, symlinks, permissions, races, mounts."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pixcrawler_exporter.collectors.temp_storage import scan as tempscan
from pixcrawler_exporter.collectors.temp_storage.scan import ScanResult, scan
from tests.conftest import need

IMAGES = ("*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif")


def write(path: Path, size: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return size


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Images at three depths, plus files no pattern matches."""
    root = tmp_path / "temp"
    write(root / "a.jpg", 1000)
    write(root / "b.png", 2000)
    write(root / "notes.txt", 50_000)
    write(root / "job-1" / "c.webp", 3000)
    write(root / "job-1" / "c.webp.part", 40_000)
    write(root / "job-1" / "chunk-1" / "d.jpeg", 4000)
    write(root / "job-1" / "chunk-1" / "e.gif", 5)
    write(root / "job-1" / "chunk-1" / "jpg", 60_000)  # no dot: *.jpg does not match
    write(root / "job-2" / "empty.jpg", 0)
    (root / "job-3" / "deeper" / "still").mkdir(parents=True)
    return root


def test_counts_exact_bytes_and_files_of_matching_files_only(tree: Path) -> None:
    assert scan(str(tree), IMAGES, recursive=True) == ScanResult(10005, 6, ())


def test_non_recursive_counts_the_top_directory_only(tree: Path) -> None:
    assert scan(str(tree), IMAGES, recursive=False) == ScanResult(3000, 2, ())


def test_patterns_match_case_insensitively(tmp_path: Path) -> None:
    write(tmp_path / "A.JPG", 10)
    write(tmp_path / "b.Png", 20)
    write(tmp_path / "c.jpg", 40)
    write(tmp_path / "d.gif", 80)
    assert scan(str(tmp_path), ("*.jpg", "*.png"), recursive=True) == ScanResult(70, 3, ())
    assert scan(str(tmp_path), ("*.JPG",), recursive=True) == ScanResult(50, 2, ())


def test_pattern_is_matched_against_the_whole_name(tmp_path: Path) -> None:
    write(tmp_path / "img_001.jpg", 1)
    write(tmp_path / "img_002.jpg", 2)
    write(tmp_path / "thumb_001.jpg", 4)
    write(tmp_path / "img_003.jpg.bak", 8)
    assert scan(str(tmp_path), ("img_*.jpg",), recursive=True) == ScanResult(3, 2, ())
    assert scan(str(tmp_path), ("img_00[13].jpg",), recursive=True) == ScanResult(1, 1, ())


def test_directory_named_like_an_image_is_entered_not_counted(tmp_path: Path) -> None:
    write(tmp_path / "album.jpg" / "inside.jpg", 7)
    assert scan(str(tmp_path), IMAGES, recursive=True) == ScanResult(7, 1, ())


def test_special_files_named_like_images_are_not_counted(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    write(tmp_path / "real.jpg", 9)
    assert scan(str(tmp_path), IMAGES, recursive=True) == ScanResult(9, 1, ())


def test_symlink_loop_is_not_followed(tree: Path) -> None:
    (tree / "job-1" / "chunk-1" / "loop").symlink_to("..")
    (tree / "job-1" / "up").symlink_to(tree)
    assert scan(str(tree), IMAGES, recursive=True) == ScanResult(10005, 6, ())


def test_symlinks_out_of_the_tree_are_not_counted(tmp_path: Path, tree: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "big.jpg", 5_000_000)
    write(outside / "dir" / "more.jpg", 6_000_000)
    (tree / "link.jpg").symlink_to(outside / "big.jpg")
    (tree / "job-1" / "linked-dir").symlink_to(outside / "dir")
    (tree / "job-1" / "linked-dir.jpg").symlink_to(outside / "dir")
    (tree / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert scan(str(tree), IMAGES, recursive=True) == ScanResult(10005, 6, ())


def test_a_symlink_as_the_configured_directory_is_followed(tmp_path: Path, tree: Path) -> None:
    (tmp_path / "temp-link").symlink_to(tree)
    assert scan(str(tmp_path / "temp-link"), IMAGES, recursive=True) == ScanResult(10005, 6, ())


def test_missing_directory_is_an_error_not_an_exception(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert scan(str(missing), IMAGES, recursive=True) == ScanResult(
        0, 0, (f"{missing}: No such file or directory",), opened=False
    )


def test_a_file_as_the_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "file.jpg", 5)
    assert scan(str(tmp_path / "file.jpg"), IMAGES, recursive=True) == ScanResult(
        0, 0, (f"{tmp_path / 'file.jpg'}: Not a directory",), opened=False
    )


def test_no_patterns_match_nothing(tree: Path) -> None:
    assert scan(str(tree), (), recursive=True) == ScanResult(0, 0, ())


# --- permissions: root may read anything, so the scan runs as nobody -------------------------


def scan_as_nobody(directory: Path, recursive: bool = True) -> ScanResult:
    """Scan in a forked child that dropped to nobody when the tests run as root.

    Forked rather than executed: the interpreter may live where nobody may not run it.
    """
    if os.geteuid() != 0:
        return scan(str(directory), IMAGES, recursive)
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            result = scan(str(directory), IMAGES, recursive)
            os.write(write_end, json.dumps(dataclasses.asdict(result)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the scan as nobody failed"
    doc = json.loads(data)
    return ScanResult(doc["bytes"], doc["files"], tuple(doc["errors"]))


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path is below a root-only directory)."""
    path = Path(tempfile.mkdtemp(prefix="tempscan-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            sub.chmod(0o755)
    shutil.rmtree(path)


def test_unreadable_directory_is_an_error_naming_it(public_tmp: Path) -> None:
    root = public_tmp / "temp"
    write(root / "a.jpg", 100)
    write(root / "open" / "b.jpg", 200)
    write(root / "locked" / "secret.jpg", 400)
    write(root / "locked" / "inner" / "deep.jpg", 800)
    write(root / "listable" / "c.jpg", 1600)
    for d in (root, root / "open", root / "locked", root / "listable"):
        d.chmod(0o755)
    (root / "locked").chmod(0o000)
    # Names can be listed but not looked up: every stat fails, which is an error too.
    (root / "listable").chmod(0o444)
    result = scan_as_nobody(root)
    assert (result.bytes, result.files) == (300, 2)
    assert sorted(result.errors) == [
        f"{root / 'listable'}: Permission denied",
        f"{root / 'locked'}: Permission denied",
    ]


def test_unreadable_top_directory_is_an_error(public_tmp: Path) -> None:
    write(public_tmp / "temp" / "a.jpg", 100)
    (public_tmp / "temp").chmod(0o000)
    assert scan_as_nobody(public_tmp / "temp") == ScanResult(
        0, 0, (f"{public_tmp / 'temp'}: Permission denied",)
    )


# --- other filesystems --------------------------------------------------------------------------


def test_does_not_cross_into_another_filesystem(tree: Path) -> None:
    need(os.geteuid() == 0, "mounting a tmpfs needs root")
    need_mount = tree / "job-1" / "mnt"
    need_mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(need_mount)],
        capture_output=True,
        check=False,
    )
    need(mounted.returncode == 0, f"mount -t tmpfs failed: {mounted.stderr.decode().strip()}")
    try:
        write(need_mount / "other-fs.jpg", 12345)
        assert scan(str(tree), IMAGES, recursive=True) == ScanResult(10005, 6, ())
        # Scanning the mount itself counts it: the starting directory decides the filesystem.
        assert scan(str(need_mount), IMAGES, recursive=True) == ScanResult(12345, 1, ())
    finally:
        subprocess.run(["umount", str(need_mount)], check=True)


# --- files and directories vanishing during the walk ------------------------------------------


# Another process, so that it deletes while the walker holds the GIL too: half of the time every
# churned file and subdirectory is gone, the other half all are back. The kept ones stay.
CHURN = """
import os, sys
files, dirs = sys.argv[1], sys.argv[2]
names = [f"f-{i:04d}.jpg" for i in range(1000)]
subs = [f"d-{i:03d}" for i in range(200)]
def create():
    for name in names:
        with open(os.path.join(files, name), "wb") as f:
            f.write(b"x" * 10)
    for sub in subs:
        os.mkdir(os.path.join(dirs, sub))
create()
print("ready", flush=True)
while True:
    for name in names:
        os.unlink(os.path.join(files, name))
    for sub in subs:
        os.rmdir(os.path.join(dirs, sub))
    create()
"""


def test_files_and_directories_removed_during_the_walk_are_skipped(tmp_path: Path) -> None:
    """A real race, repeated: the walk is traced to prove it met a file listed and then gone
    before its stat, and a directory listed and then gone before it was opened; neither may
    make an error, escape as an exception, or lose the files that stayed."""
    files, dirs = tmp_path / "temp" / "files", tmp_path / "temp" / "dirs"
    for i in range(500):
        write(files / f"keep-{i:04d}.jpg", 10)
    for i in range(50):
        write(dirs / f"keep-{i:03d}" / "k.jpg", 10)
    churn = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(files), str(dirs)], stdout=subprocess.PIPE
    )
    vanished: set[str] = set()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != tempscan.__file__:
            return None
        if event == "exception" and issubclass(arg[0], FileNotFoundError):
            vanished.add(frame.f_code.co_name)
        return tracer

    results: list[ScanResult] = []
    try:
        assert churn.stdout is not None and churn.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not {"list_directory", "_open_next"} <= vanished:
            sys.settrace(tracer)
            try:
                results.append(scan(str(tmp_path / "temp"), IMAGES, recursive=True))
            finally:
                sys.settrace(None)
    finally:
        churn.kill()
        churn.wait()

    assert all(r.errors == () for r in results), [r.errors for r in results if r.errors]
    kept = 550
    for r in results:
        assert kept <= r.files <= kept + 1000, r
        # A churned file caught between its creation and its write counts with 0 bytes.
        assert kept * 10 <= r.bytes <= r.files * 10, r
    # list_directory: a file gone before its stat; _open_next: a directory gone before it was
    # opened.
    assert {"list_directory", "_open_next"} <= vanished, (vanished, len(results))


# --- memory -------------------------------------------------------------------------------------


def peak_allocated(directory: Path) -> int:
    tracemalloc.start()
    try:
        scan(str(directory), IMAGES, recursive=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_files(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    for i in range(20):
        write(small / f"{i}.jpg", 1)
    for i in range(1000):
        write(large / f"{i}.jpg", 1)
    assert scan(str(large), IMAGES, recursive=True) == ScanResult(1000, 1000, ())
    peak_small, peak_large = peak_allocated(small), peak_allocated(large)
    # Fifty times the files in one directory: the same few live entries at a time, where a
    # list of them would take some 100 bytes a file.
    assert peak_large < peak_small + 4096, (peak_small, peak_large)
