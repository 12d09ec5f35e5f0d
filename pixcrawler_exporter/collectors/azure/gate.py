"""Our own retry loop for Azure calls, and the Retry-After gate in front of each API.

The SDK's retry policy is off, so every HTTP call is counted and all waiting happens here, where
``close()`` can interrupt it: a 429 (or a 5xx with Retry-After) closes the API until the time
Azure named has passed, for every later call, refreshes included; 5xx, timeouts and connection
errors are retried with exponential backoff and jitter while the deadline allows; authentication
failures and malformed answers fail at once.

The clock, the wait and the random source are injected, so the timing is tested without HTTP and
without sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from pixcrawler_exporter.collectors.azure import parse

T = TypeVar("T")

Classify = Callable[[BaseException], tuple[str, str, float | None]]


class StoppedError(Exception):
    """``close()`` interrupted a wait: the refresher ends."""


class Gate:
    """Runs calls for one refresher thread (it holds no lock of its own)."""

    def __init__(
        self,
        *,
        retries: int,
        backoff_seconds: float,
        max_backoff_seconds: float,
        count: Callable[[str], None],
        wait: Callable[[float], bool],
        classify: Classify = parse.classify,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """``count`` is told each call's outcome; ``wait(seconds)`` returns True when stopped."""
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._count = count
        self._wait = wait
        self._classify = classify
        self._clock = clock
        self._random = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # Per API ("metrics", "logs"): clock time before which no call may be sent.
        self._not_before: dict[str, float] = {}

    def call(self, api: str, fn: Callable[[], T], deadline: float) -> T:
        """``fn()`` once the gate of ``api`` is open, retried until it succeeds, fails for good
        (CallFailedError) or the next retry would pass ``deadline`` (a clock time)."""
        attempt = 0
        while True:
            self._pass(api)
            try:
                result = fn()
            except StoppedError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified and counted
                outcome, message, retry_after = self._classify(exc)
                self._count(outcome)
                if retry_after is not None:
                    self._not_before[api] = self._clock() + retry_after
                if outcome not in parse.RETRIED or attempt >= self.retries:
                    raise parse.CallFailedError(outcome, message) from None
                delay = retry_after if retry_after is not None else self.backoff(attempt)
                if self._clock() + delay >= deadline:
                    raise parse.CallFailedError(outcome, message) from None
                self._sleep(delay)
                attempt += 1
                continue
            self._count("success")
            return result

    def backoff(self, attempt: int) -> float:
        # "Equal jitter": never less than half the exponential step, so retries stay spaced,
        # and never in lockstep with another exporter that failed at the same moment.
        step = min(self.max_backoff_seconds, self.backoff_seconds * 2.0**attempt)
        return step / 2 + self._random.uniform(0, step / 2)

    def closed_for(self, api: str) -> float:
        """Seconds until ``api`` may be called again; 0 when it may now."""
        return max(0.0, self._not_before.get(api, 0.0) - self._clock())

    def _pass(self, api: str) -> None:
        while (wait := self.closed_for(api)) > 0:
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        if self._wait(seconds):
            raise StoppedError
