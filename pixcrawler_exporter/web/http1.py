"""HTTP/1.1 request heads as RFC 9112 defines them, content negotiation, and log-safe text.

http.server leaves header parsing to the email package, which takes the first line it does not
understand (no colon, ``Host : x``) for the start of a body and silently drops every header
after it, ``Connection: close`` included. A request whose head is not exactly understood is one
whose end is not known either, so every deviation here is an error the server answers with a
400 and closes the connection on: no guessing, so nothing can be smuggled past the parser.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

# RFC 9110 token: what methods and field names are made of.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request target has no whitespace and no control bytes (RFC 9112 section 3.2).
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# field-value: visible characters, obs-text, and SP or HTAB inside; never CR, LF, NUL or a CTL.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# uri-host [":" port]: an IP literal or a reg-name (without the comma that would mean two).
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+;=]*)(:[0-9]*)?")
# absolute-form: scheme "://" authority, then the path and query the origin-form would carry.
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)")
_DIGITS = re.compile(r"[0-9]{1,18}")
# http.client's own limit; Prometheus sends fewer than ten.
MAX_FIELDS = 100
# C0 and C1 controls and the backslash, as \xNN, so a log line shows what came and is one line.
_CONTROL = str.maketrans(
    {c: f"\\x{c:02x}" for c in itertools.chain(range(0x20), range(0x7F, 0xA0))} | {0x5C: "\\\\"}
)


class BadRequestError(Exception):
    """A request the server answers with ``status`` and then closes the connection on."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class RequestLine:
    method: str
    target: str
    version: tuple[int, int]


