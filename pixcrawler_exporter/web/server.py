"""The HTTP layer: endpoints, content negotiation, scrape deadlines, TLS, auth and limits.

Nothing here knows about sources. Every connection gets a thread, but only so many: beyond
``Limits.connections`` the accepting thread answers 503 itself, beyond ``Limits.max_requests``
requests in flight a connection thread does; no request waits in a queue. Every read and write
has a deadline for its whole phase (see netio), so idle and slow clients are dropped.
"""

from __future__ import annotations

import gzip
import html
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from pixcrawler_exporter import __version__
from pixcrawler_exporter.web import netio
from pixcrawler_exporter.web.guard import CHALLENGE, BasicAuth, RateLimiter
from pixcrawler_exporter.web.webconfig import TLSContexts, WebConfig

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
# Below this a scrape could not read anything; a tiny header value is treated as this.
MIN_SCRAPE_SECONDS = 0.1
# Below this size gzip costs more time than the bytes it saves on any network.
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class Limits:
    """How much any client may take. Only ``max_requests`` is a flag; the rest are for tests."""

    max_requests: int = 40
    max_connections: int = 0  # 0: twice max_requests, so 503s can still be answered in HTTP
    request_timeout: float = 30.0  # idle keep-alive, request line and headers, together
    write_timeout: float = 30.0  # each response write
    handshake_timeout: float = 10.0
    # Prometheus sends a few hundred bytes; a URL or header block beyond this is no scraper's.
    max_request_line: int = 8192
    max_header_bytes: int = 8192

    @property
    def connections(self) -> int:
        return self.max_connections or 2 * self.max_requests


