"""``--web.config.file``: TLS, basic auth, headers and rate limit in the exporter-toolkit format.

Operators reuse the files they wrote for node_exporter. What Python's ``ssl`` module cannot do
the way Go's ``crypto/tls`` does is refused with a message rather than silently weakened.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pixcrawler_exporter.config import ConfigError
from pixcrawler_exporter.config.boundedfile import UnreadableError, read_bounded

if TYPE_CHECKING:  # the module imports PyYAML, which a start without a web config never needs
    from pixcrawler_exporter.config.yamlfile import Yaml, YamlMapping

log = logging.getLogger(__name__)

# client_auth_type -> (verify mode, whether the client's certificate is checked against a CA).
# Go can ask for a certificate without verifying it; OpenSSL through Python's ssl module cannot,
# so RequestClientCert asks for none (nothing here would use an unverified one) and
# RequireAnyClientCert verifies what it requires: stricter, never weaker.
CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,  # the toolkit's old spelling
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The headers the toolkit lets an operator add, with the values it accepts (None: any).
EXTRA_HEADERS: Mapping[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
# What a key of the toolkit's format that this exporter cannot honour gets as an explanation.
UNSUPPORTED = {
    "tls_server_config.cipher_suites": "OpenSSL's defaults for TLS 1.2 and 1.3 are used",
    "tls_server_config.curve_preferences": "OpenSSL's defaults are used",
    "tls_server_config.client_allowed_sans": "use a client CA that issues only allowed clients",
}
KEYS: Mapping[str, tuple[str, ...]] = {
    "": ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"),
    "tls_server_config": (
        "cert",
        "key",
        "client_ca",
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "client_allowed_sans",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    ),
    "http_server_config": ("http2", "headers"),
    "rate_limit": ("interval", "burst"),
}
# A certificate chain, a key or a bundle of client CAs (the system's is some 200 KB).
MAX_PEM_BYTES = 4 * 1024 * 1024
# Only the variants the bcrypt package verifies: $2$ and $2x$ (crypt_blowfish's buggy one)
# would load and then refuse every password.
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class TLSSettings:
    source: str  # the web config file, for messages
    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    client_ca_file: str | None = None
    client_ca: str | None = field(default=None, repr=False)
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now. Raises ConfigError."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[self.min_version]
        ctx.maximum_version = TLS_VERSIONS[self.max_version]
        self._load_pair(ctx)
        mode = CLIENT_AUTH_TYPES[self.client_auth_type]
        if mode is not ssl.CERT_NONE:
            self._load_client_cas(ctx)
            ctx.verify_mode = mode
        return ctx

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)

    def _load_pair(self, ctx: ssl.SSLContext) -> None:
        where = "tls_server_config.cert_file/key_file"
        _readable(where, self.source, self.cert_file, self.key_file)
        if self.cert_file and self.key_file:
            # No temporary directory: a read-only root filesystem has none to give.
            self._load_chain(ctx, self.cert_file, self.key_file)
            return
        try:
            scratch = tempfile.TemporaryDirectory(prefix="pixcrawler-tls-")
        except OSError as exc:
            raise ConfigError(
                f"tls_server_config.cert/key in {self.source}: an inline certificate or key is "
                f"loaded through a temporary file, and there is no writable temporary directory "
                f"({exc.strerror or exc}); give cert_file and key_file instead"
            ) from None
        with scratch as tmp:
            # load_cert_chain takes only paths: inline PEM goes through a private directory.
            cert = self.cert_file or _private_file(tmp, "cert.pem", self.cert or "")
            key = self.key_file or _private_file(tmp, "key.pem", self.key or "")
            self._load_chain(ctx, cert, key)

    def _load_chain(self, ctx: ssl.SSLContext, cert: str, key: str) -> None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; ValueError: NUL
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                f"tls_server_config.cert_file/key_file in {self.source}: cannot load the "
                f"certificate and key: {reason}"
            ) from None

    def _load_client_cas(self, ctx: ssl.SSLContext) -> None:
        where = "tls_server_config.client_ca_file"
        _readable(where, self.source, self.client_ca_file)
        try:
            if self.client_ca_file:
                ctx.load_verify_locations(cafile=self.client_ca_file)
            elif self.client_ca:
                ctx.load_verify_locations(cadata=self.client_ca)
            else:
                # Go verifies against the system's roots when no client CA is given.
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            raise ConfigError(
                f"{where} in {self.source}: cannot load the client CA certificates: {reason}"
            ) from None


@dataclass(frozen=True)
class RateLimit:
    interval_seconds: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: TLSSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None


def load(path: str) -> WebConfig:
    """Read and check the whole file, certificates included, so mistakes stop the start-up."""
    doc = _read(path)
    _check_keys(doc, "", path)
    web = WebConfig(
        path=path,
        tls=_tls(_section(doc, "tls_server_config", path), path),
        users=_users(doc.get("basic_auth_users"), path),
        headers=_headers(_section(doc, "http_server_config", path), path),
        rate_limit=_rate_limit(_section(doc, "rate_limit", path), path),
    )
    if web.tls is not None:
        web.tls.context()
    return web


class TLSContexts:
    """The server's TLS context, rebuilt when a certificate or key file changes on disk.

    cert-manager and the like rotate certificates in place; the toolkit re-reads them on every
    connection, and so do we, cheaply: a ``stat`` per file per connection, a reload on change.
    A rotation that leaves a broken pair keeps the last good context and logs once.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._context = settings.context()

    def current(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return self._context
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._context = self._settings.context()
                    log.info("reloaded TLS certificates", extra={"files": self._settings.files()})
                except ConfigError as exc:
                    log.error(
                        "cannot reload TLS certificates; keeping the previous ones",
                        extra={"error": str(exc)},
                    )
            return self._context

    def _files_stamp(self) -> tuple[tuple[float, int], ...]:
        stamps = []
        for name in self._settings.files():
            try:
                st = os.stat(name)
                stamps.append((st.st_mtime, st.st_size))
            except OSError:
                stamps.append((-1.0, -1))
        return tuple(stamps)


# --- reading and checking ----------------------------------------------------------------------


def _read(path: str) -> YamlMapping:
    # An empty file means plain HTTP without authentication, as with the toolkit.
    from pixcrawler_exporter.config.yamlfile import read_yaml_mapping  # PyYAML: with a file

    return read_yaml_mapping(path, "web config file")


def _check_keys(node: YamlMapping, section: str, path: str) -> None:
    """Unknown keys are errors, as with the toolkit's strict YAML: a typo must not turn TLS off."""
    known = KEYS[section]
    for key in node:
        dotted = f"{section}.{key}" if section else str(key)
        if key not in known:
            match = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {match[0]}?)" if match else ""
            raise ConfigError(f"{dotted} in {path}: unknown key{hint}")
        if dotted in UNSUPPORTED and node[key] not in (None, [], ""):
            raise ConfigError(
                f"{dotted} in {path}: not supported by pixcrawler-exporter; {UNSUPPORTED[dotted]}"
            )


