"""Reads bounded on the client side: a connection whose statement goes unanswered is cut.

``statement_timeout`` is the server's to enforce, and a server that is stopped (SIGSTOP, a host
whose storage stalls, a PgBouncer queueing the connection) enforces nothing while its kernel
still acknowledges, so TCP keepalives never fire either. The read runs its statements on its
own thread; a :class:`Watchdog` thread cuts the connection (:func:`cut`) once the statement
under way is overdue or the read's cut-off has come, and the read's wait returns at once.

The watchdog sleeps through reads that are answered in time: it is woken only when an expiry
comes earlier than the one it sleeps until, or when a read starts while it has nothing to
watch. Handing every read to a thread of its own and back cost about 50 µs of CPU and two
context switches per scrape.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time

import psycopg
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

# A statement is answered, or cancelled by the server, within its statement timeout: this long
# after it, the server is taken to have stopped answering (plenty for the cancel's round trip).
ANSWER_GRACE_SECONDS = 1.0

Conn = psycopg.Connection[TupleRow]


class AbandonedError(Exception):
    """The attempt was given up on (overdue, or the collector closed) before it had a
    connection in use."""


class Attempt:
    """One collection: the connection it has in use, so that it can be cut, and when what it
    waits for must have been answered by (``expires``, at the latest ``cutoff``)."""

    def __init__(self, watchdog: Watchdog, started: float, cutoff: float) -> None:
        self._watchdog = watchdog
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self.abandoned = False
        self.started = started
        self.cutoff = cutoff
        self.expires = cutoff

    def step(self, timeout: float) -> None:
        """What goes out next is answered within ``timeout``: statements (the server answers or
        cancels them by their statement timeout) or connecting (libpq gives up by then)."""
        self._watchdog.watch(
            self, min(self.cutoff, time.monotonic() + timeout + ANSWER_GRACE_SECONDS)
        )

    def use(self, conn: Conn) -> None:
        with self._lock:
            if self.abandoned:  # given up on while it was connecting
                raise AbandonedError("abandoned while connecting")
            self._conn = conn

    def done_with(self) -> None:
        # Before the connection may be closed: a descriptor is cut only while it is in use.
        with self._lock:
            self._conn = None

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            if self._conn is not None:
                cut(self._conn)


class Watchdog:
    """A daemon thread of the collector's own that abandons the attempt it watches once that
    attempt has expired, cutting its connection. One attempt at a time: reads never overlap."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._changed = threading.Condition()
        self._attempt: Attempt | None = None
        self._wakes_at = math.inf  # when the thread looks next; inf while it has nothing to watch
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, attempt: Attempt, expires: float) -> None:
        """Watch ``attempt`` until ``expires`` (replacing any earlier expiry). RuntimeError when
        the watchdog is closed or its thread cannot be started (a pids limit)."""
        with self._changed:
            if self._closed:
                raise RuntimeError(f"watchdog {self.name} is closed")
            self._attempt, attempt.expires = attempt, expires
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                thread.start()  # RuntimeError "can't start new thread": the next read retries
                self._thread = thread
            elif expires < self._wakes_at:
                # A later expiry is seen when the thread wakes at the earlier one: waking it for
                # every statement would cost what the watchdog is there to save.
                self._changed.notify()

    def release(self, attempt: Attempt) -> None:
        """Stop watching ``attempt`` (its read is over), without waking the thread."""
        with self._changed:
            if self._attempt is attempt:
                self._attempt = None

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                attempt = self._attempt
                if attempt is None:
                    self._wakes_at = math.inf
                    self._changed.wait()
                    continue
                left = attempt.expires - time.monotonic()
                if left > 0:
                    self._wakes_at = attempt.expires
                    self._changed.wait(left)
                    continue
                self._attempt = None
                attempt.abandon()


def cut(conn: Conn) -> None:
    """Shut the connection's socket down under libpq: its wait returns at once with end of
    file, the statement fails as "server closed the connection" and the connection is broken.

    Not ``cancel()``: a cancel request is a signal the stopped backend does not act on, sent
    through a postmaster that may be stopped too. Not closing the descriptor: that wakes no
    poll() on Linux, and its number could be handed to another socket meanwhile; shutdown(2)
    acts on the socket and leaves the descriptor to libpq, which closes it with the connection.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # no socket any more: nothing waits on it
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut down or reset: the wait has ended or is about to
