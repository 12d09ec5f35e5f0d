"""One connection's requests: read each head, choose the route, check origin, rate, credentials
and the request slots, answer (gzipped where the client takes it) and log at debug.

The server (server.py) owns the connections, their threads and the limits this reads.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from pixcrawler_exporter import __version__
from pixcrawler_exporter.web import http1, netio, origin
from pixcrawler_exporter.web.guard import CHALLENGE, BusyError
from pixcrawler_exporter.web.routes import (
    GZIP_MIN_BYTES,
    READ_ONLY,
    Request,
    Response,
    Route,
    gzipped,
    scrape_timeout,
)

if TYPE_CHECKING:
    from pixcrawler_exporter.web.server import Server

log = logging.getLogger(__name__)


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


class Handler(BaseHTTPRequestHandler):
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
            body = gzipped(body)
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
