"""The HTTP layer and the scrape machinery, in process with collectors the test controls."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from prometheus_client.core import Metric

from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.collect.contract import Collector, CollectorError
from pixcrawler_exporter.collect.metrics import Desc
from pixcrawler_exporter.collect.scraper import Scraper
from pixcrawler_exporter.web import server
from tests.conftest import http_get, parse_samples, sample

VALUE = Desc("pixcrawler_test_value", "A value the test controls.")


@dataclass
class Slow(Collector[float]):
    """A source that takes ``delay`` seconds and fails while ``fail`` is set."""

    name = "slow"
    descs = (VALUE,)
    delay: float = 0.0
    fail: bool = False

    def read(self) -> float:
        time.sleep(self.delay)
        if self.fail:
            raise CollectorError("/nonexistent/memory.max: 'garbage' is not a number")
        return 42.0

    def metrics(self, reading: float) -> Iterable[Metric]:
        yield VALUE.value(reading)


class Other(Collector[int]):
    name = "other"
    descs = (Desc("pixcrawler_test_other", "Another source."),)

    def read(self) -> int:
        return 7

    def metrics(self, reading: int) -> Iterable[Metric]:
        yield self.descs[0].value(reading)


@pytest.fixture
def app() -> Iterator[tuple[str, Slow, Scraper]]:
    slow = Slow()
    collectors: list[Collector[object]] = [slow, Other()]  # type: ignore[list-item]
    scraper = Scraper(collectors)
    renderer = registry.Renderer(collectors, "local", "local", "v2")
    routes = {
        "/metrics": server.metrics_route(lambda t: renderer.families(scraper.collect(t)), 10, 0.5),
        "/-/healthy": server.healthy_route(),
    }
    httpd = server.serve("127.0.0.1:0", routes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", slow, scraper
    httpd.shutdown()
    httpd.server_close()
    scraper.close()


def test_metrics_text_format(app: tuple[str, Slow, Scraper]) -> None:
    url, _, _ = app
    status, headers, body = http_get(url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_samples(body.decode())
    assert sample(samples, "pixcrawler_test_value") == 42
    assert sample(samples, "pixcrawler_exporter_collector_success", collector="slow") == 1
    assert (
        sample(
            samples,
            "pixcrawler_exporter_build_info",
            version=__import__("pixcrawler_exporter").__version__,
            python_version=__import__("platform").python_version(),
        )
        == 1
    )


def test_openmetrics_when_asked(app: tuple[str, Slow, Scraper]) -> None:
    url, _, _ = app
    status, headers, body = http_get(
        url + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_gzip_when_asked(app: tuple[str, Slow, Scraper]) -> None:
    url, _, _ = app
    req = urllib.request.Request(url + "/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(resp.read()).decode()
    assert "pixcrawler_test_value 42.0" in text


def test_landing_healthy_404_405_head(app: tuple[str, Slow, Scraper]) -> None:
    url, _, _ = app
    status, headers, body = http_get(url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="/metrics"' in body and b'href="/-/healthy"' in body
    assert __import__("pixcrawler_exporter").__version__.encode() in body
    assert http_get(url + "/-/healthy")[0] == 200
    assert http_get(url + "/nope")[0] == 404
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        req = urllib.request.Request(
            url + "/metrics", method=method, data=b"" if method != "OPTIONS" else None
        )
        try:
            urllib.request.urlopen(req)
            raise AssertionError(f"{method} was accepted")
        except urllib.error.HTTPError as err:
            assert err.code == 405, method
            assert err.headers["Allow"] == "GET, HEAD"
    req = urllib.request.Request(url + "/metrics", method="HEAD")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200 and resp.read() == b""


def test_failing_collector_does_not_break_the_scrape(
    app: tuple[str, Slow, Scraper], caplog: pytest.LogCaptureFixture
) -> None:
    url, slow, _ = app
    caplog.set_level(logging.INFO)
    slow.fail = True
    for _ in range(3):
        samples = parse_samples(http_get(url + "/metrics")[2].decode())
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="slow") == 0
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="other") == 1
        assert sample(samples, "pixcrawler_test_other") == 7
        assert sample(samples, "pixcrawler_test_value") is None
    failed = [r for r in caplog.records if r.getMessage() == "collector failed"]
    assert len(failed) == 1  # once per change of state, not per scrape
    assert "garbage" in failed[0].error  # type: ignore[attr-defined]
    slow.fail = False
    http_get(url + "/metrics")
    http_get(url + "/metrics")
    assert [r.getMessage() for r in caplog.records].count("collector recovered") == 1


def test_concurrent_scrapes_share_one_collection(app: tuple[str, Slow, Scraper]) -> None:
    url, slow, scraper = app
    slow.delay = 0.5
    barrier = threading.Barrier(20)

    def one(_: int) -> tuple[int, float | None]:
        barrier.wait()
        status, _headers, body = http_get(url + "/metrics")
        return status, sample(parse_samples(body.decode()), "pixcrawler_test_value")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [(200, 42.0)] * 20
    assert scraper.reads == {"slow": 1, "other": 1}


@pytest.mark.slow
def test_deadline_reports_a_slow_collector_failed_without_piling_up(
    app: tuple[str, Slow, Scraper],
) -> None:
    url, slow, scraper = app
    slow.delay = 3.0
    threads: list[int] = []
    started = time.monotonic()
    for _ in range(5):
        status, _, body = http_get(url + "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        samples = parse_samples(body.decode())
        assert status == 200
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="slow") == 0
        assert sample(samples, "pixcrawler_test_other") == 7
        threads.append(threading.active_count())
    elapsed = time.monotonic() - started
    assert elapsed < 5 * 0.5 + 1.0  # each answered at 1 s - 0.5 s offset
    # The scrapes waited on the one read still running instead of starting one each, so the
    # thread count after the first scrape does not grow with the scrapes that follow.
    assert scraper.reads["slow"] == 1
    assert max(threads[1:]) <= threads[0] + 1, threads


def test_scrape_timeout_header() -> None:
    h = server.SCRAPE_TIMEOUT_HEADER
    assert server.scrape_timeout({}, 10, 0.5) == 10
    assert server.scrape_timeout({h: "4"}, 10, 0.5) == 3.5
    assert server.scrape_timeout({h: "0.2"}, 10, 0.5) == server.MIN_SCRAPE_SECONDS
    assert server.scrape_timeout({h: "nan"}, 10, 0.5) == 10
    assert server.scrape_timeout({h: "x"}, 10, 0.5) == 10


def test_registering_collectors_reads_no_source() -> None:
    class Counting(Other):
        calls = 0

        def read(self) -> int:
            Counting.calls += 1
            return 1

    registry.check_names([Counting()])
    assert Counting.calls == 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.check_names([Other(), Other()])


def test_binding_asks_no_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    # http.server's own server_bind looks the address's name up (socket.getfqdn): seconds at
    # start where DNS is broken, for a name nothing uses.
    def no_lookup(name: str = "") -> str:
        raise AssertionError(f"name lookup of {name!r}")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    for listen in ("127.0.0.1:0", "[::1]:0"):
        try:
            httpd = server.serve(listen, {})
        except OSError as exc:  # no IPv6 on this host
            assert listen.startswith("["), exc
            continue
        try:
            assert httpd.server_port == httpd.server_address[1] > 0
        finally:
            httpd.server_close()
