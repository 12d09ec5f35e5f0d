"""Basic auth under a flood of wrong passwords, for a right password the exporter has not
verified yet: after a restart or a password rotation during an attack (issue 21, item 8)."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import yaml

from pixcrawler_exporter.web import guard
from tests.conftest import http_get, start_exporter, stop_process

PASSWORD = "right horse battery"
SCRAPE_TIMEOUT = 10.0


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.e2e
@pytest.mark.slow
def test_a_new_right_password_is_answered_during_a_flood(tmp_path: Path) -> None:
    # As found: 45 clients sending wrong passwords for 10 s; a scraper whose right password had
    # not been verified before the flood got 0 of 10 answers, each a 429 at once.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()  # htpasswd's cost
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    exporter = start_exporter(tmp_path, ["--web.config.file", str(web)])
    url = exporter.url + "/metrics"
    stop = threading.Event()
    flooded: Counter[int] = Counter()
    lock = threading.Lock()

    def flood() -> None:
        while not stop.is_set():
            try:
                status = http_get(url, basic("prometheus", secrets.token_hex(8)), 15)[0]
            except OSError:
                status = 0
            with lock:
                flooded[status] += 1

    flooders = [threading.Thread(target=flood, daemon=True) for _ in range(45)]
    answers: list[tuple[int, float]] = []
    headers = {**basic("prometheus", PASSWORD), "X-Prometheus-Scrape-Timeout-Seconds": "10"}
    try:
        for thread in flooders:
            thread.start()
        time.sleep(1)
        for _ in range(10):
            started = time.monotonic()
            try:
                status = http_get(url, headers, SCRAPE_TIMEOUT)[0]
            except OSError:
                status = 0
            answers.append((status, time.monotonic() - started))
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))
    finally:
        stop.set()
        for thread in flooders:
            thread.join(20)
        stop_process(exporter.proc)
    assert [status for status, _ in answers] == [200] * 10, (answers, flooded)
    assert all(took < SCRAPE_TIMEOUT for _, took in answers), answers
    # Verified once, then cached: answered at once as before, flood or not.
    assert all(took < 1 for _, took in answers[1:]), answers
    assert flooded[401] > 0 and set(flooded) <= {401, 429}, flooded


@contextmanager
def held(line: guard._Line) -> Iterator[None]:
    """Another caller's turn, under way until the block ends."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with line.turn(10):
            started.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert started.wait(5)
    try:
        yield
    finally:
        release.set()
        holder.join(5)


def test_the_line_is_served_in_order_of_arrival() -> None:
    line = guard._Line(capacity=8)
    served: list[int] = []

    def wait_in_line(n: int) -> None:
        with line.turn(10):
            served.append(n)

    waiters = [threading.Thread(target=wait_in_line, args=(n,)) for n in range(5)]
    with held(line):
        for thread in waiters:
            thread.start()
            time.sleep(0.05)  # arrivals in this order
    for thread in waiters:
        thread.join(5)
    assert served == [0, 1, 2, 3, 4]


def test_no_turn_within_the_wait_is_busy_after_that_wait_only() -> None:
    line = guard._Line(capacity=8)
    with held(line):
        began = time.monotonic()
        with pytest.raises(guard.BusyError), line.turn(0.3):
            pass
        assert 0.25 < time.monotonic() - began < 2
    with line.turn(0.1):  # the one that gave up left the line
        pass


def test_a_full_or_hopeless_line_turns_away_at_once() -> None:
    full = guard._Line(capacity=1)
    with held(full):
        began = time.monotonic()
        with pytest.raises(guard.BusyError), full.turn(10):
            pass
        assert time.monotonic() - began < 0.05
    # Turns that took 0.2 s each: one ahead of a caller that may wait 0.1 s is one too many.
    slow = guard._Line(capacity=8)
    for _ in range(10):
        with slow.turn(1):
            time.sleep(0.2)
    with held(slow):
        began = time.monotonic()
        with pytest.raises(guard.BusyError), slow.turn(0.1):
            pass
        assert time.monotonic() - began < 0.05
