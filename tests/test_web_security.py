"""TLS, basic auth, request limits and bad input, against real sockets.

Certificates come from a CA the tests make (trustme). Most tests run the HTTP layer in process
with routes they control; a few start the exporter itself to prove the flags are wired.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from http import HTTPStatus
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

from pixcrawler_exporter.config import ConfigError
from pixcrawler_exporter.web import guard, server, webconfig
from tests.conftest import free_port, http_get, run_cli, spawn_exporter, stop_process
from tests.helpers.web import served_cert, serving

# Cost 4, bcrypt's minimum: the tests are about the protocol, not about bcrypt's slowness.
PASSWORD = "s3cret pass:word"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


# --- helpers -----------------------------------------------------------------------------------


def fast_routes(extra: Mapping[str, server.Route] | None = None) -> dict[str, server.Route]:
    return {
        "/metrics": server.Route(
            lambda _r: server.Response(HTTPStatus.OK, b"pixcrawler_test 1\n"), "Test metrics"
        ),
        "/-/healthy": server.healthy_route(),
        **(extra or {}),
    }


def running(
    routes: Mapping[str, server.Route] | None = None,
    web: webconfig.WebConfig | None = None,
    limits: server.Limits | None = None,
) -> AbstractContextManager[int]:
    return serving(routes or fast_routes(), web, limits)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def https_get(
    url: str, ctx: ssl.SSLContext, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes as they are and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def write_config(directory: Path, doc: object, name: str = "web.yml") -> str:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """Server certificate and key, and the CA, as files next to the web config."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return {"cert_file": "server.crt", "key_file": "server.key", "ca": str(tmp_path / "ca.crt")}


def client_context(ca: trustme.CA, client: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client is not None:
        client.configure_cert(ctx)
    return ctx


def tls_config(tmp_path: Path, certs: Mapping[str, str], **tls: str) -> webconfig.WebConfig:
    doc = {"tls_server_config": {"cert_file": certs["cert_file"], "key_file": certs["key_file"]}}
    doc["tls_server_config"].update(tls)
    return webconfig.load(write_config(tmp_path, doc))


def run_exporter_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp_path, "--listen", f"127.0.0.1:{free_port()}", *args)


@contextmanager
def exporter_process(tmp_path: Path, *args: str) -> Iterator[int]:
    """The exporter itself; ready once its port accepts (TLS or not, no probe assumes either)."""
    exporter = spawn_exporter(tmp_path, args)
    port = int(exporter.url.rsplit(":", 1)[1])
    try:
        deadline = time.monotonic() + 20
        while True:
            assert exporter.proc.poll() is None, exporter.log()
            assert time.monotonic() < deadline, exporter.log()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        stop_process(exporter.proc)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_tls_handshake_and_plain_http_refused(
    ca: trustme.CA, certs: dict[str, str], tmp_path: Path
) -> None:
    path = write_config(
        tmp_path, {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}}
    )
    with exporter_process(tmp_path, "--web.config.file", path) as port:
        status, _, body = https_get(f"https://127.0.0.1:{port}/metrics", client_context(ca))
        assert status == 200
        assert b"pixcrawler_exporter_build_info" in body
        # A client that does not trust our CA gets no answer at all.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            https_get(f"https://127.0.0.1:{port}/metrics", ssl.create_default_context())
        answer = raw_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == 400
        assert b"HTTP request to an HTTPS server" in answer
        assert b"pixcrawler_exporter_build_info" not in answer
        # And TLS still works after that.
        assert https_get(f"https://127.0.0.1:{port}/-/healthy", client_context(ca))[0] == 200


def test_tls_min_version_is_enforced(ca: trustme.CA, certs: dict[str, str], tmp_path: Path) -> None:
    web = tls_config(tmp_path, certs, min_version="TLS13")
    with running(web=web) as port:
        old = client_context(ca)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(urllib.error.URLError):
            https_get(f"https://127.0.0.1:{port}/metrics", old)
        assert https_get(f"https://127.0.0.1:{port}/metrics", client_context(ca))[0] == 200


