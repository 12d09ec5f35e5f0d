"""Endpoints: what a request gets, whatever connection it came on.

The scrape deadline from ``X-Prometheus-Scrape-Timeout-Seconds``, content negotiation (q-values
honoured), shared renders of one collection, the landing page and liveness.
"""

from __future__ import annotations

import functools
import html
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from isal import igzip
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from pixcrawler_exporter import __version__
from pixcrawler_exporter.web import exposition, http1, identity

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
# Below this a scrape could not read anything; a tiny header value is treated as this.
MIN_SCRAPE_SECONDS = 0.1
# Above this the header is a client's attempt to hold a request slot (or to overflow a
# timestamp), not a Prometheus scrape timeout: it is clamped to this.
MAX_SCRAPE_SECONDS = 120.0
# Below this size gzip costs more time than the bytes it saves on any network.
GZIP_MIN_BYTES = 1024
# ISA-L's level 1 (python-isal): a scrape of 23 KB in 52 µs, to 5.5 KB; zlib's level 1 took
# 236 µs to 5.7 KB, a tenth of the CPU of a whole scrape.
GZIP_LEVEL = 1


def gzipped(body: bytes) -> bytes:
    """``body`` as a gzip member, the same bytes for the same body (no timestamp)."""
    return igzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    # When its head had been read (time.monotonic()): time spent before the handler runs, in
    # line for a bcrypt, counts against the scrape's deadline.
    arrived: float = field(default_factory=time.monotonic)

    def timeout(self, default: float, offset: float) -> float:
        """What is left of the scrape's deadline (see :func:`scrape_timeout`)."""
        full = scrape_timeout(self.headers, default, offset)
        return max(MIN_SCRAPE_SECONDS, full - (time.monotonic() - self.arrived))


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


READ_ONLY = ("GET", "HEAD")


@dataclass(frozen=True)
class Route:
    handler: Callable[[Request], Response]
    description: str
    # Public routes skip authentication, the rate limit and the request limit: liveness probes
    # must pass while scrapes are refused.
    public: bool = False
    methods: tuple[str, ...] = READ_ONLY  # what else is answered 405


def scrape_timeout(headers: Mapping[str, str], default: float, offset: float) -> float:
    """Seconds a scrape may take: Prometheus's own timeout less an offset, so the answer arrives
    before Prometheus gives up; ``default`` when the header is absent or not a number."""
    raw = headers.get(SCRAPE_TIMEOUT_HEADER)
    try:
        given = float(raw) if raw is not None else None
    except ValueError:
        given = None
    if given is None or not given > 0:  # absent, garbage, zero or NaN
        return default
    return min(MAX_SCRAPE_SECONDS, max(MIN_SCRAPE_SECONDS, given - offset))


_FORMATS = ("application/openmetrics-text", "text/plain", "text/*", "*/*")


def negotiate(accept: str | None) -> tuple[Callable[[Any], bytes], str]:
    """client_python's encoder for the best format ``accept`` allows (q-values honoured): an
    OpenMetrics version it cannot write is passed over, text is the fallback."""
    for element in http1.acceptable(accept, _FORMATS):
        encoder, content_type = choose_encoder(element)
        if not element.lower().startswith("application/") or content_type.startswith(
            "application/"
        ):
            return encoder, content_type
    return choose_encoder("")


@functools.lru_cache(maxsize=64)
def _answer(
    accept: str | None, accept_encoding: str | None
) -> tuple[exposition.Encoder, str, bool]:
    """The encoder, content type and whether to gzip, for a scrape's Accept and Accept-Encoding:
    a scraper sends the same two every time, so they are parsed once."""
    chosen, content_type = negotiate(accept)
    compress = http1.accepts(accept_encoding, "gzip")
    return exposition.encoder(content_type, chosen), content_type, compress


class _SharedRenders:
    """Scrapes that ask for the same encoding while one is being rendered take its bytes.

    The scraper already shares one collection between concurrent scrapes; this shares what costs
    as much again, encoding and compressing it. A scrape that joins gets nothing older than a
    collection still under way when it arrived, as with the scraper.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, bool], Future[tuple[bytes, bool]]] = {}

    def get(
        self, key: tuple[str, bool], timeout: float, render: Callable[[], tuple[bytes, bool]]
    ) -> tuple[bytes, bool]:
        with self._lock:
            running = self._running.get(key)
            if running is None:
                mine: Future[tuple[bytes, bool]] = Future()
                self._running[key] = mine
        if running is not None:
            try:
                return running.result(timeout)
            except TimeoutError:  # that render's deadline was longer than ours
                return render()
        try:
            body = render()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._running[key]
        mine.set_result(body)
        return body


def metrics_route(
    collect: Callable[[float], Iterable[Metric]], default_timeout: float, offset: float
) -> Route:
    shared = _SharedRenders()

    def handle(request: Request) -> Response:
        timeout = request.timeout(default_timeout, offset)
        headers = request.headers
        encoder, content_type, compress = _answer(
            headers.get("Accept"), headers.get("Accept-Encoding")
        )

        def render() -> tuple[bytes, bool]:
            body = encoder(collect(timeout))
            if compress and len(body) > GZIP_MIN_BYTES:
                return gzipped(body), True
            return body, False

        body, compressed = shared.get((content_type, compress), timeout, render)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if compressed else {}
        return Response(HTTPStatus.OK, body, content_type, headers)

    return Route(handle, "Prometheus metrics")


def healthy_route() -> Route:
    # Says which process answers, so that the image's health check can tell this exporter from
    # another server at the same address.
    headers = {identity.HEADER: identity.own_token()}
    return Route(
        lambda _request: Response(HTTPStatus.OK, b"OK\n", headers=headers),
        "Liveness: 200 while the process serves",
        public=True,
    )


def landing(routes: Mapping[str, Route]) -> Callable[[Request], Response]:
    items = "\n".join(
        f'<li><a href="{html.escape(path)}">{html.escape(path)}</a>: '
        f"{html.escape(route.description)}</li>"
        for path, route in routes.items()
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>PixCrawler Exporter</title></head>\n<body>\n"
        f"<h1>PixCrawler Exporter</h1>\n<p>Version {html.escape(__version__)}</p>\n"
        f"<ul>\n{items}\n</ul>\n</body></html>\n"
    ).encode()
    return lambda _request: Response(HTTPStatus.OK, page, "text/html; charset=utf-8")


def public_answer(
    routes: Mapping[str, Route], raw: bytes, headers: Mapping[str, str], server: str
) -> bytes | None:
    """The whole answer of a public route (liveness) to the request line ``raw``, for a
    connection no thread is left for; None for anything else. Never blocks."""
    try:
        line = http1.parse_request_line(raw)
        path = line.target.partition("?")[0]
        route = routes.get(path)
        if route is None or not route.public or line.method not in ("GET", "HEAD"):
            return None
        response = route.handler(Request(line.method, path, http1.Fields(())))
    except Exception:  # noqa: BLE001 - a bad line, or a failing route: no answer of its own
        return None
    return http1.response_bytes(
        response.status,
        response.content_type,
        response.body,
        {**headers, **response.headers, "Connection": "close"},
        server,
        line.method == "GET",
    )
