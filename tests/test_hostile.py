"""Hostile input (issue 13): each class of input that once broke the exporter, with relatives.

HTTP is spoken on raw sockets, so nothing a client library fixes up hides a fault; the HTTP
layer runs in process with routes the tests control, and the exporter itself runs where the
wiring is the point (signals, the scrape-timeout header on real endpoints, flags).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import logging
import os
import re
import secrets
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import bcrypt
import pytest
import trustme
import yaml
from azure.monitor.query import LogsTable
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from pixcrawler_exporter import config
from pixcrawler_exporter.collect import errors, metrics
from pixcrawler_exporter.collectors.azure import parse as azure_parse
from pixcrawler_exporter.collectors.azure.model import parse_log_queries
from pixcrawler_exporter.collectors.database import dsn
from pixcrawler_exporter.collectors.database.collector import DatabaseCollector
from pixcrawler_exporter.collectors.database.queries import Query
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings
from pixcrawler_exporter.collectors.temp_storage import scan as tempscan
from pixcrawler_exporter.config import ConfigError
from pixcrawler_exporter.web import guard, http1, server, webconfig
from tests.conftest import (
    Exporter,
    free_port,
    http_get,
    run_cli,
    spawn_exporter,
    stop_process,
)
from tests.helpers.web import serving

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts are rewritten
    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg"]

PASSWORD = "right horse battery"


# --- helpers -----------------------------------------------------------------------------------


def big_family(_timeout: float) -> list[Metric]:
    """Enough samples that the text is above the gzip threshold."""
    family = GaugeMetricFamily("hostile_test", "A test gauge.", labels=["n"])
    for n in range(200):
        family.add_metric([str(n)], n)
    return [family]


def routes(extra: Mapping[str, server.Route] | None = None) -> dict[str, server.Route]:
    return {
        "/metrics": server.metrics_route(big_family, 10.0, 0.5),
        "/small": server.Route(lambda _r: server.Response(HTTPStatus.OK, b"small\n"), "Small"),
        "/-/healthy": server.healthy_route(),
        **(extra or {}),
    }


def running(
    web: webconfig.WebConfig | None = None,
    limits: server.Limits | None = None,
    extra: Mapping[str, server.Route] | None = None,
) -> AbstractContextManager[int]:
    return serving(routes(extra), web, limits)


def exchange(port: int, data: bytes, quiet: float = 0.5, limit: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data``; read until the server closes (True) or says nothing for ``quiet`` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(data)
        chunks: list[bytes] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not select.select([sock], [], [], quiet)[0]:
                return b"".join(chunks), False
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return b"".join(chunks), True
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
        raise AssertionError(f"still talking after {limit}s: {b''.join(chunks)[:200]!r}")


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer`` (bodies here never hold a status line)."""
    return [int(code) for code in re.findall(rb"(?:^|\n)HTTP/1\.1 (\d{3}) ", answer)]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_web(directory: Path, doc: object) -> str:
    path = directory / "web.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def hold(port: int, count: int, ctx: ssl.SSLContext | None = None) -> list[socket.socket]:
    """``count`` connections that each hold a connection thread with a head that never ends."""
    held: list[socket.socket] = []
    deadline = time.monotonic() + 10
    while len(held) < count:
        assert time.monotonic() < deadline, "could not hold the connections"
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        # A read, not a select: TLS 1.3 session tickets make the socket readable with no answer.
        sock.settimeout(0.3)
        try:
            sock.recv(1)
            sock.close()  # answered by the overflow: every thread is taken already
        except TimeoutError:
            held.append(sock)
    return held


# --- item 3: request smuggling -----------------------------------------------------------------

INNER = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        # The issue's example: a GET whose declared body is a second request.
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(INNER) + INNER,
        b"HEAD /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(INNER) + INNER,
        b"GET /-/healthy HTTP/1.0\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n"
        % len(INNER)
        + INNER,
        # Chunked: never read, so the connection is closed after the answer.
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(INNER)
        + INNER
        + b"\r\n0\r\n\r\n",
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + INNER,
        # Too big to read: answered, then closed.
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n" + INNER,
        # Expect: the body might never come; answered, then closed.
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        % len(INNER)
        + INNER,
    ],
    ids=["get-length", "head-length", "http10-length", "chunked", "te-list", "huge", "expect"],
)
def test_a_body_is_never_taken_for_a_request(request_bytes: bytes) -> None:
    with running() as port:
        answer, _closed = exchange(port, request_bytes)
        assert statuses(answer) == [200], answer
        assert b"small" not in answer
        assert http_get(f"http://127.0.0.1:{port}/small")[0] == 200


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5, 6\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 0x10\r\n",
        b"Content-Length: 1e3\r\n",
        b"Content-Length: 99999999999999999999999\r\n",
        b"Content-Length:\r\n",
    ],
)
def test_ambiguous_framing_is_400_and_close(framing: bytes) -> None:
    with running() as port:
        answer, closed = exchange(port, b"GET /small HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n")
        assert statuses(answer) == [400] and closed, answer


def test_transfer_encoding_in_http10_is_400() -> None:
    with running() as port:
        request = b"GET /small HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        answer, closed = exchange(port, request)
        assert statuses(answer) == [400] and closed


