"""Whether a request was sent by a page of another origin, as a browser says it was.

A page anywhere can make a visitor's browser POST a form to the exporter: no preflight, and with
basic auth off nothing stops it (with basic auth on, the browser may even attach cached
credentials). Such a request is the only kind that carries ``Sec-Fetch-Site: cross-site`` or
an ``Origin`` naming another host, so refusing those costs curl and scripts nothing: they send
neither (a browser on the exporter's own pages sends its own origin).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# What Sec-Fetch-Site says of a request a page of another origin made ("same-site" is another
# origin on the same registrable domain: another service's page).
_FOREIGN_SITES = ("cross-site", "same-site")


def foreign(headers: Mapping[str, str]) -> str | None:
    """Why the request comes from a page of another origin, or None when nothing says so."""
    site = headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in _FOREIGN_SITES:
        return f"Sec-Fetch-Site is {site}"
    origin = headers.get("Origin")
    if origin is None:
        return None
    if _same(origin.strip(), headers.get("Host", "")):
        return None
    return "its Origin is not this server"


def _same(origin: str, host: str) -> bool:
    """Whether ``origin`` (scheme://host[:port], or "null") names the ``Host`` it was sent to."""
    try:
        sent = urlsplit(origin)
        here = urlsplit(f"//{host.strip()}")
        default = _DEFAULT_PORTS.get(sent.scheme.lower())
        if default is None or not sent.hostname or sent.path or sent.query:
            return False  # "null" (a sandboxed page, a file), or not an origin at all
        return (sent.hostname, sent.port or default) == (here.hostname, here.port or default)
    except ValueError:  # a port that is not a number
        return False
