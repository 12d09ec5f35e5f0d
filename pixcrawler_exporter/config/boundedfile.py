"""Reading a file the exporter is given, bounded: a secret, the config file, the web config file,
a certificate or key.

Files are read at start and on every reload, under the reload lock. A path that names a FIFO
would block the open for ever, ``/dev/zero`` never ends, and a file on a hung network filesystem
never answers: each would hold start-up before the server listens, or every later reload. So only
a regular file is read, at most a size cap of it, within :data:`READ_SECONDS`; anything else is an
:class:`UnreadableError` whose message says why, never what the file holds.
"""

from __future__ import annotations

import os
import stat
import threading

READ_SECONDS = 2.0


class UnreadableError(Exception):
    """Why a file cannot be used, as a phrase that follows "cannot read PATH: "."""

    def __init__(self, reason: str, missing: bool = False) -> None:
        super().__init__(reason)
        self.missing = missing  # there is no such file


def read_bounded(path: str, max_bytes: int, seconds: float = READ_SECONDS) -> bytes:
    """The bytes of the regular file ``path``: at most ``max_bytes``, within ``seconds``."""
    result: list[bytes | UnreadableError] = []
    # open() and read() cannot be given a timeout: a hung NFS server or an odd device would hold
    # the caller, so they run on a thread that is abandoned, not waited for, past the deadline.
    reader = threading.Thread(
        target=_read, args=(path, max_bytes, result), name="file-read", daemon=True
    )
    try:
        reader.start()
    except RuntimeError as exc:  # no thread to be had (a pids limit): refused, not fatal
        raise UnreadableError(f"no thread to read it on ({exc})") from None
    reader.join(seconds)
    if not result:
        raise UnreadableError(f"no answer within {seconds:g}s")
    found = result[0]
    if isinstance(found, UnreadableError):
        raise found
    return found


def _read(path: str, max_bytes: int, result: list[bytes | UnreadableError]) -> None:
    try:
        result.append(_read_regular(path, max_bytes))
    except UnreadableError as exc:
        result.append(exc)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller as its message
        result.append(UnreadableError(str(exc)))


def _read_regular(path: str, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO that no one writes to returns at once instead of waiting
        # for a writer; it is then refused for what it is.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise UnreadableError(exc.strerror or "no such file", missing=True) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise UnreadableError(getattr(exc, "strerror", None) or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableError(f"not a regular file ({_kind(info.st_mode)})")
        too_big = f"more than the {max_bytes} bytes such a file may have"
        if info.st_size > max_bytes:
            raise UnreadableError(f"{info.st_size} bytes, {too_big}")
        data = b""
        while len(data) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > max_bytes:  # it grew since fstat
            raise UnreadableError(too_big)
        return data
    except OSError as exc:
        raise UnreadableError(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"
