"""The HTTP layer's connections: TLS, auth, limits, request heads and graceful stops.

Nothing here knows about sources; the endpoints are in routes. Every connection gets a thread,
but only so many: beyond ``Limits.connections`` one overflow thread serves the liveness route and
answers 503 to the rest, beyond ``Limits.max_requests`` requests in flight a connection thread
answers 503; no request waits in a queue. Every read and write has a deadline for its whole
phase (see netio), so idle and slow clients are dropped.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pixcrawler_exporter import __version__
from pixcrawler_exporter.web import http1, netio, origin
from pixcrawler_exporter.web.front import Front
from pixcrawler_exporter.web.guard import CHALLENGE, BasicAuth, BusyError, RateLimiter

# The endpoint API is re-exported (X as X): callers build routes and serve them through here.
from pixcrawler_exporter.web.routes import (
    GZIP_LEVEL,
    GZIP_MIN_BYTES,
    READ_ONLY,
    landing,
    public_answer,
)
from pixcrawler_exporter.web.routes import MAX_SCRAPE_SECONDS as MAX_SCRAPE_SECONDS
from pixcrawler_exporter.web.routes import MIN_SCRAPE_SECONDS as MIN_SCRAPE_SECONDS
from pixcrawler_exporter.web.routes import SCRAPE_TIMEOUT_HEADER as SCRAPE_TIMEOUT_HEADER
from pixcrawler_exporter.web.routes import Request as Request
from pixcrawler_exporter.web.routes import Response as Response
from pixcrawler_exporter.web.routes import Route as Route
from pixcrawler_exporter.web.routes import healthy_route as healthy_route
from pixcrawler_exporter.web.routes import metrics_route as metrics_route
from pixcrawler_exporter.web.routes import negotiate as negotiate
from pixcrawler_exporter.web.routes import scrape_timeout as scrape_timeout
from pixcrawler_exporter.web.webconfig import TLSContexts, WebConfig

log = logging.getLogger(__name__)


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
    # A body on a GET or HEAD up to this size is read and dropped; a larger one, or one of
    # unknown length, is left unread and the connection closed after the answer.
    max_body_bytes: int = 65536
    # A scrape's deadline without the scrape timeout header, and what is taken off the header's
    # value (the web.scrape_timeout settings): how long credentials may wait for a bcrypt.
    scrape_timeout: float = 10.0
    scrape_timeout_offset: float = 0.5

    @property
    def connections(self) -> int:
        return self.max_connections or 2 * self.max_requests


_BUSY = Response(
    HTTPStatus.SERVICE_UNAVAILABLE,
    b"Too many requests in flight, retry later\n",
    headers={"Retry-After": "1", "Connection": "close"},
)
_UNAUTHORIZED = Response(
    HTTPStatus.UNAUTHORIZED, b"Unauthorized\n", headers={"WWW-Authenticate": CHALLENGE}
)
_RATE_LIMITED = Response(HTTPStatus.TOO_MANY_REQUESTS, b"Too many requests\n")
_AUTH_BUSY = Response(
    HTTPStatus.TOO_MANY_REQUESTS,
    b"Too many new credentials to check within the deadline, retry later\n",
    headers={"Retry-After": "1"},
)
_NOT_FOUND = Response(HTTPStatus.NOT_FOUND, b"Not found\n")


def _not_allowed(allowed: tuple[str, ...]) -> Response:
    # The body of the request is never read, so the connection cannot carry another request.
    headers = {"Allow": ", ".join(allowed), "Connection": "close"}
    return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"Method not allowed\n", headers=headers)


class _Handler(BaseHTTPRequestHandler):
    routes: Mapping[str, Route] = {}
    server: Server
    server_version = f"pixcrawler-exporter/{__version__}"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.connection = self.request
        # Each response leaves in one write, so Nagle's delay would only add latency.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._deadline = netio.Deadline()
        self.rfile = io.BufferedReader(netio.DeadlineReader(self.connection, self._deadline))
        self.wfile = netio.DeadlineWriter(self.connection, self.server.limits.write_timeout)
        self._fields = http1.Fields(())
        # Set when the connection closes with input left unread, which must be drained.
        self._unread = False
        self._arrived = time.monotonic()

    def handle_one_request(self) -> None:
        self._deadline.arm(self.server.limits.request_timeout)
        self._fields = http1.Fields(())
        try:
            head = self._read_head()
            if head is None:
                self.close_connection = True
                return
            self._arrived = time.monotonic()
            with self.server.in_flight():
                self._respond(head)
        except http1.BadRequestError as bad:
            self.close_connection = self._unread = True
            body = f"Bad request: {bad.reason}\n".encode()
            self._send(Response(bad.status, body, headers={"Connection": "close"}))
        except (TimeoutError, OSError) as exc:
            # Slow, idle or gone: drop the connection, it is not worth a log line above debug.
            log.debug("connection dropped", extra={"client": self.address_string(), "error": exc})
            self.close_connection = True

    def finish(self) -> None:
        if self._unread:
            netio.drain(self.connection, netio.LINGER_SECONDS)
        super().finish()

    def _read_head(self) -> http1.Head | None:
        limits = self.server.limits
        self.requestline = ""
        raw = http1.read_request_line(self.rfile.readline, limits.max_request_line)
        if not raw:
            return None
        self.requestline = raw.rstrip(b"\r\n").decode("latin-1")
        if len(raw) > limits.max_request_line:
            raise http1.BadRequestError(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
        line = http1.parse_request_line(raw)
        try:
            fields = http1.read_fields(
                netio.HeaderBudget(self.rfile, limits.max_header_bytes).readline
            )
        except http.client.LineTooLong:
            raise http1.BadRequestError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header section too large"
            ) from None
        return http1.check_head(line, fields)

    def _respond(self, head: http1.Head) -> None:
        line = head.line
        self.command, self.path, self._fields = line.method, line.target, head.fields
        self.request_version = "HTTP/{}.{}".format(*line.version)
        self.close_connection = not head.keep_alive
        route = self.routes.get(line.target.partition("?")[0])
        allowed = route.methods if route is not None else READ_ONLY
        if line.method not in allowed:
            self._unread = True
            self._send(_not_allowed(allowed))
            return
        if not self._discard_body(head):
            # Answer, then close: what follows the head is never taken for a request.
            self.close_connection = self._unread = True
        self._serve(send_body=line.method != "HEAD")

    def _discard_body(self, head: http1.Head) -> bool:
        """Read and drop a small body of known length; False when it is left unread."""
        if head.body == 0:
            return True
        expect = head.fields.get("Expect", "").lower()
        if head.body is None or head.body > self.server.limits.max_body_bytes or expect:
            return False
        if len(self.rfile.read(head.body)) < head.body:
            raise ConnectionError("request body cut short")
        return True

    def _serve(self, send_body: bool) -> None:
        path = self.path.partition("?")[0]
        route = self.routes.get(path)
        if route is not None and route.public:
            self._send(self._run(route, path), send_body)
            return
        if self.command not in READ_ONLY and (why := origin.foreign(self._fields)) is not None:
            # Before the rate limit and auth: a page elsewhere must not even spend a token.
            body = f"Forbidden: a {self.command} from a page of another origin ({why})\n"
            self._send(Response(HTTPStatus.FORBIDDEN, body.encode()), send_body)
            return
        server = self.server
        if server.limiter is not None and not server.limiter.allow():
            self._send(_RATE_LIMITED, send_body)
            return
        # Before a request slot is taken: a client waiting for a bcrypt holds none.
        refused = self._authenticate()
        if refused is not None:
            self._send(refused, send_body)
            return
        if not server.requests.acquire(blocking=False):
            self._send(_BUSY, send_body)
            return
        try:
            response = _NOT_FOUND if route is None else self._run(route, path)
            # The slot is held while the answer is written: a slow reader is a request in flight.
            self._send(response, send_body)
        finally:
            server.requests.release()

    def _authenticate(self) -> Response | None:
        auth = self.server.auth
        if auth is None:
            return None
        limits = self.server.limits
        # The wait for a bcrypt comes out of the scrape's own deadline (see Request.timeout).
        deadline = scrape_timeout(self._fields, limits.scrape_timeout, limits.scrape_timeout_offset)
        wait = max(0.0, deadline - (time.monotonic() - self._arrived))
        try:
            return None if auth.check(self._fields.get("Authorization"), wait) else _UNAUTHORIZED
        except BusyError:
            return _AUTH_BUSY

    def _run(self, route: Route, path: str) -> Response:
        request = Request(self.command, path, self._fields, self._arrived)
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
            and http1.accepts(self._fields.get("Accept-Encoding"), "gzip")
        ):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        elif self.close_connection or self.server.stopping:
            self.close_connection = True
            headers["Connection"] = "close"
        payload = http1.response_bytes(
            response.status, response.content_type, body, headers, self.server_version, send_body
        )
        # Headers and body in one write: one packet for a small answer, one syscall for any.
        self.wfile.write(payload)
        if log.isEnabledFor(logging.DEBUG):  # formatting the line costs more than the check
            self.log_request(response.status, len(body))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Access logs at debug: a scrape every 15 s is not news. The request line is the
        # client's: control bytes in it would forge or garble log lines.
        log.debug("%s", http1.printable(format % args))


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
        self._front = Front.build(web)
        self.requests = threading.BoundedSemaphore(limits.max_requests)
        self._connections = threading.BoundedSemaphore(limits.connections)
        self._routes = handler.routes
        self._overflow = netio.Overflow(
            self._overflow_answer, self._tls_context if self.tls is not None else None
        )
        self._idle = threading.Condition()
        self._active = 0
        self.stopping = False
        super().__init__(address, handler)

    # What the web config sets up; a request reads each once, so a reload's swap is safe.
    @property
    def tls(self) -> TLSContexts | None:
        return self._front.tls

    @property
    def auth(self) -> BasicAuth | None:
        return self._front.auth

    @property
    def limiter(self) -> RateLimiter | None:
        return self._front.limiter

    @property
    def extra_headers(self) -> Mapping[str, str]:
        return self._front.headers

    def prepare(self, web: WebConfig | None) -> Callable[[], None]:
        """Check a web config read again by a reload and set up what it asks for (ConfigError
        when it cannot be used: the running one stays); the result puts it into use."""
        front = Front.build(web, self._front)

        def use() -> None:
            self._front = front

        return use

    def _tls_context(self) -> ssl.SSLContext:
        tls = self._front.tls
        assert tls is not None  # TLS is on or off for the server's life
        return tls.current()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """After ``shutdown``: wait until the requests being answered are; True when they were."""
        self.stopping = True
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def _overflow_answer(self, raw: bytes) -> bytes:
        public = public_answer(self._routes, raw, self.extra_headers, _Handler.server_version)
        return netio.BUSY if public is None else public

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            self._overflow.take(request)
            return
        thread = threading.Thread(
            target=self._connection, args=(request, client_address), name="http", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: same as no slot
            self._connections.release()
            self._overflow.take(request)

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
        deadline = netio.Deadline()
        deadline.arm(self.limits.handshake_timeout)
        secured = None
        try:
            sock.settimeout(deadline.left())
            first = sock.recv(1, socket.MSG_PEEK)
            if first and first[0] != netio.TLS_HANDSHAKE_RECORD:
                self._overflow.refuse(sock.dup(), netio.HTTP_ON_HTTPS)
                return None
            if not first:
                return None
            secured = self._tls_context().wrap_socket(
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

    def server_bind(self) -> None:
        # HTTPServer's own asks the resolver for the address's name (socket.getfqdn: a reverse
        # lookup, seconds where DNS is broken, which loads the idna codec, unicodedata and the
        # NSS modules into a process that never uses the name).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port

    def server_close(self) -> None:
        super().server_close()
        self._overflow.close()

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
        {"routes": {"/": Route(landing(routes), "This page"), **routes}},
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
