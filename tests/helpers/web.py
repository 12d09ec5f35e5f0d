"""The HTTP layer served in process, on a free loopback port, for the web tests."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pixcrawler_exporter.web import server, webconfig


@contextmanager
def serving(
    routes: Mapping[str, server.Route],
    web: webconfig.WebConfig | None = None,
    limits: server.Limits | None = None,
) -> Iterator[int]:
    """Serve ``routes`` from a thread; yields the port."""
    httpd = server.serve("127.0.0.1:0", routes, web, limits)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    """The certificate a TLS server on the loopback ``port`` presents, DER-encoded."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        return cert
