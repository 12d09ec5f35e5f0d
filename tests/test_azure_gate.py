"""The Azure retry loop and Retry-After gate on a fake clock: no HTTP, no sleeping.

Failures are the azure-core exceptions the SDK raises, so the classification the gate acts on is
the real one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)

from pixcrawler_exporter.collectors.azure import parse
from pixcrawler_exporter.collectors.azure.gate import Gate, StoppedError
from pixcrawler_exporter.collectors.azure.parse import CallFailedError, MalformedError


class FakeResponse:
    """Just what HttpResponseError reads of a response."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status_code = status
        self.reason = "Reason"
        self.headers = dict(headers)

    def text(self) -> str:
        return ""


def http_error(status: int, **headers: str) -> HttpResponseError:
    response: Any = FakeResponse(status, {k.replace("_", "-"): v for k, v in headers.items()})
    return HttpResponseError(f"status {status}", response=response)


class Clock:
    """A monotonic clock that a wait moves forward; records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.stop = False

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return self.stop


class Fixed(random.Random):
    """uniform() always gives one end of its range: 0 the low end, 1 the high."""

    def __init__(self, end: int) -> None:
        super().__init__()
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return b if self.end else a


def setup(*, retries: int = 2, rng: random.Random | None = None) -> tuple[Clock, list[str], Gate]:
    """A gate on a fake clock (1 s backoff, capped at 5 s), and the outcomes it counts."""
    clock, counted = Clock(), list[str]()
    gate = Gate(
        retries=retries,
        backoff_seconds=1.0,
        max_backoff_seconds=5.0,
        count=counted.append,
        wait=clock.wait,
        clock=clock,
        rng=rng,
    )
    return clock, counted, gate


def failing(clock: Clock, *errors: BaseException) -> tuple[Callable[[], str], list[float]]:
    """A call that raises ``errors`` in turn, then answers "ok"; also the clock time of each try."""
    tries: list[float] = []
    left = list(errors)

    def call() -> str:
        tries.append(clock.now)
        if left:
            raise left.pop(0)
        return "ok"

    return call, tries


# --- Retry-After ---------------------------------------------------------------------------


def test_retry_after_past_the_deadline_fails_now_and_holds_back_the_next_refresh() -> None:
    clock, counted, gate = setup()
    call, tries = failing(clock, http_error(429, Retry_After="30"))
    with pytest.raises(CallFailedError) as err:
        gate.call("metrics", call, deadline=clock.now + 10)
    assert err.value.outcome == "throttled" and "HTTP 429" in str(err.value)
    assert clock.waits == [] and counted == ["throttled"]
    # The next refresh, 10 s later: the API is still closed for 20 s, the other one is not.
    clock.now += 10
    assert gate.closed_for("metrics") == pytest.approx(20)
    assert gate.call("logs", lambda: "logs", deadline=clock.now + 10) == "logs"
    assert clock.waits == []
    assert gate.call("metrics", call, deadline=clock.now + 60) == "ok"
    assert clock.waits == [pytest.approx(20)]
    assert tries[-1] - tries[0] == pytest.approx(30)
    assert counted == ["throttled", "success", "success"]


def test_retry_after_within_the_deadline_is_waited_by_the_gate_not_the_backoff() -> None:
    clock, counted, gate = setup(rng=Fixed(1))
    call, tries = failing(clock, http_error(503, retry_after_ms="1500"))
    assert gate.call("metrics", call, deadline=clock.now + 10) == "ok"
    assert tries[1] - tries[0] == pytest.approx(1.5)  # not the 1 s backoff step
    assert clock.waits == [pytest.approx(1.5)]
    assert counted == ["server_error", "success"]


def test_close_interrupts_the_wait() -> None:
    clock, counted, gate = setup()
    call, tries = failing(clock, http_error(429, Retry_After="30"))
    with pytest.raises(CallFailedError):
        gate.call("metrics", call, deadline=clock.now + 5)
    clock.stop = True
    with pytest.raises(StoppedError):
        gate.call("metrics", call, deadline=clock.now + 60)
    assert len(tries) == 1 and counted == ["throttled"]


# --- backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "step"), [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (9, 5.0)])
def test_backoff_is_between_half_and_all_of_the_capped_exponential_step(
    attempt: int, step: float
) -> None:
    assert setup(rng=Fixed(0))[2].backoff(attempt) == pytest.approx(step / 2)
    assert setup(rng=Fixed(1))[2].backoff(attempt) == pytest.approx(step)
    gate = setup()[2]
    jittered = {gate.backoff(attempt) for _ in range(50)}
    assert all(step / 2 <= b <= step for b in jittered) and len(jittered) > 1


def test_5xx_timeouts_and_connection_errors_are_retried_with_growing_backoff() -> None:
    clock, counted, gate = setup(retries=3, rng=Fixed(1))
    call, tries = failing(
        clock,
        http_error(500),
        ServiceResponseTimeoutError("read timed out"),
        ServiceRequestError("connection refused"),
    )
    assert gate.call("metrics", call, deadline=clock.now + 60) == "ok"
    assert clock.waits == [1.0, 2.0, 4.0]
    assert counted == ["server_error", "timeout", "network_error", "success"]
    assert len(tries) == 4


def test_retries_end_at_the_retry_limit_and_before_the_deadline() -> None:
    clock, counted, gate = setup(retries=2, rng=Fixed(1))
    call, tries = failing(clock, *(http_error(500) for _ in range(5)))
    with pytest.raises(CallFailedError) as err:
        gate.call("metrics", call, deadline=clock.now + 60)
    assert err.value.outcome == "server_error" and len(tries) == 3
    # A retry that would start at or past the deadline is not made.
    clock, counted, gate = setup(retries=5, rng=Fixed(1))
    call, tries = failing(clock, *(http_error(500) for _ in range(5)))
    with pytest.raises(CallFailedError):
        gate.call("metrics", call, deadline=clock.now + 3)
    assert clock.waits == [1.0] and len(tries) == 2  # 1 + 2 s would reach the deadline
    assert counted == ["server_error", "server_error"]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (http_error(401), "auth_error"),
        (http_error(403), "auth_error"),
        (http_error(404), "client_error"),
        (ClientAuthenticationError("AADSTS7000215: invalid secret"), "auth_error"),
        (DecodeError("Expecting value"), "malformed"),
        (MalformedError("unexpected answer shape: KeyError: 'value'"), "malformed"),
    ],
)
def test_failures_a_retry_cannot_mend_fail_at_once(error: BaseException, outcome: str) -> None:
    clock, counted, gate = setup()
    call, tries = failing(clock, error)
    with pytest.raises(CallFailedError) as err:
        gate.call("metrics", call, deadline=clock.now + 60)
    assert err.value.outcome == outcome and counted == [outcome]
    assert len(tries) == 1 and clock.waits == []


# --- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome", "words", "wait"),
    [
        (http_error(429), "throttled", "HTTP 429", None),
        (http_error(529, Retry_After="7"), "throttled", "HTTP 529", 7.0),
        (http_error(500), "server_error", "HTTP 500", None),
        (http_error(503, x_ms_retry_after_ms="2500"), "server_error", "HTTP 503", 2.5),
        (http_error(401, Retry_After="9"), "auth_error", "HTTP 401", None),
        (http_error(400), "client_error", "HTTP 400", None),
        (ServiceRequestTimeoutError("connect timed out"), "timeout", "connect timed out", None),
        (ServiceResponseTimeoutError("read timed out\nmore"), "timeout", "read timed out", None),
        (ServiceRequestError("refused"), "network_error", "refused", None),
        (OSError("reset"), "network_error", "OSError: reset", None),
        (ClientAuthenticationError("no token"), "auth_error", "no token", None),
        (DecodeError("bad"), "malformed", "not JSON: bad", None),
        (KeyError("value"), "malformed", "unexpected answer shape: KeyError", None),
    ],
)
def test_classification(error: BaseException, outcome: str, words: str, wait: float | None) -> None:
    got, message, retry_after = parse.classify(error)
    assert (got, retry_after) == (outcome, wait)
    assert words in message and "\n" not in message