class Headers(Mapping[str, str]):
    """Request headers, looked up without regard to case as HTTP wants."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items = {k.lower(): v for k, v in items}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


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
    # Public routes skip authentication, the rate limit and the request limit: liveness probes
    # must pass while scrapes are refused.
    public: bool = False


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
        timeout = scrape_timeout(request.headers, default_timeout, offset)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        compress = "gzip" in request.headers.get("Accept-Encoding", "")

        def render() -> tuple[bytes, bool]:
            body: bytes = encoder(_Families(collect(timeout)))
            if compress and len(body) > GZIP_MIN_BYTES:
                return gzip.compress(body, compresslevel=6), True
            return body, False

        body, compressed = shared.get((content_type, compress), timeout, render)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if compressed else {}
        return Response(HTTPStatus.OK, body, content_type, headers)

    return Route(handle, "Prometheus metrics")


def healthy_route() -> Route:
    return Route(
        lambda _request: Response(HTTPStatus.OK, b"OK\n"),
        "Liveness: 200 while the process serves",
        public=True,
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


_BUSY = Response(
    HTTPStatus.SERVICE_UNAVAILABLE,
    b"Too many requests in flight, retry later\n",
    headers={"Retry-After": "1", "Connection": "close"},
)
_UNAUTHORIZED = Response(
    HTTPStatus.UNAUTHORIZED, b"Unauthorized\n", headers={"WWW-Authenticate": CHALLENGE}
)
_RATE_LIMITED = Response(HTTPStatus.TOO_MANY_REQUESTS, b"Too many requests\n")
_NOT_FOUND = Response(HTTPStatus.NOT_FOUND, b"Not found\n")


class _Handler(BaseHTTPRequestHandler):
    routes: Mapping[str, Route] = {}
    server: Server
    server_version = f"pixcrawler-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    # HTTP/0.9 answers have no status line; garbage deserves a readable 400 instead.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.connection = self.request
        # Each response leaves in one write, so Nagle's delay would only add latency.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._deadline = netio.Deadline()
        self.rfile = io.BufferedReader(netio.DeadlineReader(self.connection, self._deadline))
        self.wfile = netio.DeadlineWriter(self.connection, self.server.limits.write_timeout)

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self._deadline.arm(limits.request_timeout)
        try:
            self.raw_requestline = self.rfile.readline(limits.max_request_line + 1)
            if len(self.raw_requestline) > limits.max_request_line:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            getattr(self, "do_" + self.command)()
        except (TimeoutError, OSError) as exc:
            # Slow, idle or gone: drop the connection, it is not worth a log line above debug.
            log.debug("connection dropped", extra={"client": self.address_string(), "error": exc})
            self.close_connection = True

    def parse_request(self) -> bool:
        rfile = self.rfile
        self.rfile = netio.HeaderBudget(rfile, self.server.limits.max_header_bytes)
        try:
            return super().parse_request()
        finally:
            self.rfile = rfile

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
        # The body of a POST is never read, so the connection cannot carry another request.
        headers = {"Allow": "GET, HEAD", "Connection": "close"}
        self._send(
            Response(HTTPStatus.METHOD_NOT_ALLOWED, b"Method not allowed\n", headers=headers)
        )

    def _serve(self, send_body: bool) -> None:
        path = self.path.partition("?")[0]
        route = self.routes.get(path)
        if route is not None and route.public:
            self._send(self._run(route, path), send_body)
            return
        server = self.server
        if server.limiter is not None and not server.limiter.allow():
            self._send(_RATE_LIMITED, send_body)
            return
        if not server.requests.acquire(blocking=False):
            self._send(_BUSY, send_body)
            return
        try:
            if server.auth is not None and not server.auth.check(self.headers["Authorization"]):
                response = _UNAUTHORIZED
            elif route is None:
                response = _NOT_FOUND
            else:
                response = self._run(route, path)
            # The slot is held while the answer is written: a slow reader is a request in flight.
            self._send(response, send_body)
        finally:
            server.requests.release()

    def _run(self, route: Route, path: str) -> Response:
        request = Request(self.command, path, Headers(self.headers.items()))
        try:
            return route.handler(request)
        except Exception:
            log.exception("request failed", extra={"path": path})
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"Internal server error\n")

    def _send(self, response: Response, send_body: bool = True) -> None:
        body = response.body
        headers = {**self.server.extra_headers, **response.headers}
        if (
            len(body) > GZIP_MIN_BYTES
            and "Content-Encoding" not in headers
            and "gzip" in (self.headers["Accept-Encoding"] or "")
        ):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        elif self.close_connection:
            headers["Connection"] = "close"
        status = HTTPStatus(response.status)
        head = [
            f"{self.protocol_version} {status.value} {status.phrase}",
            f"Server: {self.server_version}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        # Headers and body in one write: one packet for a small answer, one syscall for any.
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(payload + body if send_body else payload)
        self.log_request(status.value, len(body))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Access logs at debug: a scrape every 15 s is not news.
        log.debug(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 drops simultaneous connections into SYN retries.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[_Handler],
        limits: Limits,
        web: WebConfig | None,
    ) -> None:
        self.limits = limits
        self.tls = TLSContexts(web.tls) if web is not None and web.tls is not None else None
        self.auth = BasicAuth(web.users) if web is not None and web.users else None
        rate = web.rate_limit if web is not None else None
        self.limiter = RateLimiter(rate.interval_seconds, rate.burst) if rate else None
        self.extra_headers: Mapping[str, str] = dict(web.headers) if web is not None else {}
        self.requests = threading.BoundedSemaphore(limits.max_requests)
        self._connections = threading.BoundedSemaphore(limits.connections)
        self._refuser = netio.Refuser()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            # Over TLS nothing can be said before a handshake, which would block this thread.
            self._refuser.refuse(request, b"" if self.tls is not None else netio.BUSY)
            return
        thread = threading.Thread(
            target=self._connection, args=(request, client_address), name="http", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: same as no slot
            self._connections.release()
            self._refuser.refuse(request, b"" if self.tls is not None else netio.BUSY)

    def _connection(self, sock: socket.socket, client_address: Any) -> None:
        try:
            if self.tls is not None:
                secured = self._secure(sock, client_address)
                if secured is None:
                    return
                sock = secured
            self.finish_request(sock, client_address)
        except Exception:  # noqa: BLE001 - one connection's failure must not end the thread's slot
            self.handle_error(sock, client_address)
        finally:
            self.shutdown_request(sock)
            self._connections.release()

    def _secure(self, sock: socket.socket, client_address: Any) -> socket.socket | None:
        assert self.tls is not None
        deadline = netio.Deadline()
        deadline.arm(self.limits.handshake_timeout)
        secured = None
        try:
            sock.settimeout(deadline.left())
            first = sock.recv(1, socket.MSG_PEEK)
            if first and first[0] != netio.TLS_HANDSHAKE_RECORD:
                self._refuser.refuse(sock.dup(), netio.HTTP_ON_HTTPS)
                return None
            if not first:
                return None
            secured = self.tls.current().wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
            secured.settimeout(deadline.left())
            secured.do_handshake()
            return secured
        except OSError as exc:  # ssl.SSLError, timeouts, resets
            log.debug("TLS handshake failed", extra={"client": client_address, "error": exc})
            if secured is not None:
                secured.close()
            return None

    def server_close(self) -> None:
        super().server_close()
        self._refuser.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection failed", extra={"client": client_address}, exc_info=True)


class _DualStackServer(Server):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # Answer IPv4 too, whatever the host's net.ipv6.bindv6only says.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve(
    listen: str,
    routes: Mapping[str, Route],
    web: WebConfig | None = None,
    limits: Limits | None = None,
) -> Server:
    """Bind (so start-up fails at once on a taken port); the caller runs ``serve_forever``.

    ``routes`` are the endpoints besides ``/``, the landing page that links to them. ``web`` is
    the loaded ``--web.config.file``: TLS, basic auth, extra headers and rate limit.
    """
    limits = limits or Limits()
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
                return _DualStackServer(("::", int(port)), handler, limits, web)
            except OSError:  # no IPv6 on this host
                # ':PORT' asks for every interface.
                return Server(("0.0.0.0", int(port)), handler, limits, web)  # noqa: S104
        if ":" in host:
            return _DualStackServer((host, int(port)), handler, limits, web)
        return Server((host, int(port)), handler, limits, web)
    except OSError as exc:
        raise OSError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