def test_mutual_tls(ca: trustme.CA, certs: dict[str, str], tmp_path: Path) -> None:
    web = tls_config(
        tmp_path, certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt"
    )
    url_of = "https://127.0.0.1:{}/metrics".format
    with running(web=web) as port:
        status, _, body = https_get(url_of(port), client_context(ca, ca.issue_cert("scraper")))
        assert (status, body) == (200, b"pixcrawler_test 1\n")
        with pytest.raises(OSError):  # no certificate: the handshake is refused
            https_get(url_of(port), client_context(ca))
        stranger = trustme.CA().issue_cert("scraper")
        with pytest.raises(OSError):  # a certificate from another CA: refused as well
            https_get(url_of(port), client_context(ca, stranger))
        # Refused clients do not wedge the server.
        assert https_get(url_of(port), client_context(ca, ca.issue_cert("again")))[0] == 200


def test_verify_client_cert_if_given(ca: trustme.CA, certs: dict[str, str], tmp_path: Path) -> None:
    web = tls_config(
        tmp_path, certs, client_auth_type="VerifyClientCertIfGiven", client_ca_file="ca.crt"
    )
    with running(web=web) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        assert https_get(url, client_context(ca))[0] == 200
        assert https_get(url, client_context(ca, ca.issue_cert("scraper")))[0] == 200
        with pytest.raises(OSError):
            https_get(url, client_context(ca, trustme.CA().issue_cert("scraper")))


def test_rotated_certificate_is_picked_up(
    ca: trustme.CA, certs: dict[str, str], tmp_path: Path
) -> None:
    web = tls_config(tmp_path, certs)
    with running(web=web) as port:
        before = served_cert(port, client_context(ca))
        leaf = ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
        leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
        later = time.time() + 10  # a new mtime even on coarse-grained filesystems
        for name in ("server.crt", "server.key"):
            os.utime(tmp_path / name, (later, later))
        after = served_cert(port, client_context(ca))
        assert after != before
        assert after == ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


# --- basic auth --------------------------------------------------------------------------------


def test_basic_auth_right_wrong_missing(
    exporter_factory: Callable[..., object], tmp_path: Path
) -> None:
    path = write_config(tmp_path, {"basic_auth_users": {"prometheus": HASH}})
    exp = exporter_factory("--web.config.file", path)
    get = exp.get  # type: ignore[attr-defined]
    status, _, body = get("/metrics", basic("prometheus", PASSWORD))
    assert status == 200 and b"pixcrawler_exporter_build_info" in body
    for headers in (
        basic("prometheus", "wrong"),
        basic("nobody", PASSWORD),
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!not-base64"},
    ):
        status, resp_headers, body = get("/metrics", headers)
        assert status == 401, headers
        assert resp_headers["WWW-Authenticate"] == 'Basic realm="pixcrawler-exporter"'
        assert b"pixcrawler_exporter" not in body
    assert get("/status")[0] == 401
    assert get("/")[0] == 401
    assert get("/-/healthy")[0] == 200  # liveness probes carry no credentials


def test_bcrypt_runs_once_per_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    auth = guard.BasicAuth({"prometheus": HASH.encode()})
    right, wrong = basic("prometheus", PASSWORD), basic("prometheus", "nope")
    assert all(auth.check(right["Authorization"], 10) for _ in range(20))
    assert not any(auth.check(wrong["Authorization"], 10) for _ in range(20))
    assert len(calls) == 2
    # An unknown user costs a bcrypt like a known one, so timing does not tell names apart.
    assert not auth.check(basic("stranger", PASSWORD)["Authorization"], 10)
    assert len(calls) == 3
    # What is kept is keyed by an HMAC, never by the password.
    assert all(PASSWORD.encode() not in key for key in [*auth._granted, *auth._denied])


def test_basic_auth_over_tls(ca: trustme.CA, certs: dict[str, str], tmp_path: Path) -> None:
    doc = {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {"prometheus": HASH},
        "http_server_config": {"http2": True, "headers": {"X-Frame-Options": "deny"}},
    }
    web = webconfig.load(write_config(tmp_path, doc))
    with running(web=web) as port:
        url = f"https://127.0.0.1:{port}/metrics"
        status, headers, _ = https_get(url, client_context(ca), basic("prometheus", PASSWORD))
        assert status == 200 and headers["X-Frame-Options"] == "deny"
        assert https_get(url, client_context(ca))[0] == 401


# --- bad web config: exit 2 with a message -----------------------------------------------------


