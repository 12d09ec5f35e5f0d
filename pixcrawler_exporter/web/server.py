"""The HTTP layer's connections: TLS, limits, threads and graceful stops.

Nothing here knows about sources; the endpoints are in routes, a request's handling in handler.
Every connection gets a thread, but only so many: beyond ``Limits.connections`` one overflow
thread serves the liveness route and answers 503 to the rest, beyond ``Limits.max_requests``
requests in flight a connection thread answers 503; no request waits in a queue. Every read and
write has a deadline for its whole phase (see netio), so idle and slow clients are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from pixcrawler_exporter.web import netio
from pixcrawler_exporter.web.front import Front
from pixcrawler_exporter.web.guard import BasicAuth, RateLimiter
from pixcrawler_exporter.web.handler import Handler
from pixcrawler_exporter.web.routes import MAX_SCRAPE_SECONDS as MAX_SCRAPE_SECONDS
from pixcrawler_exporter.web.routes import MIN_SCRAPE_SECONDS as MIN_SCRAPE_SECONDS
from pixcrawler_exporter.web.routes import SCRAPE_TIMEOUT_HEADER as SCRAPE_TIMEOUT_HEADER
from pixcrawler_exporter.web.routes import Request as Request
from pixcrawler_exporter.web.routes import Response as Response
from pixcrawler_exporter.web.routes import Route as Route
from pixcrawler_exporter.web.routes import healthy_route as healthy_route

# The endpoint API is re-exported (X as X): callers build routes and serve them through here.
from pixcrawler_exporter.web.routes import (
    landing,
    public_answer,
)
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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 drops simultaneous connections into SYN retries.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[Handler],
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
        public = public_answer(self._routes, raw, self.extra_headers, Handler.server_version)
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
        (Handler,),
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
