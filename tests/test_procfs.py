"""procfs.read_file: kernel files kept open between scrapes, every other file opened anew."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pixcrawler_exporter.collectors import procfs


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real: Callable[..., int] = os.open

    def counting(path: str | Path, *args: int, **kwargs: int) -> int:
        opened.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)
    return opened


def test_a_kernel_file_is_opened_once_and_read_afresh_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(procfs, "_kept", procfs._KeptFiles())
    uptime = Path("/proc/uptime")
    first = procfs.read_file(uptime)
    opened = _counting_opens(monkeypatch)
    time.sleep(0.05)  # uptime moves in hundredths of a second
    again = [procfs.read_file(uptime) for _ in range(10)]
    assert opened == []
    assert again[-1] != first
    assert float(again[-1].split()[0]) > float(first.split()[0])


def test_other_files_are_opened_on_every_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "_kept", procfs._KeptFiles())
    path = tmp_path / "meminfo"
    path.write_bytes(b"MemTotal: 1 kB\n")
    assert procfs.read_file(path) == b"MemTotal: 1 kB\n"
    # Replaced by rename, as an editor or a config map does: a kept descriptor would read the
    # old file for ever.
    (tmp_path / "new").write_bytes(b"MemTotal: 2 kB\n")
    os.replace(tmp_path / "new", path)
    opened = _counting_opens(monkeypatch)
    assert procfs.read_file(path) == b"MemTotal: 2 kB\n"
    assert opened == [str(path)]


def test_a_kept_descriptor_that_fails_is_dropped_and_the_path_opened_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = procfs._KeptFiles()
    monkeypatch.setattr(procfs, "_kept", kept)
    path = Path("/proc/self/status")
    procfs.read_file(path)
    fd = kept._fds[path]
    assert fd is not None
    # What a removed cgroup's files answer (ENODEV); a closed descriptor fails the same way.
    monkeypatch.setattr(os, "pread", _failing(os.pread, fd))
    assert procfs.read_file(path).startswith(b"Name:")
    assert path not in kept._fds
    monkeypatch.undo()
    monkeypatch.setattr(procfs, "_kept", kept)
    assert procfs.read_file(path).startswith(b"Name:")  # kept again
    assert kept._fds[path] is not None


def _failing(real: Callable[[int, int, int], bytes], bad: int) -> Callable[[int, int, int], bytes]:
    def pread(fd: int, size: int, offset: int) -> bytes:
        if fd == bad:
            raise OSError(19, "No such device")
        return real(fd, size, offset)

    return pread


def test_kept_descriptors_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = procfs._KeptFiles(limit=2)
    monkeypatch.setattr(procfs, "_kept", kept)
    # Other files, however many, neither take the places of kernel files nor pile up.
    for i in range(20):
        (tmp_path / str(i)).write_bytes(b"x")
        assert procfs.read_file(tmp_path / str(i)) == b"x"
    for name in ("uptime", "loadavg", "meminfo", "stat"):
        assert procfs.read_file(Path("/proc") / name)
    assert len(kept._fds) == 2
    assert len(kept._other) <= 8