def test_a_small_body_is_read_and_dropped_and_the_connection_goes_on() -> None:
    with running() as port:
        first = b"GET /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        second = b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer, closed = exchange(port, first + second)
        assert statuses(answer) == [200, 200] and closed, answer


def test_identical_repeated_lengths_are_one_length() -> None:
    # RFC 9112 section 6.3 lets a recipient take "5, 5" as 5; what matters is one framing.
    with running() as port:
        request = b"GET /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"
        assert statuses(exchange(port, request)[0]) == [200]


# --- item 4: the scrape timeout header ---------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["inf", "-inf", "1e20", "1e308", "1e309", "infinity", "nan", "1_000", "  7 ", "0"]
)
def test_scrape_timeout_header_is_clamped(value: str) -> None:
    timeout = server.scrape_timeout({server.SCRAPE_TIMEOUT_HEADER: value}, 10, 0.5)
    assert server.MIN_SCRAPE_SECONDS <= timeout <= server.MAX_SCRAPE_SECONDS


def test_huge_scrape_timeouts_on_real_endpoints(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory()
    for value in ("inf", "1e20", "1e309", "-1e20", "nan"):
        for path in ("/metrics", "/health", "/status"):
            status, _, body = exp.get(path, {server.SCRAPE_TIMEOUT_HEADER: value})
            assert status in (200, 503), (value, path, body[:300])
    assert "Traceback" not in exp.log()
    assert "OverflowError" not in exp.log()


# --- item 5: RFC 9112 request heads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET /small HTTP/1.1\r\nHost: x\r\nNoColonHere\r\nConnection: close\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\n\tX-A: 1\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\nX Y: space-in-name\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\nX-A: nul\x00here\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\nX-A: bare\rcr\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: x\r\nX-A: esc\x1b[2J\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /small HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
        (b"GET /small HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET /small\r\n", 400),  # HTTP/0.9
        (b"GET /small HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
        (b"GET  /small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /sm all HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /small\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"G(T /small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /small http/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /small HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /small HTTP/0.9\r\nHost: x\r\n\r\n", 505),
        (b"GET http://u:p@x/small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET http:///small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET ftp://x/small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET http://a,b/small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\r\n" * 4097 + b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\r\nGET /small HTTP/1.1\r\n\r\n", 400),  # no Host still, after an empty line
    ],
    ids=[
        "no-colon",
        "space-before-colon",
        "space-before-colon-later",
        "obs-fold",
        "leading-tab",
        "empty-name",
        "space-in-name",
        "nul-in-value",
        "cr-in-value",
        "esc-in-value",
        "no-host",
        "two-hosts",
        "host-list",
        "host-space",
        "http09",
        "trailing-space",
        "double-space",
        "space-in-target",
        "nul-in-target",
        "bad-method",
        "lower-case-version",
        "http2",
        "http09-spelled",
        "absolute-userinfo",
        "absolute-no-host",
        "absolute-ftp",
        "absolute-host-list",
        "only-empty-lines",
        "empty-line-no-host",
    ],
)
def test_malformed_heads_get_an_answer_and_a_close_at_once(
    request_bytes: bytes, expected: int
) -> None:
    with running() as port:
        started = time.monotonic()
        answer, closed = exchange(port, request_bytes, quiet=3)
        assert statuses(answer) == [expected] and closed, answer
        assert time.monotonic() - started < 2
        assert b"small\n" not in answer
        assert http_get(f"http://127.0.0.1:{port}/small")[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /small HTTP/1.0\r\n\r\n",  # HTTP/1.0 needs no Host
        b"GET /small HTTP/1.1\nHost: x\n\n",  # bare LF line ends (RFC 9112 section 2.2)
        b"GET /small HTTP/1.1\r\nhOsT: x\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
        b"GET /small HTTP/1.1\r\nHost: [::1]:9100\r\n\r\n",
        b"GET /small HTTP/1.1\r\nHost:\r\n\r\n",  # empty Host is allowed
        b"GET /small HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n",  # obs-text
        # RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before the
        # request line; section 3.2.2: it MUST accept the absolute-form.
        b"\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://127.0.0.1:9100/small HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\r\n",
        b"GET HTTPS://[::1]/small?x=1 HTTP/1.1\r\nHost: [::1]\r\n\r\n",
    ],
    ids=[
        "http10",
        "bare-lf",
        "odd-but-valid",
        "ipv6-host",
        "empty-host",
        "obs-text",
        "empty-line-first",
        "empty-lines-first",
        "absolute-form",
        "absolute-form-https-query",
    ],
)
def test_valid_heads_still_served(request_bytes: bytes) -> None:
    with running() as port:
        answer, _ = exchange(port, request_bytes)
        assert statuses(answer) == [200] and answer.endswith(b"small\n"), answer


def test_an_empty_line_after_a_body_does_not_end_the_connection() -> None:
    # A client that ends a body with an extra CRLF: the next request on the connection is served.
    with running() as port:
        first = b"GET /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab\r\n"
        answer, _ = exchange(port, first + b"GET http://x/small HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == [200, 200], answer


def test_the_exporter_serves_metrics_to_an_absolute_form_after_an_empty_line(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory()
    authority = exp.url.removeprefix("http://").encode()
    port = int(authority.rsplit(b":", 1)[1])
    head = b"\r\nGET http://" + authority + b"/metrics HTTP/1.1\r\nHost: " + authority
    answer, _ = exchange(port, head + b"\r\nConnection: close\r\n\r\n", quiet=3, limit=15)
    assert statuses(answer) == [200], answer[:300]
    assert b"pixcrawler_exporter_collector_success" in answer


def test_headers_after_an_odd_one_are_not_dropped() -> None:
    # Connection: close after a valid but unusual header is honoured.
    with running() as port:
        request = b"GET /small HTTP/1.1\r\nHost: x\r\nX-Odd: a:b:c\r\nConnection: close\r\n\r\n"
        answer, closed = exchange(port, request, quiet=3)
        assert statuses(answer) == [200] and closed


# --- item 6: q-values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("GZIP;Q=1", True),
        ("gzip;q=0.001", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("gzip;q=abc", False),
        ("gzip;q=nan", False),
        ("nogzip", False),
        ("x-gzipped", False),
        ("", False),
    ],
)
def test_accept_encoding_q_values(accept_encoding: str, gzipped: bool) -> None:
    with running(extra={"/big": server.Route(big_page, "Big")}) as port:
        for path in ("/metrics", "/big"):
            status, headers, body = http_get(
                f"http://127.0.0.1:{port}{path}", {"Accept-Encoding": accept_encoding}
            )
            assert status == 200
            assert (headers.get("Content-Encoding") == "gzip") is gzipped, (path, headers)
            text = gzip.decompress(body) if gzipped else body
            assert text.startswith(b"# HELP") or text.startswith(b"big")


def big_page(_request: server.Request) -> server.Response:
    return server.Response(HTTPStatus.OK, b"big " * 1000)


OM = "application/openmetrics-text"


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (f"{OM};version=1.0.0", True),
        (f"{OM}", True),
        (f"{OM};q=0", False),
        (f"{OM};version=1.0.0;q=0", False),
        (f"{OM};version=1.0.0;q=0, text/plain", False),
        (f"text/plain;q=0.9, {OM};version=1.0.0;q=0.5", False),
        (f"text/plain;version=0.0.4;q=0.9, {OM};version=1.0.0;q=0.5", False),
        (f"*/*;q=0.9, {OM};q=0.1", False),
        (f"text/plain;q=0.1, {OM};version=1.0.0;q=0.5", True),
        (f"{OM};version=0.0.1;q=0.9, {OM};version=1.0.0;q=0.8, text/plain;q=0.1", True),
        # What Prometheus 2 and 3 send.
        (
            f"{OM};version=1.0.0,{OM};version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        (
            f"{OM};version=1.0.0;escaping=allow-utf-8;q=0.6,{OM};version=0.0.1;q=0.5,"
            "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,"
            "*/*;q=0.2",
            True,
        ),
        ("", False),
        (";;;,,,q=1", False),
    ],
)
def test_accept_q_values(accept: str, openmetrics: bool) -> None:
    _, content_type = server.negotiate(accept)
    assert content_type.startswith(OM) is openmetrics, content_type


# --- item 7: control bytes in logs -------------------------------------------------------------


def test_control_bytes_from_requests_are_escaped_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pixcrawler_exporter")
    nasty = [
        b"GET /\x1b[31mred\x1b[0m HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a\rFAKE LOG LINE HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\x00nul HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x1b]0;title\x07 / HTTP/1.1\r\n\r\n",
        b"GET /\x9b31m HTTP/1.1\r\nHost: x\r\n\r\n",  # the 8-bit CSI
        b"GET /back\\x1b HTTP/1.1\r\nHost: x\r\n\r\n",  # a literal backslash stays unambiguous
    ]
    with running() as port:
        for request in nasty:
            exchange(port, request)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "\\x1b[31mred" in text and "\\x00nul" in text and "\\x9b31m" in text
    assert "\\\\x1b" in text
    for control in ("\x1b", "\r", "\x00", "\x07", "\x9b"):
        assert control not in text, repr(control)
    assert http1.printable("a\nb\tc\x7f") == "a\\x0ab\\x09c\\x7f"


# --- item 8: a bcrypt flood must not block authenticated scrapes -------------------------------


@pytest.mark.slow
def test_bcrypt_flood_does_not_block_authenticated_scrapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_now, most = [0], [0]
    lock = threading.Lock()
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        try:
            return real(password, hashed)
        finally:
            with lock:
                running_now[0] -= 1

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    # Cost 10, htpasswd's default: each wrong password is a real bcrypt's worth of CPU.
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web = webconfig.load(write_web(tmp_path, {"basic_auth_users": {"prometheus": hashed}}))
    good = {"Authorization": basic("prometheus", PASSWORD)}
    # The default limits: 45 flooding clients fit in the connection threads, as in the issue.
    with running(web=web) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        assert http_get(url, good)[0] == 200  # Prometheus's credentials, checked once
        stop = threading.Event()
        flood_codes: list[int] = []

        def flood() -> None:
            while not stop.is_set():
                wrong = {"Authorization": basic("prometheus", secrets.token_hex(8))}
                try:
                    flood_codes.append(http_get(url, wrong, timeout=10)[0])
                except OSError:
                    flood_codes.append(0)

        flooders = [threading.Thread(target=flood, daemon=True) for _ in range(45)]
        for thread in flooders:
            thread.start()
        try:
            time.sleep(0.5)
            codes = []
            for _ in range(20):
                started = time.monotonic()
                codes.append(http_get(url, good)[0])
                assert time.monotonic() - started < 2
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in flooders:
                thread.join(15)
    assert codes == [200] * 20
    assert set(flood_codes) <= {401, 429}, set(flood_codes)
    # Checked in turn (45 fit in the line: test_auth_flood.py); a longer line is turned away.
    assert 401 in flood_codes
    assert most[0] == 1  # bcrypt runs one at a time


def test_denied_credentials_never_push_out_granted_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))
    auth = guard.BasicAuth({"prometheus": hashed})
    assert auth.check(basic("prometheus", PASSWORD), 10)
    calls: list[bytes] = []

    def denying(password: bytes, _hashed: bytes) -> bool:
        calls.append(password)
        return False

    monkeypatch.setattr(auth, "_checkpw", denying)
    for n in range(guard.CACHE_SIZE + 10):
        assert not auth.check(basic("prometheus", f"wrong{n}"), 10)
    calls.clear()
    assert auth.check(basic("prometheus", PASSWORD), 10)
    assert calls == []  # still cached: no bcrypt for the right password


