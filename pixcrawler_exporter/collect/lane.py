"""A thread of our own that runs reads one at a time and never holds the process's exit.

``concurrent.futures`` joins its workers when the interpreter exits (``threading``'s atexit
hook), whatever they are doing: a read stuck on a frozen database or a hung network filesystem
kept the exporter alive after SIGTERM until it was killed. A :class:`Lane` is a daemon thread,
so such a read is dropped at exit instead; the reads themselves are bounded by their callers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# A submitted call as the thread sees it: how to cancel it, and how to run it into its future
# (closures, so the queue holds calls of every result type without erasing them to Any).
_Call = tuple[Callable[[], bool], Callable[[], None]]


class Lane:
    """Runs submitted calls one at a time, in order, on one daemon thread.

    The thread starts with the first call. When it cannot be started (a pids limit), that call
    fails with the reason, which is logged, and the next call tries again: no read takes the
    process down.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"lane {self.name} is closed")
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # "can't start new thread"
                    log.warning(
                        "cannot start a thread", extra={"lane": self.name, "error": str(exc)}
                    )
                    future.set_exception(exc)
                    return future
                self._thread = thread
            self._calls.put((future.cancel, partial(_settle, future, call)))
        return future

    def close(self) -> None:
        """Take no more calls and cancel those not started; the one running goes on (it is not
        waited for) and the thread ends after it."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    waiting = self._calls.get_nowait()
                except queue.Empty:
                    break
                if waiting is not None:
                    cancel, _ = waiting
                    cancel()
            self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            _, run = item
            run()


def _settle(future: Future[T], call: Callable[[], T]) -> None:
    """Run ``call`` into ``future``, unless it was cancelled while it waited."""
    if not future.set_running_or_notify_cancel():
        return  # cancelled while it waited: its caller gave up on it
    try:
        result = call()
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
    else:
        future.set_result(result)