class Fields(Mapping[str, str]):
    """Header fields looked up without regard to case; repeated fields are joined with ", " as
    RFC 9110 section 5.3 allows, and ``all`` gives each line's value."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._lines: dict[str, list[str]] = {}
        for name, value in items:
            self._lines.setdefault(name.lower(), []).append(value)

    def all(self, key: str) -> list[str]:
        return self._lines.get(key.lower(), [])

    def __getitem__(self, key: str) -> str:
        return ", ".join(self._lines[key.lower()])

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


@dataclass(frozen=True)
class Head:
    line: RequestLine
    fields: Fields
    # Bytes of body to read and discard; None for a body of unknown length (a transfer coding).
    body: int | None
    keep_alive: bool


def read_request_line(readline: Callable[[int], bytes], limit: int) -> bytes:
    """The request line, past the empty lines a client may send before it (RFC 9112 section
    2.2: a server SHOULD ignore at least one, as one after a body is a common client slip);
    b"" at the end of input. Those empty lines count against ``limit`` bytes, as the request line
    does: a line longer than that is returned cut at ``limit + 1`` bytes for the caller to
    refuse."""
    skipped = 0
    while (raw := readline(limit + 1)) in (b"\r\n", b"\n"):
        skipped += len(raw)
        if skipped > limit:
            raise BadRequestError(HTTPStatus.BAD_REQUEST, "only empty lines")
    return raw


def parse_request_line(raw: bytes) -> RequestLine:
    """``method SP target SP HTTP/x.y``; anything else (HTTP/0.9's two words too) is a 400. A
    target in absolute-form (``http://host:port/metrics``, RFC 9112 section 3.2.2: a server
    MUST accept it) is given as the origin-form it names (``/metrics``)."""
    parts = _line(raw).split(b" ")
    if len(parts) != 3:
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    matched = _VERSION.fullmatch(version)
    if not (_TOKEN.fullmatch(method) and _TARGET.fullmatch(target) and matched):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "malformed request line")
    major, minor = int(matched[1]), int(matched[2])
    if major != 1:
        raise BadRequestError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is served")
    return RequestLine(method.decode("ascii"), _origin_form(target), (major, minor))


def _origin_form(target: bytes) -> str:
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        return target.decode("ascii")
    scheme, authority, rest = (part.decode("ascii") for part in absolute.groups())
    host = _HOST.fullmatch(authority)
    # RFC 9110 section 4.2: an http(s) URI has a host, and a recipient treats userinfo (which
    # _HOST leaves out) as an error.
    if scheme.lower() not in ("http", "https") or host is None or not host[1]:
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "invalid absolute-form request target")
    return rest if rest.startswith("/") else "/" + rest


def read_fields(readline: Callable[[], bytes]) -> Fields:
    """The field lines up to the empty line that ends the head."""
    items: list[tuple[str, str]] = []
    while line := _line(readline()):
        if len(items) >= MAX_FIELDS:
            raise BadRequestError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields"
            )
        name, colon, value = line.partition(b":")
        # No colon, whitespace before it, or a line folded onto the previous one (obs-fold).
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequestError(HTTPStatus.BAD_REQUEST, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadRequestError(HTTPStatus.BAD_REQUEST, "control character in a header field")
        items.append((name.decode("ascii"), value.decode("latin-1")))
    return Fields(items)


def check_head(line: RequestLine, fields: Fields) -> Head:
    """Host and message framing as RFC 9112 sections 3.2 and 6 require."""
    hosts = fields.all("Host")
    if len(hosts) > 1 or (line.version >= (1, 1) and not hosts):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "HTTP/1.1 needs exactly one Host field")
    if hosts and not _HOST.fullmatch(hosts[0]):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "invalid Host field")
    coding = fields.get("Transfer-Encoding")
    lengths = {v.strip() for field in fields.all("Content-Length") for v in field.split(",")}
    if coding is not None and (lengths or line.version < (1, 1)):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "ambiguous message framing")
    if len(lengths) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
    body = None if coding is not None else int(next(iter(lengths), "0"))
    connection = {t.strip().lower() for t in fields.get("Connection", "").split(",")}
    keep_alive = "close" not in connection and (
        line.version >= (1, 1) or "keep-alive" in connection
    )
    return Head(line, fields, body, keep_alive)


def _line(raw: bytes) -> bytes:
    # A line ends in CRLF, or a bare LF as RFC 9112 lets a server accept; EOF before it is an
    # incomplete request. A stray CR is left in, for the patterns above to refuse.
    if not raw.endswith(b"\n"):
        raise BadRequestError(HTTPStatus.BAD_REQUEST, "incomplete request head")
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]


# --- content negotiation -----------------------------------------------------------------------


def preferences(header: str | None) -> list[tuple[float, str, str]]:
    """An Accept-style list as (q, lower-case name, the element without its q), best first,
    listed order kept among equals; a q that is not a number counts as 0."""
    ranked: list[tuple[float, str, str]] = []
    for element in (header or "").split(","):
        name, *params = (p.strip() for p in element.split(";"))
        if not name:
            continue
        q, rest = 1.0, []
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
                q = 0.0 if q != q else q  # NaN
            else:
                rest.append(param)
        ranked.append((q, name.lower(), ";".join([name, *rest])))
    ranked.sort(key=lambda item: -item[0])
    return ranked


def accepts(header: str | None, name: str) -> bool:
    """Whether an Accept-Encoding-style ``header`` allows ``name``: listed with q > 0, or not
    listed and ``*`` is, with q > 0."""
    quality = {n: q for q, n, _ in reversed(preferences(header))}
    return quality.get(name, quality.get("*", 0.0)) > 0


def acceptable(header: str | None, names: Iterable[str]) -> list[str]:
    """The elements of ``header`` naming one of ``names`` with q > 0, best first, without q."""
    wanted = set(names)
    return [text for q, name, text in preferences(header) if q > 0 and name in wanted]


# --- output ------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with control characters and backslashes escaped, for a log line."""
    return text.translate(_CONTROL)


def response_bytes(
    status: int,
    content_type: str,
    body: bytes,
    headers: Mapping[str, str],
    server: str,
    send_body: bool = True,
) -> bytes:
    """Status line, headers and (unless for HEAD) body, ready for one write."""
    phrase = HTTPStatus(status).phrase
    head = [
        f"HTTP/1.1 {status} {phrase}",
        f"Server: {server}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return payload + body if send_body else payload
