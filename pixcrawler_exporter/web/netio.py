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
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
# A request line longer than this is not a liveness probe's.
MAX_OVERFLOW_LINE = 8192
# How long a connection closed with input unread is drained, at most.
LINGER_SECONDS = 2.0


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


def drain(sock: socket.socket, seconds: float, budget: int = 1 << 20) -> None:
    """End our side, then read and drop what the client still sends until it closes, for at
    most ``seconds`` and ``budget`` bytes: closing with unread input makes the kernel send a
    reset, which can destroy the answer before the client has read it."""
    deadline = Deadline()
    deadline.arm(seconds)
    with contextlib.suppress(OSError):  # TimeoutError included: then the reset is its doing
        sock.shutdown(socket.SHUT_WR)
        while budget > 0:
            sock.settimeout(deadline.left())
            chunk = sock.recv(65536)
            if not chunk:
                return
            budget -= len(chunk)


@dataclass(eq=False)
class _Waiting:
    sock: socket.socket
    until: float
    line: bytearray = field(default_factory=bytearray)
    answered: bool = False
    handshaking: bool = False


class Overflow:
    """Connections there is no thread for, all served by one thread that never blocks.

    Each gets ``linger`` seconds in all. Its request line is read (after a TLS handshake, made
    without blocking as well) and ``answer`` turns it into the bytes to send: the liveness
    route answers as usual, so a probe passes while every thread is taken, and anything else
    is a 503. Then what the client still sends is read and dropped until it closes (see
    ``drain``). Beyond ``backlog`` waiting connections the oldest are closed as they are.
    """

    def __init__(
        self,
        answer: Callable[[bytes], bytes],
        tls: Callable[[], ssl.SSLContext] | None = None,
        linger: float = LINGER_SECONDS,
        backlog: int = 256,
    ) -> None:
        self._answer = answer
        self._tls = tls
        self._linger = linger
        self._backlog = backlog
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiting] = {}  # by file descriptor: TLS replaces the object
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="http-overflow", daemon=True)
        self._thread.start()

    def take(self, sock: socket.socket) -> None:
        """A new connection, nothing read from it yet."""
        self._add(sock, answered=False)

    def refuse(self, sock: socket.socket, answer: bytes) -> None:
        """Send ``answer`` at once (a few hundred bytes: the send buffer takes them), then drain."""
        try:
            sock.setblocking(False)
            sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        self._add(sock, answered=True)

    def close(self) -> None:
        with self._lock:
            for fd in list(self._waiting):
                self._drop(fd)
        self._wake_w.close()

    def _add(self, sock: socket.socket, answered: bool) -> None:
        try:
            sock.setblocking(False)
            fd = sock.fileno()
        except OSError:
            sock.close()
            return
        with self._lock:
            while len(self._waiting) >= self._backlog:
                self._drop(next(iter(self._waiting)))
            self._waiting[fd] = _Waiting(sock, time.monotonic() + self._linger, answered=answered)
            self._selector.register(fd, selectors.EVENT_READ)
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway; closed: shut down
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._selector.close()
            self._wake_r.close()

    def _serve(self) -> None:
        while True:
            with self._lock:
                soonest = min((w.until for w in self._waiting.values()), default=None)
            timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                return  # closed
            with self._lock:
                for key, _ in events:
                    if key.fileobj is self._wake_r:
                        try:
                            if not self._wake_r.recv(4096):
                                return  # close() ended the write side
                        except BlockingIOError:
                            pass
                        continue
                    fd = key.fd
                    waiting = self._waiting.get(fd)
                    if waiting is not None and not self._step(waiting):
                        self._drop(fd)
                now = time.monotonic()
                for fd in [fd for fd, w in self._waiting.items() if w.until <= now]:
                    self._drop(fd)

    def _step(self, w: _Waiting) -> bool:
        """Move one connection on as far as it goes without blocking; False: close it."""
        try:
            if w.answered:
                return bool(w.sock.recv(65536))
            if self._tls is not None and not isinstance(w.sock, ssl.SSLSocket):
                first = w.sock.recv(1, socket.MSG_PEEK)
                if not first:
                    return False
                if first[0] != TLS_HANDSHAKE_RECORD:
                    return self._reply(w, HTTP_ON_HTTPS)
                w.sock = self._tls().wrap_socket(
                    w.sock, server_side=True, do_handshake_on_connect=False
                )
                w.handshaking = True
            if w.handshaking:
                assert isinstance(w.sock, ssl.SSLSocket)
                w.sock.do_handshake()
                w.handshaking = False
            while b"\n" not in w.line and len(w.line) <= MAX_OVERFLOW_LINE:
                chunk = w.sock.recv(4096)
                if not chunk:
                    return False
                w.line += chunk
            return self._reply(w, self._answer(bytes(w.line.partition(b"\n")[0]) + b"\n"))
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True  # later; the deadline ends a connection that never goes on
        except OSError:
            return False

    def _reply(self, w: _Waiting, answer: bytes) -> bool:
        w.sock.send(answer)
        w.sock.shutdown(socket.SHUT_WR)
        w.answered = True
        return True

    def _drop(self, fd: int) -> None:
        # Called with the lock held.
        waiting = self._waiting.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        if waiting is not None:
            waiting.sock.close()