@pytest.mark.parametrize(
    "authorization",
    ["", "Basic", "Basic !!!", "Bearer x", "Basic " + base64.b64encode(b"nocolon").decode()],
)
def test_malformed_credentials_cost_no_bcrypt(
    authorization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = guard.BasicAuth({"prometheus": bcrypt.hashpw(b"x", bcrypt.gensalt(4))})
    monkeypatch.setattr(auth, "_checkpw", lambda p, h: pytest.fail("bcrypt was run"))
    assert not auth.check(authorization, 10)


# --- item 9: liveness while every connection slot is taken -------------------------------------


@pytest.mark.slow
def test_healthy_answers_while_every_connection_is_held() -> None:
    limits = server.Limits(max_requests=2)
    with running(limits=limits) as port:
        held = hold(port, limits.connections)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        try:
            started = time.monotonic()
            for request, expected in (
                (b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n", [200]),
                (b"HEAD /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n", [200]),
                (b"GET /-/healthy?probe=1 HTTP/1.0\r\n\r\n", [200]),
                (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", [503]),
                (b"POST /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n", [503]),
                (b"GARBAGE\r\n\r\n", [503]),
            ):
                answer, closed = exchange(port, request)
                assert statuses(answer) == expected and closed, (request, answer)
            assert time.monotonic() - started < 3
            assert http_get(f"http://127.0.0.1:{port}/-/healthy")[2] == b"OK\n"
        finally:
            for sock in held + idle:
                sock.close()


def test_healthy_answers_over_tls_while_every_connection_is_held(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    doc = {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}}
    web = webconfig.load(write_web(tmp_path, doc))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    limits = server.Limits(max_requests=1)
    with running(web=web, limits=limits) as port:
        held = hold(port, limits.connections, ctx)
        try:
            for path, expected in (("/-/healthy", 200), ("/metrics", 503)):
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
                ):
                    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    assert statuses(tls.recv(4096)) == [expected]
            # Plain HTTP on the TLS port is told so, from the overflow too.
            answer, _ = exchange(port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"HTTP request to an HTTPS server" in answer
        finally:
            for sock in held:
                sock.close()


@pytest.mark.slow
def test_healthy_answers_with_max_requests_flag_under_load(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory("--web.max-requests", "3")
    port = int(exp.url.rsplit(":", 1)[1])
    held = hold(port, 6)
    try:
        for _ in range(5):
            assert exp.get("/-/healthy", timeout=3)[0] == 200
        assert exp.get("/metrics", timeout=3)[0] == 503
    finally:
        for sock in held:
            sock.close()


# --- item 10: signals --------------------------------------------------------------------------


@pytest.mark.slow
def test_hup_and_usr_signals_do_not_kill(exporter_factory: Callable[..., Exporter]) -> None:
    exp = exporter_factory()
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        exp.proc.send_signal(sig)
        time.sleep(0.2)
        assert exp.proc.poll() is None, exp.log()
        assert exp.get("/-/healthy")[0] == 200
    log = exp.log()
    # SIGHUP reloads the configuration (test_lifecycle.py tests what a reload does).
    assert log.count("configuration reloaded") == 2
    assert "signal=SIGUSR1" in log and "signal=SIGUSR2" in log


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_during_a_scrape_answers_the_scrape(tmp_path: Path) -> None:
    # A database that accepts connections and never answers makes a scrape last its deadline.
    silent = socket.create_server(("127.0.0.1", 0))
    url = f"postgresql://u:p@127.0.0.1:{silent.getsockname()[1]}/db"
    exp = spawn_exporter(tmp_path, env={"PIXCRAWLER_DB_URL": url})
    try:
        deadline = time.monotonic() + 20
        while True:
            assert exp.proc.poll() is None and time.monotonic() < deadline, exp.log()
            try:
                if exp.get("/-/healthy", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        result: list[tuple[int, bytes]] = []

        def scrape() -> None:
            status, _, body = exp.get("/metrics", {server.SCRAPE_TIMEOUT_HEADER: "3"}, timeout=20)
            result.append((status, body))

        scraping = threading.Thread(target=scrape)
        scraping.start()
        time.sleep(1.0)
        assert not result, "the scrape did not last long enough to be interrupted"
        exp.proc.send_signal(signal.SIGTERM)
        scraping.join(20)
        assert result and result[0][0] == 200, exp.log()
        assert b"pixcrawler_exporter_build_info" in result[0][1]
        assert exp.proc.wait(20) == 0
    finally:
        stop_process(exp.proc)
        silent.close()


# --- item 16: web config -----------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, str]:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    return {"cert_file": "server.crt", "key_file": "server.key"}


@pytest.mark.parametrize(
    ("tls", "named"),
    [
        ({"cert_file": "missing.crt", "key_file": "server.key"}, "missing.crt: no such file"),
        ({"cert_file": "server.crt", "key_file": "missing.key"}, "missing.key: no such file"),
        (
            {"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "missing-ca.crt"},
            "missing-ca.crt: no such file",
        ),
        ({"cert_file": ".", "key_file": "server.key"}, "not a regular file (a directory)"),
    ],
    ids=["cert", "key", "client-ca", "directory"],
)
def test_missing_tls_files_are_named(
    tmp_path: Path, pair: dict[str, str], tls: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as err:
        webconfig.load(write_web(tmp_path, {"tls_server_config": {**pair, **tls}}))
    assert named in str(err.value) and "None" not in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_unusable_bcrypt_variants_are_refused_at_load(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # $2b$
    rest = hashed[4:]
    for variant in ("$2$", "$2x$", "$2c$"):
        doc = {"basic_auth_users": {"alice": variant + rest}}
        with pytest.raises(ConfigError, match=r"not a bcrypt hash .*\$2x\$ not") as err:
            webconfig.load(write_web(tmp_path, doc))
        assert rest not in str(err.value)  # the hash stays out of the message
    for variant in ("$2a$", "$2b$", "$2y$"):
        web = webconfig.load(write_web(tmp_path, {"basic_auth_users": {"alice": variant + rest}}))
        assert guard.BasicAuth(web.users).check(basic("alice", PASSWORD), 10)


def test_web_config_missing_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match=r"nope\.yml"):
        webconfig.load(missing)


# --- items 1 and 2: database secrets -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://r_q:hunt?erQ2@127.0.0.1:25432/pixcrawler", "hunt?erQ2"),
        ("postgresql://u:p#w@h/db", "p#w"),
        ("postgresql://u:a:b:c@h/db", "a:b:c"),
        ("postgresql://u:p%40ss%2Fw@h/db", "p%40ss%2Fw"),
        ("postgresql://u:%3Cr%3E@h/db", "%3Cr%3E"),
        ("postgresql://h/db?user=u&password=hunter2", "hunter2"),
        ("postgresql://h/db?user=u&pass%77ord=hunter2", "hunter2"),
        ("postgresql://h/db?password=first&password=second", "second"),
        ("postgresql://u:pw@h/db?sslpassword=keypass&sslmode=require", "keypass"),
        ("postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=any", ":pw@"),
    ],
)
def test_redaction_follows_libpq(url: str, secret: str) -> None:
    shown = dsn.redact_url(url)
    assert secret not in shown
    read = dsn.options(shown)
    assert {read.get(k) for k in dsn.SECRET_KEYS} <= {config.REDACTED, None}
    original = dsn.options(url)
    assert {k: v for k, v in read.items() if k not in dsn.SECRET_KEYS} == {
        k: v for k, v in original.items() if k not in dsn.SECRET_KEYS
    }


@pytest.mark.parametrize(
    ("url", "pieces"),
    [
        ("postgresql://u:pa/ss@h/db", ("pa/ss", "ss@h")),  # libpq: host u, port pa, db ss@h/db
        ("postgresql://u:a@b@h/db", ("a@b",)),  # libpq: password a, host b@h
        ("postgresql://u:p w@h/db", ("p w",)),  # libpq refuses, quoting the password
        ("postgresql://u:p%zzw@h/db", ("p%zzw",)),  # a bad escape, quoted by libpq too
        ("postgresql://h/db?password=x&application_name=a@b", ("a@b",)),
    ],
)
def test_ambiguous_urls_are_refused_at_load_without_quoting_them(
    tmp_path: Path, url: str, pieces: tuple[str, ...]
) -> None:
    done = run_cli(tmp_path, "--print-config", env={"PIXCRAWLER_DB_URL": url})
    assert done.returncode == 2, done.stdout
    assert "PIXCRAWLER_DB_URL" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    for piece in pieces:
        assert piece not in done.stderr


def test_a_short_password_is_redacted_as_a_field_not_as_text() -> None:
    # Password "x": the error used to read "pi<redacted>crawler", which gives it away.
    collector = DatabaseCollector(
        f"postgresql://pixcrawler:x@127.0.0.1:{closed_port()}/pixcrawler", (), 1.0, 1.0, 0.0
    )
    try:
        reading = collector.read()
    finally:
        collector.close()
    assert reading.error is not None and not reading.up
    assert "pixcrawler:<redacted>@127.0.0.1" in reading.error
    assert "/pixcrawler" in reading.error and "<redacted>crawler" not in reading.error


def closed_port() -> int:
    return free_port()  # one of this worker's: the other worker never serves on it


def test_a_raw_reserved_character_in_the_password_never_leaks(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    secret = "hunt?erQ2"
    url = f"postgresql://r_q:{secret}@127.0.0.1:{closed_port()}/pixcrawler"
    exp = exporter_factory(env={"PIXCRAWLER_DB_URL": url})
    answers = [exp.get(path)[2].decode() for path in ("/health", "/status", "/metrics")]
    printed = run_cli(tmp_path, "--print-config", env={"PIXCRAWLER_DB_URL": url}).stdout
    for text in (*answers, printed, exp.log()):
        assert "hunt" not in text and "erQ2" not in text
    assert "r_q:<redacted>@127.0.0.1" in answers[0]  # /health names the database, redacted
    assert "r_q:<redacted>@127.0.0.1" in exp.log()


def test_libpq_connects_with_the_password_it_reads(postgres: PostgresServer) -> None:
    role = "r_q_hostile"
    postgres.execute(f"DROP ROLE IF EXISTS {role}", database="postgres")
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'hunt?erQ2/@#x'", database="postgres")
    database = dsn.options(postgres.url)["dbname"]
    query = Query("hostile_one", "One.", "SELECT 1 AS v", ("v",))
    readings = []
    try:
        for written in ("hunt?erQ2%2F%40%23x", "hunt?erQ3%2F%40%23x"):  # right, then wrong
            raw = f"postgresql://{role}:{written}@127.0.0.1:{postgres.port}/{database}"
            collector = DatabaseCollector(raw, (query,), 2.0, 2.0, 0.0)
            collector.start()
            try:
                readings.append(collector.read())
            finally:
                collector.close()
            assert "hunt" not in collector.target
    finally:
        postgres.execute(f"DROP ROLE IF EXISTS {role}", database="postgres")
    assert readings[0].up, readings[0].error
    assert readings[1].reason == "auth" and readings[1].error is not None
    assert "hunt" not in readings[1].error and "%2F" not in readings[1].error


# --- item 13: one statement per custom query ---------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS v; COMMIT; BEGIN READ WRITE; DELETE FROM hostile_scratch; COMMIT",
        "SELECT 1 AS v; DELETE FROM hostile_scratch",
        "COMMIT; DELETE FROM hostile_scratch; SELECT 1 AS v",
        "ROLLBACK; SET statement_timeout = 0; SELECT 1 AS v, pg_sleep(4)",
        "COMMIT; SELECT 1 AS v, pg_sleep(4)",
        "SELECT 1 AS v; /* */ SELECT 2 AS v",
        "SELECT set_config('transaction_read_only', 'off', true) AS v",
        "SELECT set_config('statement_timeout', '0', false), pg_sleep(4) AS v",
        "WITH gone AS (DELETE FROM hostile_scratch RETURNING 1) SELECT count(*) AS v FROM gone",
    ],
)
def test_a_custom_query_cannot_leave_its_read_only_transaction_or_timeout(
    postgres: PostgresServer, sql: str
) -> None:
    postgres.execute(
        "DROP TABLE IF EXISTS hostile_scratch; CREATE TABLE hostile_scratch (id int);"
        "INSERT INTO hostile_scratch SELECT generate_series(1, 5);"
        "GRANT ALL ON hostile_scratch TO PUBLIC;"
    )
    collector = DatabaseCollector(
        postgres.url, (Query("hostile_q", "Q.", sql, ("v",)),), 1.0, 2.0, 0.0
    )
    collector.start()
    try:
        started = time.monotonic()
        reading = collector.read()
        took = time.monotonic() - started
        # The connection the query ran on is still read-only with its timeout, for the next one.
        again = collector.read()
    finally:
        collector.close()
    assert not reading.up and reading.reason in ("query", "timeout", "permission"), reading
    assert not again.up
    assert took < 2.5
    assert postgres.query("SELECT count(*) FROM hostile_scratch") == [(5,)]


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1 AS v;", "SELECT 1 AS v -- ; DELETE FROM hostile_scratch", "SELECT ';' AS x, 1 AS v"],
)
def test_one_statement_with_semicolons_in_it_still_runs(postgres: PostgresServer, sql: str) -> None:
    collector = DatabaseCollector(
        postgres.url, (Query("hostile_q", "Q.", sql, ("v",)),), 1.0, 2.0, 0.0
    )
    collector.start()
    try:
        reading = collector.read()
    finally:
        collector.close()
    assert reading.up, reading.error
    assert reading.samples["hostile_q"] == (((), 1.0),)


# --- item 11: paths that are not UTF-8 ---------------------------------------------------------


def test_a_non_utf8_temp_dir_never_breaks_a_scrape(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffdir")
    os.mkdir(odd)
    with open(os.path.join(odd, "a.jpg"), "wb") as fh:
        fh.write(b"x" * 100)
    missing = os.fsdecode(os.fsencode(str(tmp_path)) + b"/gone\xfe\x80")
    exp = exporter_factory(
        "--collector.disk",
        env={"PIXCRAWLER_TEMP_DIRS": f"{odd}:{missing}", "PIXCRAWLER_DISK_PATHS": odd},
    )
    deadline = time.monotonic() + 10
    while True:
        status, _, body = exp.get("/metrics")
        assert status == 200, body[:500]
        if b'bad\\\\xffdir"} 100.0' in body or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert b'bad\\\\xffdir"} 100.0' in body  # escaped, and its file counted
    assert b"gone\\\\xfe\\\\x80" in body
    for path in ("/status", "/health"):
        assert exp.get(path)[0] in (200, 503)
    assert "Traceback" not in exp.log()


def test_label_values_are_always_utf8() -> None:
    family = GaugeMetricFamily("hostile_labels", "Labels.", labels=["path"])
    for value in ("plain", "caf\u00e9", "bad\udcffdir", "lone\ud800surrogate"):
        metrics.add(family, 1, value)
    text = generate_latest(Families([family])).decode()
    assert 'path="bad\\\\xffdir"' in text and 'path="caf\u00e9"' in text
    assert 'path="lone\\\\ud800surrogate"' in text


class Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


# --- item 17: trees deeper than PATH_MAX -------------------------------------------------------


def test_a_tree_deeper_than_path_max_is_reported_in_one_short_error(tmp_path: Path) -> None:
    levels, name = 150, "d" * 50  # about 7.5 KB deep: beyond PATH_MAX from level 80
    fds = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for depth in range(levels):
            if depth in (10, 60, 100, levels - 1):
                fd = os.open("f.jpg", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fds[-1])
                os.write(fd, b"x" * 10)
                os.close(fd)
            os.mkdir(name, dir_fd=fds[-1])
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        started = time.monotonic()
        result = tempscan.scan(str(tmp_path), ["*.jpg"], True)
        took = time.monotonic() - started
    finally:
        # shutil.rmtree recurses once per level: deeper than Python's recursion limit.
        for depth in range(len(fds) - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.unlink("f.jpg", dir_fd=fds[depth - 1])
            os.close(fds[depth])
            os.rmdir(name, dir_fd=fds[depth - 1])
        os.close(fds[0])
    assert (result.files, result.bytes) == (2, 20)  # depth 10 and 60; 100 and 149 too deep
    assert len(result.errors) == 1, [e[:100] for e in result.errors]
    assert len(result.errors[0]) < 300 and "PATH_MAX" in result.errors[0]
    assert result.errors[0].startswith(str(tmp_path))
    assert took < 5


# --- items 14 and 15: numbers, duplicate keys and .env lines -----------------------------------

HUGE = "1" + "0" * 400


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"poll_interval_seconds: {HUGE}\n", 1),
        ("log:\n  level: info\npoll_interval_seconds: " + "7" * 5000 + "\n", 3),
        (f"poll_interval_seconds: -{HUGE}\n", 1),
        ("poll_interval_seconds: 0x" + "f" * 100 + "\n", 1),
        ("poll_interval_seconds: 1\npoll_interval_seconds: 2\n", 2),
        ("log:\n  level: info\n  format: text\n  level: debug\n", 4),
        ("log: {level: info, level: debug}\n", 1),
    ],
    ids=["400-zeros", "5000-digits", "negative", "hex", "duplicate", "duplicate-nested", "flow"],
)
def test_yaml_numbers_and_duplicate_keys_are_refused_with_their_line(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"config\.yml is not valid YAML at line {line}\b"):
        config.load({}, {}, str(path), dotenv_path=tmp_path / "none.env")


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("x: &base {level: info}\n")
    with pytest.raises(ConfigError, match=r"x in .*unknown setting"):  # read, then refused by name
        config.load({}, {}, str(path), dotenv_path=tmp_path / "none.env")
    path.write_text("log:\n  <<: {level: info}\n  format: json\n")
    loaded = config.load({}, {}, str(path), dotenv_path=tmp_path / "none.env")
    assert (loaded.config.log.level, loaded.config.log.format) == ("info", "json")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIXCRAWLER_POLL_INTERVAL_SECONDS", HUGE),
        ("PIXCRAWLER_POLL_INTERVAL_SECONDS", "9" * 5000),
        ("PIXCRAWLER_WEB_MAX_REQUESTS", "9" * 5000),
        ("PIXCRAWLER_WEB_MAX_REQUESTS", HUGE),
        ("PIXCRAWLER_SCRAPE_TIMEOUT_SECONDS", "1e400"),
    ],
)
def test_huge_numbers_in_variables_are_refused(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"environment variable {name}") as err:
        config.load({name: value}, {}, None, dotenv_path=tmp_path / "none.env")
    assert len(str(err.value)) < 200


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('PIXCRAWLER_LOG_LEVEL="9\n', 1),
        ("PIXCRAWLER_LOG_LEVEL=info\nPIXCRAWLER_DB_URL='postgresql://u:p@h/db\n", 2),
        ("# comment\n\nPIXCRAWLER_LOG_LEVEL=info\n===\n", 4),
    ],
)
def test_an_unparsable_dotenv_line_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int
) -> None:
    env = tmp_path / ".env"
    env.write_text(text)
    with pytest.raises(ConfigError, match=rf"\.env line {line}: not a KEY=value line") as err:
        config.load({}, {}, None, dotenv_path=env)
    assert "postgresql" not in str(err.value)  # the line is not quoted: it may hold a secret


