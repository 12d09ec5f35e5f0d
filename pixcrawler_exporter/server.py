"""The HTTP layer: endpoints, content negotiation and scrape deadlines; nothing about sources."""

from __future__ import annotations

import gzip
import html
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from pixcrawler_exporter import __version__

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
# Below this a scrape could not read anything; a tiny header value is treated as this.
MIN_SCRAPE_SECONDS = 0.1


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    handler: Callable[[Request], Response]
    description: str


class _Families:
    """What client_python's encoders call ``collect()`` on."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


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
    return max(MIN_SCRAPE_SECONDS, given - offset)


def metrics_route(
    collect: Callable[[float], Iterable[Metric]], default_timeout: float, offset: float
) -> Route:
    def handle(request: Request) -> Response:
        timeout = scrape_timeout(request.headers, default_timeout, offset)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(_Families(collect(timeout)))
        return Response(HTTPStatus.OK, body, content_type)

    return Route(handle, "Prometheus metrics")


def healthy_route() -> Route:
    return Route(
        lambda _request: Response(HTTPStatus.OK, b"OK\n"),
        "Liveness: 200 while the process serves",
    )


def _landing(routes: Mapping[str, Route]) -> Callable[[Request], Response]:
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


class _Handler(BaseHTTPRequestHandler):
    routes: Mapping[str, Route] = {}
    server_version = f"pixcrawler-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    # An idle or slow client is dropped after this, so it cannot hold a thread for ever.
    timeout = 30

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>; every method but GET and HEAD gets 405, not 501.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(
            Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"Method not allowed\n",
                headers={"Allow": "GET, HEAD"},
            ),
            send_body=True,
        )

    def _serve(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        route = self.routes.get(path)
        if route is None:
            self._send(Response(HTTPStatus.NOT_FOUND, b"Not found\n"), send_body)
            return
        request = Request(self.command, path, {k: v for k, v in self.headers.items()})
        try:
            response = route.handler(request)
        except Exception:
            log.exception("request failed", extra={"path": path})
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"Internal server error\n")
        self._send(response, send_body)

    def _send(self, response: Response, send_body: bool) -> None:
        body = response.body
        headers = dict(response.headers)
        if len(body) > 1024 and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Access logs at debug: a scrape every 15 s is not news.
        log.debug(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 drops simultaneous connections into SYN retries.
    request_queue_size = 128


class _DualStackServer(Server):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # Answer IPv4 too, whatever the host's net.ipv6.bindv6only says.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve(listen: str, routes: Mapping[str, Route]) -> Server:
    """Bind (so start-up fails at once on a taken port); the caller runs ``serve_forever``.

    ``routes`` are the endpoints besides ``/``, the landing page that links to them.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    handler = type(
        "Handler",
        (_Handler,),
        {"routes": {"/": Route(_landing(routes), "This page"), **routes}},
    )
    try:
        if host == "":
            try:
                return _DualStackServer(("::", int(port)), handler)
            except OSError:  # no IPv6 on this host
                return Server(("0.0.0.0", int(port)), handler)  # noqa: S104 - ':PORT' asks for it
        if ":" in host:
            return _DualStackServer((host, int(port)), handler)
        return Server((host, int(port)), handler)
    except OSError as exc:
        raise OSError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