def test_unparsable_bcrypt_hash_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"basic_auth_users": {"alice": "$2y$10$tooshort"}})
    done = run_exporter_cli(tmp_path, "--web.config.file", path)
    assert done.returncode == 2
    assert f"basic_auth_users.alice in {path}: not a bcrypt hash" in done.stderr
    assert "tooshort" not in done.stderr  # a hash is a secret too
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("tls_server_config: [unclosed", "is not valid YAML at line 1"),
        ({"tls_server_config": {"cert_file": "nope.crt", "key_file": "nope.key"}}, "no such file"),
        ({"tls_sever_config": {}}, "unknown key (did you mean tls_server_config?)"),
    ],
)
def test_malformed_web_config_exits_2(tmp_path: Path, doc: object, message: str) -> None:
    path = write_config(tmp_path, doc)
    done = run_exporter_cli(tmp_path, "--web.config.file", path)
    assert done.returncode == 2, done.stderr
    assert "web configuration error" in done.stderr and message in done.stderr
    assert path in done.stderr
    assert "Traceback" not in done.stderr


PAIR = {"cert_file": "server.crt", "key_file": "server.key"}


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"key_file": "server.key"}, "missing one of cert or cert_file"),
        ({"cert_file": "server.crt"}, "missing one of key or key_file"),
        ({**PAIR, "client_auth_type": "Sometimes"}, "'Sometimes' is not valid; expected one of"),
        ({**PAIR, "min_version": "TLS11"}, "expected one of TLS12, TLS13"),
        ({**PAIR, "min_version": "TLS13", "max_version": "TLS12"}, "TLS13 is above max_version"),
        ({**PAIR, "client_ca_file": "ca.crt"}, "without a client_auth_type"),
        ({"cert_file": "server.key", "key_file": "server.key"}, "cannot load the certificate"),
        ({**PAIR, "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}, "not supported by pixcrawler"),
        ({**PAIR, "client_allowed_sans": ["scraper"]}, "not supported by pixcrawler-exporter"),
        ({**PAIR, "cert_file": 12}, "tls_server_config.cert_file in"),
        ({**PAIR, "prefer_server_cipher_suites": "yes"}, "expected true or false"),
    ],
)
def test_tls_config_mistakes(
    tmp_path: Path, certs: dict[str, str], tls: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"web\.yml") as err:
        webconfig.load(write_config(tmp_path, {"tls_server_config": tls}))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"basic_auth_users": ["alice"]}, "expected a mapping of user: bcrypt hash"),
        ({"basic_auth_users": {"alice": 12}}, "basic_auth_users.alice in"),
        ({"basic_auth_users": {"al:ice": HASH}}, "without ':'"),
        ({"basic_auth_users": {"alice": "$2y$99$" + HASH[7:]}}, "cost 99 is outside 4 to 31"),
        ({"http_server_config": {"headers": {"X-Powered-By": "me"}}}, "cannot be configured"),
        ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, "'allow' is not"),
        ({"http_server_config": {"http2": "yes"}}, "http2 in"),
        ({"rate_limit": {"interval": "fast", "burst": 1}}, "not a duration"),
        ({"rate_limit": {"interval": "1s", "burst": -1}}, "rate_limit.burst in"),
        ([1, 2], "expected a mapping of settings at the top level"),
    ],
)
def test_other_config_mistakes(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"web\.yml") as err:
        webconfig.load(write_config(tmp_path, doc))
    assert message in str(err.value)


def test_config_that_turns_nothing_on(tmp_path: Path) -> None:
    empty = webconfig.load(write_config(tmp_path, ""))
    assert (empty.tls, dict(empty.users), empty.rate_limit) == (None, {}, None)
    blank_tls = webconfig.load(write_config(tmp_path, {"tls_server_config": {"cert_file": ""}}))
    assert blank_tls.tls is None  # as the toolkit: no TLS key set means plain HTTP
    limit = webconfig.load(
        write_config(tmp_path, {"rate_limit": {"interval": "1m30s", "burst": 3}})
    )
    assert limit.rate_limit == webconfig.RateLimit(90.0, 3)


# --- limits ------------------------------------------------------------------------------------


