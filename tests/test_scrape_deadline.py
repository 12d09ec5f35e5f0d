"""The scrape deadline: a late collector is failed for that scrape and its read is not repeated.

test_server.py shows it through HTTP; these pin down the rest of the claim on the Scraper itself:
a hung source holds one thread however many scrapes arrive, the others answer on time, and once
the hung read ends the next scrape reads afresh.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from pixcrawler_exporter.collect.contract import Collector, Taken
from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.collect.scraper import Scraper
from tests.conftest import REPO


class Gated(Collector[str]):
    """Blocks in read() until the test opens the gate."""

    name = "gated"
    descs = (Desc("pixcrawler_test_gated", "Test."),)

    def __init__(self) -> None:
        self.gate = threading.Event()

    def read(self) -> str:
        self.gate.wait(10)
        return "read"

    def metrics(self, reading: str) -> Iterable[Metric]:
        return ()


class Quick(Collector[int]):
    name = "quick"
    descs = (Desc("pixcrawler_test_quick", "Test."),)

    def read(self) -> int:
        return 1

    def metrics(self, reading: int) -> Iterable[Metric]:
        return ()


@pytest.fixture
def scraper() -> Iterator[tuple[Scraper, Gated]]:
    gated = Gated()
    scraper = Scraper([gated, Quick()])
    yield scraper, gated
    gated.gate.set()
    scraper.close()


def collector_threads() -> int:
    return sum(t.name.startswith("collector") for t in threading.enumerate())


def test_late_read_is_shared_then_replaced(scraper: tuple[Scraper, Gated]) -> None:
    s, gated = scraper
    for _ in range(3):
        started = time.monotonic()
        snap = s.collect(0.2)
        assert time.monotonic() - started < 0.5
        late = snap.outcomes["gated"]
        assert not late.success and "within the scrape deadline of 0.20s" in str(late.error)
        assert snap.outcomes["quick"].success
    assert s.reads["gated"] == 1  # three scrapes, one read
    gated.gate.set()
    deadline = time.monotonic() + 5
    while not s.collect(1).outcomes["gated"].success:  # the hung read's own answer, or a new one
        assert time.monotonic() < deadline
    reads = s.reads["gated"]
    assert s.collect(1).outcomes["gated"].success
    assert s.reads["gated"] == reads + 1  # a finished read is never served again


def test_concurrent_scrapes_with_a_hung_source_hold_one_thread(
    scraper: tuple[Scraper, Gated],
) -> None:
    s, _ = scraper
    with ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            started = time.monotonic()
            snaps = list(pool.map(lambda _: s.collect(0.3), range(16)))
            assert time.monotonic() - started < 1.5
            assert all(not snap.outcomes["gated"].success for snap in snaps)
            assert all(snap.outcomes["quick"].success for snap in snaps)
    assert s.reads["gated"] == 1
    assert collector_threads() <= len(s.collectors)


class InlineGated(Gated):
    """A cheap source as the scraper sees it: read on the thread of the scrape that opens."""

    name = "inline"
    inline = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def read(self) -> str:
        self.threads.append(threading.current_thread().name)
        return super().read()


def test_inline_sources_are_read_by_the_opening_scrape_once() -> None:
    inline = InlineGated()
    s = Scraper([inline, Quick()])
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="opener") as opener:
            first = opener.submit(s.collect, 5)
            deadline = time.monotonic() + 5
            while not inline.threads:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # A scrape arriving meanwhile joins: it waits for the same read, it does not read.
            joined = s.collect(0.2)
            assert not joined.outcomes["inline"].success
            assert inline.threads == ["opener_0"]
            inline.gate.set()
            assert first.result(5).outcomes["inline"].success
        assert s.collect(1).outcomes["inline"].success
        assert inline.threads == ["opener_0", threading.current_thread().name]
        assert collector_threads() <= 1  # only Quick is handed to the pool
    finally:
        inline.gate.set()
        s.close()


class GatedWithLate(Gated):
    """A source whose "up" must never vanish: a late read is rendered as down."""

    def late(self, error: str) -> Taken:
        return Taken(f"down: {error}", error, lambda: [UP.value(0)])


UP = Desc("pixcrawler_test_up", "Test.")


def test_a_scrape_joining_a_later_collection_renders_the_late_reading() -> None:
    gated = GatedWithLate()
    s = Scraper([gated, Quick()])
    try:
        with ThreadPoolExecutor(max_workers=1) as opener:
            first = opener.submit(s.collect, 5)  # opens the collection, deadline in 5 s
            time.sleep(0.1)
            joined = s.collect(0.2)  # joins it, with its own earlier deadline
            late = joined.outcomes["gated"]
            assert not late.success and "within the scrape deadline of 0.20s" in str(late.error)
            assert late.reading == f"down: {late.error}"
            assert [m.samples[0].value for m in late.families()] == [0]
            assert joined.get(str) is None  # no derived fact is built on it
            gated.gate.set()
            assert first.result(5).outcomes["gated"].success
    finally:
        gated.gate.set()
        s.close()


def test_a_read_that_never_returns_does_not_hold_the_exit(tmp_path: Path) -> None:
    # concurrent.futures joins its workers at interpreter exit: a hung read held SIGTERM for ever.
    script = tmp_path / "hung.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            from tests.test_scrape_deadline import Gated, Quick
            from pixcrawler_exporter.collect.scraper import Scraper

            class Hung(Gated):
                def read(self):
                    threading.Event().wait()  # never

            s = Scraper([Hung(), Quick()])
            assert not s.collect(0.2).outcomes["gated"].success
            s.close()
            print("exiting", flush=True)
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"
    assert time.monotonic() - started < 5


def test_a_thread_that_cannot_start_fails_that_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pids limit: the read fails with the reason, the scrape goes on, the next read retries.
    s = Scraper([Gated(), Quick()])
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name.startswith("collector-"):
            raise RuntimeError("can't start new thread")
        real_start(thread)

    try:
        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", refuse)
            snap = s.collect(0.5)
        assert snap.outcomes["gated"].error == "RuntimeError: can't start new thread"
        assert snap.outcomes["quick"].error == "RuntimeError: can't start new thread"
        for collector in s.collectors:
            if isinstance(collector, Gated):
                collector.gate.set()
        snap = s.collect(5)
        assert snap.outcomes["gated"].success and snap.outcomes["quick"].success
    finally:
        s.close()
