"""A background thread that redoes slow work (a temp tree walk, Azure calls) every interval,
so a scrape only reads its last result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def on_schedule(interval: float, took: float) -> float:
    """Start every ``interval`` seconds; a run slower than that is followed by the next at once."""
    return max(0.0, interval - took)


class Worker:
    """Runs ``work`` in a daemon thread every ``interval`` seconds until :meth:`stop`.

    ``pause(interval, took)`` says how long to rest after a run that took ``took`` seconds.
    ``work`` should look at :attr:`stopping` (and wait on it instead of sleeping) so that stop
    is prompt. An exception from ``work`` goes to ``failed`` and the next run goes ahead: a bug
    in one run must not end all later ones; once stopping, it ends the loop instead.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], None],
        interval: float,
        failed: Callable[[Exception], None],
        pause: Callable[[float, float], float] = on_schedule,
    ) -> None:
        self.name = name
        self.work = work
        self.interval = interval
        self.failed = failed
        self.pause = pause
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        thread.start()  # may fail (a pids limit): then not started, and stop() has nothing to join
        self._thread = thread

    def stop(self, timeout: float) -> None:
        """Ask the work to stop and wait up to ``timeout`` seconds; a daemon thread still
        running then never holds up exit."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.work()
            except Exception as exc:  # noqa: BLE001 - handed to the owner, who logs it
                if self.stopping.is_set():
                    return
                self.failed(exc)
            self.stopping.wait(self.pause(self.interval, time.monotonic() - started))
