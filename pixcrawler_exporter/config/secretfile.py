"""Reading a secret from a file (a mounted Kubernetes or Docker secret), bounded.

A secret file is read at start and on every reload, under the reload lock. A path that names a
FIFO would block the open for ever, ``/dev/zero`` never ends, and a file on a hung network
filesystem never answers: each would hold start-up before the server listens, or every later
reload. So only a regular file is read, at most :data:`MAX_BYTES` of it, within
:data:`READ_SECONDS`; anything else is a :class:`ConfigError` that names the setting and never
the content.
"""

from __future__ import annotations

import os
import stat
import threading

from pixcrawler_exporter.config.parsers import ConfigError

# A password, a client secret or a token is far smaller; a 14 MB file is a mistake, and sending
# it with every database connection would push every read past its deadline.
MAX_BYTES = 64 * 1024
READ_SECONDS = 2.0


def read_secret(path: str, setting: str, source: str) -> str:
    """The secret in ``path``, without the newline a mounted secret often ends in.

    ``setting`` and ``source`` (its dotted key and where its value came from) head the message
    of a :class:`ConfigError` when the file cannot be used.
    """
    where = f"{setting} ({source})"
    result: list[str | Exception] = []
    # open() and read() cannot be given a timeout: a hung NFS server or an odd device would hold
    # the caller, so they run on a thread that is abandoned, not waited for, past the deadline.
    reader = threading.Thread(target=_read, args=(path, result), name="secret-file", daemon=True)
    try:
        reader.start()
    except RuntimeError as exc:  # no thread to be had (a pids limit): refused, not fatal
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    reader.join(READ_SECONDS)
    if not result:
        raise ConfigError(f"{where}: {path} could not be read within {READ_SECONDS:g}s")
    found = result[0]
    if isinstance(found, Exception):
        raise ConfigError(f"{where}: cannot read {path}: {found}")
    value = found.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


def _read(path: str, result: list[str | Exception]) -> None:
    try:
        result.append(_read_regular(path))
    except Exception as exc:  # noqa: BLE001 - handed back to the caller as its message
        result.append(exc)


class _RefusedError(Exception):
    pass


def _read_regular(path: str) -> str:
    try:
        # O_NONBLOCK: opening a FIFO that no one writes to returns at once instead of waiting
        # for a writer; it is then refused for what it is.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _RefusedError(exc.strerror or type(exc).__name__) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _RefusedError(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size > MAX_BYTES:
            raise _RefusedError(
                f"{info.st_size} bytes, more than the {MAX_BYTES} bytes a secret may have"
            )
        data = b""
        while len(data) <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_BYTES:  # it grew since fstat
            raise _RefusedError(f"more than the {MAX_BYTES} bytes a secret may have")
    except OSError as exc:
        raise _RefusedError(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _RefusedError("not UTF-8 text") from None


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