@pytest.mark.parametrize("subcommand", [(), ("rules",)])
def test_the_issues_examples_exit_2_with_one_line(
    tmp_path: Path, subcommand: tuple[str, ...]
) -> None:
    for text in (f"poll_interval_seconds: {HUGE}\n", "poll_interval_seconds: " + "5" * 5000):
        (tmp_path / "config.yml").write_text(text)
        done = run_cli(tmp_path, *subcommand, "--config", "config.yml")
        assert done.returncode == 2, done.stderr[-500:]
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert "config.yml is not valid YAML at line 1" in done.stderr
    (tmp_path / "config.yml").write_text("")
    (tmp_path / ".env").write_text('PIXCRAWLER_LOG_LEVEL="9\n')
    done = run_cli(tmp_path, *subcommand, "--config", "config.yml")
    assert done.returncode == 2 and ".env line 1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_duplicate_keys_in_the_web_config_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("rate_limit:\n  burst: 1\n  burst: 100\n  interval: 1s\n")
    with pytest.raises(ConfigError, match="at line 3"):
        webconfig.load(str(path))


# --- item 12: custom query metric names --------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        "pixcrawler_threshold",  # derived: rendered apart, two HELP lines
        "pixcrawler_resource_status",
        "pixcrawler_chunks_available",
        "pixcrawler_memory_limit_bytes",  # a collector's: client_python refused it (exit 1)
        "pixcrawler_exporter_build_info",
        "pixcrawler_exporter_collector_success",
        "pixcrawler_temp_storage_scan_errors_total",
        "pixcrawler_temp_storage_scan_errors",  # the counter's family name
        "pixcrawler_azure_up",
        # Series of a family that OpenMetrics writes beside it: broke the output (issue 21).
        "pixcrawler_database_errors_created",
        "pixcrawler_celery_task_runtime_seconds_bucket",
        "pixcrawler_celery_task_queue_wait_seconds_count",
    ],
)
def test_a_query_may_not_take_a_builtin_metric_name(tmp_path: Path, metric: str) -> None:
    query = {"metric": metric, "help": "Mine.", "sql": "SELECT 1 AS v", "values": ["v"]}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"database": {"queries": [query]}}))
    with pytest.raises(ConfigError, match=f"the query for {metric} takes the name") as err:
        config.load({}, {}, str(path), dotenv_path=tmp_path / "none.env")
    assert "config.yml" in str(err.value)