def _section(doc: YamlMapping, name: str, path: str) -> YamlMapping:
    node = doc.get(name)
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{name} in {path}: expected a mapping")
    _check_keys(node, name, path)
    return node


def _string(node: YamlMapping, key: str, section: str, path: str) -> str | None:
    value = node.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{section}.{key} in {path}: expected a string")
    return value


def _one_of(
    node: YamlMapping, key: str, section: str, path: str, options: Mapping[str, object]
) -> str | None:
    value = _string(node, key, section, path)
    if value is not None and value not in options:
        raise ConfigError(
            f"{section}.{key} in {path}: {value!r} is not valid; expected one of "
            f"{', '.join(options)}"
        )
    return value


def _tls(node: YamlMapping, path: str) -> TLSSettings | None:
    s = "tls_server_config"
    strings = {
        k: _string(node, k, s, path)
        for k in ("cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file")
    }
    auth = _one_of(node, "client_auth_type", s, path, CLIENT_AUTH_TYPES)
    if not any(strings.values()) and auth is None:
        return None  # the toolkit serves plain HTTP when no TLS key is set
    base = Path(path).parent
    for k in ("cert_file", "key_file", "client_ca_file"):
        if strings[k]:
            strings[k] = str(base / str(strings[k]))  # relative to the file, as the toolkit does
    if not (strings["cert_file"] or strings["cert"]):
        raise ConfigError(f"{s} in {path}: missing one of cert or cert_file")
    if not (strings["key_file"] or strings["key"]):
        raise ConfigError(f"{s} in {path}: missing one of key or key_file")
    auth = auth or "NoClientCert"
    if (strings["client_ca_file"] or strings["client_ca"]) and auth == "NoClientCert":
        raise ConfigError(
            f"{s}.client_ca_file in {path}: client CAs are configured without a client_auth_type"
        )
    low = _one_of(node, "min_version", s, path, TLS_VERSIONS) or "TLS12"
    high = _one_of(node, "max_version", s, path, TLS_VERSIONS) or "TLS13"
    if TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        raise ConfigError(f"{s}.min_version in {path}: {low} is above max_version {high}")
    prefer = node.get("prefer_server_cipher_suites")
    if prefer is not None and not isinstance(prefer, bool):
        raise ConfigError(f"{s}.prefer_server_cipher_suites in {path}: expected true or false")
    return TLSSettings(
        source=path,
        cert_file=strings["cert_file"],
        key_file=strings["key_file"],
        cert=strings["cert"],
        key=strings["key"],
        client_ca_file=strings["client_ca_file"],
        client_ca=strings["client_ca"],
        client_auth_type=auth,
        min_version=low,
        max_version=high,
    )


