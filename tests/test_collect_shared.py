"""The helpers collectors share: the change log and the background worker."""

from __future__ import annotations

import itertools
import threading
import time

from pixcrawler_exporter.collect.changes import Change, Changes
from pixcrawler_exporter.collect.errors import CollectorError, describe
from pixcrawler_exporter.collect.worker import Worker, on_schedule


def test_changes_reports_each_transition_once_per_key() -> None:
    seen: Changes[str, str | None] = Changes(None)
    assert seen.update("a", None) is None  # starting at the initial state is no change
    assert seen.update("a", "refused") == Change(None, "refused")
    assert seen.update("a", "refused") is None
    assert seen.update("b", "refused") == Change(None, "refused")  # keys are apart
    assert seen.update("a", "timeout") == Change("refused", "timeout")
    assert seen.update("a", None) == Change("timeout", None)


def test_worker_repeats_survives_a_failure_and_stops_promptly() -> None:
    runs: list[float] = []
    failures: list[Exception] = []
    third = threading.Event()

    def work() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("first run breaks")
        if len(runs) == 3:
            third.set()

    worker = Worker("test-worker", work, 0.05, failures.append)
    worker.start()
    worker.start()  # a second start is a no-op, not a second thread
    assert third.wait(5)
    started = time.monotonic()
    worker.stop(timeout=5)
    assert time.monotonic() - started < 1
    assert [str(e) for e in failures] == ["first run breaks"]
    count = len(runs)
    time.sleep(0.2)
    assert len(runs) == count  # stopped means no further runs
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(runs))


def test_worker_rests_as_its_pause_says() -> None:
    assert on_schedule(10, 3) == 7 and on_schedule(10, 12) == 0
    rested: list[tuple[float, float]] = []
    done = threading.Event()

    def pause(interval: float, took: float) -> float:
        rested.append((interval, took))
        done.set()
        return 60  # long: stop must still end it at once

    worker = Worker("test-pause", lambda: None, 0.5, lambda e: None, pause)
    worker.start()
    assert done.wait(5)
    started = time.monotonic()
    worker.stop(timeout=5)
    assert time.monotonic() - started < 1 and rested[0][0] == 0.5


def test_describe_words_our_errors_as_they_are_and_others_with_their_type() -> None:
    assert describe(CollectorError("reading x: refused")) == "reading x: refused"
    assert describe(KeyError("x")) == "KeyError: 'x'"
    assert describe(TimeoutError()) == "TimeoutError"