def test_every_builtin_name_is_refused_and_a_new_one_is_not(tmp_path: Path) -> None:
    from pixcrawler_exporter.collect import registry

    names = registry.builtin_names()
    assert len(names) > 40 and "pixcrawler_threshold" in names
    query = {"metric": "pixcrawler_site_rows", "help": "Mine.", "sql": "SELECT 1 AS v"}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"database": {"queries": [{**query, "values": ["v"]}]}}))
    loaded = config.load({}, {}, str(path), dotenv_path=tmp_path / "none.env")
    assert loaded.config.source(DatabaseSettings).queries[0].metric == "pixcrawler_site_rows"


def test_the_collision_exits_2_with_one_line(tmp_path: Path) -> None:
    query = {"metric": "pixcrawler_memory_limit_bytes", "help": "M.", "sql": "SELECT 1 AS v"}
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"database": {"queries": [{**query, "values": ["v"]}]}})
    )
    done = run_cli(tmp_path, "--config", "config.yml", "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert (
        len(done.stderr.strip().splitlines()) == 1
        and "pixcrawler_memory_limit_bytes" in done.stderr
    )


# --- item 18: what a KQL query may turn into ---------------------------------------------------


def kql_table(columns: dict[str, str], rows: list[list[object]]) -> LogsTable:
    """A primary table as the SDK hands it over, columns with their Log Analytics types."""
    types = list(columns.values())
    return LogsTable(name="PrimaryResult", columns=list(columns), columns_types=types, rows=rows)


