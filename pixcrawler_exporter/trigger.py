"""Work a signal asks for, done on one long-lived thread: SIGHUP's reload, SIGTERM's shutdown.

A signal handler runs on the main thread, between two bytecodes of whatever it was doing. It
cannot start a thread (a pids limit or an address-space limit makes that fail, and the failure
would be raised in ``serve_forever``), nor take a lock the interrupted code may hold (a second
signal arriving inside the first handler's ``Event.set`` would wait for itself). So the handler
writes one byte to a non-blocking pipe, nothing else, and a thread started with the process reads
it. Requests that arrive while the work runs leave bytes behind that make one more run; a full
pipe drops the byte, since a run is pending anyway. A storm of signals is a few runs, never a
thread each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# A pipe holds 64 KiB on Linux; one read takes everything pending.
_DRAIN_BYTES = 65536


class Trigger:
    def __init__(self, name: str, work: Callable[[], object]) -> None:
        self._name = name
        self._work = work
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread: at start-up, where a failure is the start-up's failure."""
        self._thread.start()

    def fire(self) -> None:
        """Ask for one run after any under way. Safe in a signal handler: it takes no lock,
        starts no thread and never blocks."""
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a run is pending
            os.write(self._write, b"\0")

    def _run(self) -> None:
        while True:
            if not os.read(self._read, _DRAIN_BYTES):
                return
            try:
                self._work()
            except Exception:
                # The thread must outlive a failing run: it is the only one there will be.
                log.exception("signalled work failed", extra={"work": self._name})
