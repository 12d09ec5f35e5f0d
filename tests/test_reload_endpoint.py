"""``POST /-/reload`` under abuse: one reload in flight, the rest answered at once, and no
reload from a page on another origin (issue 21, item 7)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from pixcrawler_exporter.web.origin import foreign
from tests.conftest import Exporter, start_exporter, stop_process


def post(exporter: Exporter, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    host, port = exporter.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/-/reload", body=b"", headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def slow_reload_config(tmp_path: Path) -> Path:
    # 50 custom queries make a reload take some milliseconds, as a real configuration does.
    queries = [
        {"metric": f"pixcrawler_q{i}", "help": "Q.", "sql": f"SELECT {i} AS v", "values": ["v"]}
        for i in range(50)
    ]
    db = {"url": "postgresql://u@127.0.0.1:1/db", "preset": "none", "queries": queries}
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"database": db}))
    return cfg


@pytest.mark.e2e
@pytest.mark.slow
def test_reload_posters_leave_scrapes_answered(tmp_path: Path) -> None:
    # As found: 45 clients posting to /-/reload left 16 of 96 scrapes answered.
    cfg = slow_reload_config(tmp_path)
    exporter = start_exporter(tmp_path, ["--config", str(cfg), "--web.enable-lifecycle"])
    stop = threading.Event()
    posted: Counter[int] = Counter()
    lock = threading.Lock()

    def poster() -> None:
        while not stop.is_set():
            try:
                status = post(exporter)[0]
            except OSError:
                status = 0
            with lock:
                posted[status] += 1

    posters = [threading.Thread(target=poster, daemon=True) for _ in range(45)]
    scrapes: list[int] = []
    try:
        for thread in posters:
            thread.start()
        time.sleep(1)
        for _ in range(96):
            try:
                scrapes.append(exporter.get("/metrics", timeout=10)[0])
            except OSError:
                scrapes.append(0)
    finally:
        stop.set()
        for thread in posters:
            thread.join(30)
        stop_process(exporter.proc)
    answered = scrapes.count(200)
    assert answered == 96, (Counter(scrapes), posted)
    # One reload at a time; the others were told so at once, none waited in a request slot.
    assert posted[200] >= 1 and posted[503] > posted[200], posted
    assert set(posted) <= {200, 503}, posted


@pytest.mark.e2e
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_origin_reload_is_refused(tmp_path: Path, headers: dict[str, str]) -> None:
    exporter = start_exporter(tmp_path, ["--web.enable-lifecycle"])
    try:
        status, body = post(exporter, headers)
        same = post(exporter, {"Origin": exporter.url, "Sec-Fetch-Site": "same-origin"})
        plain = post(exporter)  # curl's way: no Origin at all
    finally:
        stop_process(exporter.proc)
    assert status == 403, (status, body)
    assert "origin" in body.lower(), body
    assert same[0] == 200 and plain[0] == 200, (same, plain)
    assert exporter.log().count("configuration reloaded") == 2


@pytest.mark.parametrize(
    ("host", "origin", "same"),
    [
        ("127.0.0.1:8395", "http://127.0.0.1:8395", True),
        ("Exporter.Example:8395", "https://exporter.example:8395", True),
        ("exporter.example", "http://exporter.example:80", True),
        ("exporter.example:443", "https://exporter.example", True),
        ("[::1]:8395", "http://[::1]:8395", True),
        ("127.0.0.1:8395", "http://127.0.0.1:8396", False),
        ("exporter.example:8395", "http://exporter.example.evil:8395", False),
        ("127.0.0.1:8395", "null", False),
        ("127.0.0.1:8395", "http://127.0.0.1:8395/path", False),
        ("127.0.0.1:8395", "http://127.0.0.1:x", False),
        ("127.0.0.1:8395", "ftp://127.0.0.1:8395", False),
    ],
)
def test_an_origin_is_this_server_only_by_host_and_port(host: str, origin: str, same: bool) -> None:
    assert (foreign({"Host": host, "Origin": origin}) is None) is same


def test_without_origin_or_fetch_metadata_nothing_is_foreign() -> None:
    assert foreign({"Host": "h:1"}) is None
    assert foreign({"Host": "h:1", "Sec-Fetch-Site": "none"}) is None  # typed by the user
    assert foreign({"Host": "h:1", "Sec-Fetch-Site": "Cross-Site"}) is not None