def test_kql_rows_are_capped() -> None:
    query = parse_log_queries([{"name": "many", "query": "T", "label_columns": ["n"]}])[0]
    rows: list[list[object]] = [[str(n), n] for n in range(azure_parse.MAX_LOG_ROWS + 1)]
    table = kql_table({"n": "string", "value": "long"}, rows)
    with pytest.raises(azure_parse.CallFailedError, match="more than 10000 rows"):
        azure_parse.log_rows(query, [table])
    fewer = kql_table({"n": "string", "value": "long"}, rows[:-1])
    assert len(azure_parse.log_rows(query, [fewer])) == azure_parse.MAX_LOG_ROWS


@pytest.mark.parametrize("kind", ["datetime", "guid", "dynamic"])
def test_kql_label_columns_of_unbounded_types_are_refused(kind: str) -> None:
    query = parse_log_queries([{"name": "q", "query": "T", "label_columns": ["when"]}])[0]
    table = kql_table({"when": kind, "value": "long"}, [["2026-01-01T00:00:00Z", 1]])
    with pytest.raises(azure_parse.CallFailedError, match=f"holds {kind} values"):
        azure_parse.log_rows(query, [table])


@pytest.mark.parametrize("column", ["TimeGenerated", "_ItemId", "_TimeReceived", "timegenerated"])
def test_kql_per_record_label_columns_are_refused_at_load(column: str) -> None:
    with pytest.raises(ValueError, match=f"label column '{column}' differs for every record"):
        parse_log_queries([{"name": "q", "query": "T", "label_columns": [column]}])


def test_free_text_scrubbing_never_gives_a_short_secret_away() -> None:
    # The database no longer scrubs free text at all (see above); Azure still scrubs its
    # messages, as a service might quote a secret back, but never by a substring found by chance.
    assert errors.scrub("database pixcrawler is down", "x") == "database pixcrawler is down"
    secret = "s3cr3t-Value~that.must-never_appear"
    assert (
        errors.scrub(f"bad host {secret.lower()}.example", secret) == "bad host <redacted>.example"
    )
    assert errors.scrub("nothing here", None) == "nothing here"
