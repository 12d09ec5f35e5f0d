"""Socket reads and writes with deadlines, so no client can hold a connection thread for ever.

A socket timeout bounds one ``recv``; a client that sends a byte just before each timeout (a
slowloris) would pass every one. These wrappers give each ``recv`` and ``send`` only the time
left until a deadline for the whole phase: the request line and headers, or the response.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import selectors
import socket
import threading
import time
from typing import Any

# Sent by the accepting thread itself when every connection thread is taken: no thread, no wait.
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 34\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n"
    b"Too many connections, retry later\n"
)
# What Go answers on an HTTPS port to a plain-HTTP client, so people see their mistake.
HTTP_ON_HTTPS = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)
TLS_HANDSHAKE_RECORD = 0x16


class Deadline:
    def __init__(self) -> None:
        self.at = float("inf")

    def arm(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class DeadlineReader(io.RawIOBase):
    """The raw stream under the handler's buffered ``rfile``."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(self._deadline.left())
        return self._sock.recv_into(buffer)


class DeadlineWriter(io.BufferedIOBase):
    """The handler's ``wfile``: each write must be taken by the client within ``seconds``."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._seconds = seconds

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        deadline = Deadline()
        deadline.arm(self._seconds)
        view = memoryview(data).cast("B")
        sent = 0
        while sent < len(view):
            self._sock.settimeout(deadline.left())
            sent += self._sock.send(view[sent:])
        return sent


class HeaderBudget(io.BufferedIOBase):
    """Stands in for ``rfile`` while headers are parsed: the whole header block gets ``budget``
    bytes, where http.client alone allows 100 lines of 64 KiB each."""

    def __init__(self, stream: io.BufferedIOBase, budget: int) -> None:
        self._stream = stream
        self._left = budget

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        line = self._stream.readline(limit)
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong("header block")
        return line


class Refuser:
    """Answers connections there is no thread for, and closes them, off the accepting thread.

    Closing a socket with unread input makes the kernel send a reset, which can destroy the
    answer before the client reads it. So the answer goes out at once, then one thread for all
    refused connections reads and drops what the client sends until it closes, or ``linger``
    seconds pass, or more than ``backlog`` are waiting (then the oldest are closed as they are).
    """

    def __init__(self, linger: float = 1.0, backlog: int = 256) -> None:
        self._linger = linger
        self._backlog = backlog
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, float] = {}  # socket -> when to give up
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="http-refuser", daemon=True)
        self._thread.start()

    def refuse(self, sock: socket.socket, answer: bytes) -> None:
        try:
            sock.setblocking(False)
            if answer:
                sock.send(answer)  # a few hundred bytes: the send buffer takes them at once
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        with self._lock:
            while len(self._waiting) >= self._backlog:
                self._drop(next(iter(self._waiting)))
            self._waiting[sock] = time.monotonic() + self._linger
            self._selector.register(sock, selectors.EVENT_READ)
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway; closed: shut down
            self._wake_w.send(b"\0")

    def close(self) -> None:
        with self._lock:
            for sock in list(self._waiting):
                self._drop(sock)
        self._wake_w.close()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._selector.close()
            self._wake_r.close()

    def _serve(self) -> None:
        while True:
            with self._lock:
                soonest = min(self._waiting.values(), default=None)
            timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                return  # closed
            with self._lock:
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        try:
                            if not sock.recv(4096):
                                return  # close() ended the write side
                        except BlockingIOError:
                            pass
                        continue
                    try:
                        if sock.recv(65536):
                            continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    self._drop(sock)
                now = time.monotonic()
                for sock in [s for s, until in self._waiting.items() if until <= now]:
                    self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        # Called with the lock held.
        self._waiting.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