def test_503_beyond_max_requests_at_once() -> None:
    gate, entered = threading.Event(), threading.Semaphore(0)

    def blocking(_request: server.Request) -> server.Response:
        entered.release()
        gate.wait(10)
        return server.Response(HTTPStatus.OK, b"done\n")

    routes = fast_routes({"/slow": server.Route(blocking, "Blocks until released")})
    with (
        running(routes, limits=server.Limits(max_requests=2)) as port,
        ThreadPoolExecutor(2) as pool,
    ):
        url = f"http://127.0.0.1:{port}"
        held = [pool.submit(http_get, url + "/slow") for _ in range(2)]
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
        started = time.monotonic()
        status, headers, _ = http_get(url + "/metrics")
        assert status == 503 and headers["Retry-After"] == "1"
        assert time.monotonic() - started < 1  # at once, not queued behind the two
        assert http_get(url + "/-/healthy")[0] == 200  # liveness is not a scrape
        gate.set()
        assert [f.result(5)[0] for f in held] == [200, 200]
        assert http_get(url + "/metrics")[0] == 200


def test_slow_clients_cannot_take_every_thread() -> None:
    limits = server.Limits(max_requests=2)  # so 4 connection threads
    with running(limits=limits) as port:
        slow = hold_connections(port, limits.connections)
        try:
            started = time.monotonic()
            answer = raw_exchange(port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert status_of(answer) == 503 and b"Too many connections" in answer
            assert time.monotonic() - started < 1
        finally:
            for sock in slow:
                sock.close()
        deadline = time.monotonic() + 5
        while http_get(f"http://127.0.0.1:{port}/metrics")[0] != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.05)


def test_idle_and_trickling_clients_time_out() -> None:
    limits = server.Limits(request_timeout=1.0)
    with running(limits=limits) as port:
        idle = socket.create_connection(("127.0.0.1", port))
        trickle = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        trickle.sendall(b"GET /metrics HTTP/1.1\r\n")
        closed: dict[str, float] = {}
        while len(closed) < 2 and time.monotonic() - started < 6:
            if "trickle" not in closed:
                try:
                    trickle.sendall(b"X-Slow: 1\r\n")  # a header every 0.2 s: each recv is quick
                except OSError:
                    closed["trickle"] = time.monotonic() - started
            readable, _, _ = select.select(
                [s for s in (idle, trickle) if s.fileno() >= 0], [], [], 0.2
            )
            for sock in readable:
                name = "idle" if sock is idle else "trickle"
                try:
                    data = sock.recv(1024)
                except OSError:
                    data = b""
                if not data and name not in closed:
                    closed[name] = time.monotonic() - started
        idle.close()
        trickle.close()
        assert set(closed) == {"idle", "trickle"}, closed
        assert all(0.8 < t < 3 for t in closed.values()), closed


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /metrics HTTP/x.y\r\n\r\n", 400),
        (b"\x00\x01\x02\xff\xfe\r\n\r\n", 400),
        (b"GET /metrics?" + b"q=" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 150 + b"\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-Long: " + b"b" * 70000 + b"\r\n\r\n", 431),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405),
    ],
    ids=[
        "one-word",
        "four-words",
        "bad-version",
        "binary",
        "huge-query",
        "big-header",
        "many-headers",
        "huge-header",
        "post",
    ],
)
def test_malformed_requests_get_4xx_and_the_server_goes_on(
    request_bytes: bytes, expected: int
) -> None:
    with running() as port:
        assert status_of(raw_exchange(port, request_bytes)) == expected
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200


def test_rate_limit(tmp_path: Path) -> None:
    web = webconfig.load(write_config(tmp_path, {"rate_limit": {"interval": "1h", "burst": 2}}))
    with running(web=web) as port:
        url = f"http://127.0.0.1:{port}"
        assert [http_get(url + "/metrics")[0] for _ in range(3)] == [200, 200, 429]
        assert http_get(url + "/-/healthy")[0] == 200


def hold_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each hold a thread, sending headers that never end.

    A connection the server refused (a thread was still finishing an earlier request) has its
    503 to read at once; it is replaced until ``count`` are held.
    """
    held: list[socket.socket] = []
    deadline = time.monotonic() + 5
    while len(held) < count:
        assert time.monotonic() < deadline, "could not hold the connections"
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        if select.select([sock], [], [], 0.2)[0]:
            sock.close()  # refused
        else:
            held.append(sock)
    return held


def test_max_requests_flag_is_wired(exporter_factory: Callable[..., object]) -> None:
    exp = exporter_factory("--web.max-requests", "1")  # so 2 connection threads
    port = int(exp.url.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    slow = hold_connections(port, 2)
    try:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert status_of(raw_exchange(port, request)) == 503
    finally:
        for sock in slow:
            sock.close()
    deadline = time.monotonic() + 5
    while exp.get("/metrics")[0] != 200:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