def _users(node: Yaml, path: str) -> dict[str, bytes]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"basic_auth_users in {path}: expected a mapping of user: bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in node.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(
                f"basic_auth_users in {path}: {user!r} is not a user name (a non-empty string "
                "without ':')"
            )
        where = f"basic_auth_users.{user} in {path}"
        match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        # The hash itself stays out of the message: it is a secret too.
        if match is None:
            raise ConfigError(
                f"{where}: not a bcrypt hash (expected $2y$COST$ and 53 characters, as "
                "'htpasswd -nBC 10 \"\" | tr -d :' prints; $2a$ and $2b$ do too, $2$ and $2x$ not)"
            )
        if not 4 <= int(match[1]) <= 31:
            raise ConfigError(f"{where}: bcrypt cost {match[1]} is outside 4 to 31")
        users[user] = hashed.encode()
    if users and importlib.util.find_spec("bcrypt") is None:
        raise ConfigError(f"basic_auth_users in {path}: needs the Python package bcrypt")
    return users


def _headers(node: YamlMapping, path: str) -> dict[str, str]:
    if node.get("http2") is not None and not isinstance(node["http2"], bool):
        raise ConfigError(f"http_server_config.http2 in {path}: expected true or false")
    headers = node.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise ConfigError(f"http_server_config.headers in {path}: expected a mapping")
    out: dict[str, str] = {}
    for name, value in headers.items():
        where = f"http_server_config.headers.{name} in {path}"
        if name not in EXTRA_HEADERS:
            raise ConfigError(
                f"{where}: this header cannot be configured; expected one of "
                f"{', '.join(EXTRA_HEADERS)}"
            )
        allowed = EXTRA_HEADERS[name]
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise ConfigError(f"{where}: expected a one-line string")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not valid; expected one of {allowed}")
        if value:
            out[name] = value
    return out


def _rate_limit(node: YamlMapping, path: str) -> RateLimit | None:
    if not node:
        return None
    interval = _duration(node.get("interval", 0), f"rate_limit.interval in {path}")
    burst = node.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        raise ConfigError(f"rate_limit.burst in {path}: expected a whole number >= 0")
    if interval == 0:
        return None  # the toolkit's way of turning the limiter off
    return RateLimit(interval, burst)


def _duration(raw: Yaml, where: str) -> float:
    """A Go duration ('1s', '250ms', '1m30s'); 0 on its own is allowed."""
    if raw == 0 or raw == "0":
        return 0.0
    text = raw if isinstance(raw, str) else ""
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: {raw!r} is not a duration; expected e.g. 1s, 250ms or 1m30s")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def _readable(where: str, source: str, *names: str | None) -> None:
    # OpenSSL's errors do not say which file they are about ("None: no such file"), and OpenSSL
    # would wait for ever on a FIFO: each file is read first, bounded, to see that it can be.
    for name in filter(None, names):
        try:
            read_bounded(name, MAX_PEM_BYTES)
        except UnreadableError as exc:
            reason = "no such file" if exc.missing else str(exc)
            raise ConfigError(f"{where} in {source}: {name}: {reason}") from None


def _private_file(directory: str, name: str, content: str) -> str:
    target = os.path.join(directory, name)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
    return target
