"""What a reload reads from files: the web config, a config file that lost its contents, and
secret files that block or never end (issue 21, items 4, 5 and 6)."""

from __future__ import annotations

import base64
import os
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bcrypt
import pytest
import trustme
import yaml

from pixcrawler_exporter.config import ConfigError
from pixcrawler_exporter.web import webconfig
from tests.conftest import (
    Exporter,
    Samples,
    free_port,
    parse_samples,
    sample,
    spawn_exporter,
    start_exporter,
    stop_process,
)
from tests.conftest import test_env as environment  # not collected as a test
from tests.helpers.wait import wait_until
from tests.helpers.web import served_cert

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts are rewritten
    from tests.pg import PostgresServer

pytest_plugins = ["tests.pg"]

OLD_PW, NEW_PW = "old horse battery", "new staple correct"
RELOAD_OK = "pixcrawler_exporter_config_last_reload_successful"


def basic(password: str, user: str = "prometheus") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def write_yaml(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def post_reload(
    exporter: Exporter, headers: Mapping[str, str] | None = None, context: Any = None
) -> tuple[int, str]:
    req = urllib.request.Request(
        exporter.url + "/-/reload", data=b"", method="POST", headers=dict(headers or {})
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(exporter: Exporter, headers: Mapping[str, str] | None = None) -> Samples:
    status, _, body = exporter.get("/metrics", headers)
    assert status == 200, (status, body)
    return parse_samples(body.decode())


# --- item 4: the web config ---------------------------------------------------------------------


@pytest.mark.e2e
def test_a_reload_rereads_the_web_configs_users(tmp_path: Path) -> None:
    # As found: after the hash was replaced and the exporter reloaded, the revoked password still
    # got 200 and the new one 401.
    web = write_yaml(tmp_path / "web.yml", {"basic_auth_users": {"prometheus": hashed(OLD_PW)}})
    exporter = start_exporter(tmp_path, ["--web.config.file", str(web), "--web.enable-lifecycle"])
    try:
        assert exporter.get("/metrics", basic(OLD_PW))[0] == 200
        write_yaml(web, {"basic_auth_users": {"prometheus": hashed(NEW_PW)}})
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(
            "the new password",
            lambda: exporter.get("/metrics", basic(NEW_PW))[0] == 200,
            10,
            exporter.log,
        )
        assert exporter.get("/metrics", basic(OLD_PW))[0] == 401
        # A web config that does not load is refused whole: the running one stays.
        write_yaml(web, {"basic_auth_users": {"prometheus": "$2x$10$" + "a" * 53}})
        status, body = post_reload(exporter, basic(NEW_PW))
        assert status == 500 and "basic_auth_users.prometheus" in body, body
        samples = scrape(exporter, basic(NEW_PW))
        assert sample(samples, RELOAD_OK) == 0
        assert exporter.get("/metrics", basic(OLD_PW))[0] == 401
    finally:
        stop_process(exporter.proc)
    assert "$2x$10$" not in exporter.log()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def cert_of(port: int, ca: trustme.CA) -> bytes:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return served_cert(port, ctx)


def issue(ca: trustme.CA, directory: Path, name: str) -> dict[str, str]:
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.crt"))
    leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    return {"cert_file": f"{name}.crt", "key_file": f"{name}.key"}


@pytest.mark.e2e
def test_a_reload_rereads_the_web_configs_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    web = write_yaml(tmp_path / "web.yml", {"tls_server_config": issue(ca, tmp_path, "one")})
    exporter = spawn_exporter(tmp_path, ["--web.config.file", str(web)])
    port = int(exporter.url.rsplit(":", 1)[1])
    try:
        wait_until("a TLS handshake", lambda: _try_cert(port, ca), 20, exporter.log)
        before = cert_of(port, ca)
        # Another pair under other names: only a reload of the web config can find it.
        write_yaml(web, {"tls_server_config": issue(ca, tmp_path, "two")})
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until("the new certificate", lambda: cert_of(port, ca) != before, 10)
        after = cert_of(port, ca)
        assert after == ssl.PEM_cert_to_DER_cert((tmp_path / "two.crt").read_text())
        # Turning TLS off takes a restart: refused, and TLS goes on.
        write_yaml(web, {"basic_auth_users": {"prometheus": hashed(OLD_PW)}})
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until("the refusal", lambda: "reload refused" in exporter.log(), 10)
        assert cert_of(port, ca) == after
    finally:
        stop_process(exporter.proc)
    assert "turning TLS on or off needs a restart" in exporter.log()


def test_a_fifo_for_a_certificate_or_a_web_config_is_refused_at_once(
    tmp_path: Path, ca: trustme.CA
) -> None:
    os.mkfifo(tmp_path / "fifo")
    tls = {**issue(ca, tmp_path, "one"), "key_file": "fifo"}
    cases = [
        (str(write_yaml(tmp_path / "web.yml", {"tls_server_config": tls})), "fifo: not a regular"),
        (str(tmp_path / "fifo"), "cannot read web config file"),
    ]
    for path, message in cases:
        error = load_within(path, 5)
        assert message in error and "(a FIFO)" in error, (path, error)


def load_within(path: str, seconds: float) -> str:
    """The message webconfig.load(path) fails with; 'hung' when it takes over ``seconds``."""
    outcome: list[str] = []

    def load() -> None:
        try:
            webconfig.load(path)
            outcome.append("loaded")
        except ConfigError as exc:
            outcome.append(str(exc))

    loader = threading.Thread(target=load, daemon=True)  # left behind should it hang
    loader.start()
    loader.join(seconds)
    return outcome[0] if outcome else "hung"


def _try_cert(port: int, ca: trustme.CA) -> bool:
    try:
        cert_of(port, ca)
        return True
    except OSError:
        return False


# --- item 5: a config file that lost its contents -------------------------------------------


def collectors(samples: Samples) -> set[str]:
    return {
        dict(labels)["collector"]
        for name, labels in samples
        if name == "pixcrawler_exporter_collector_success"
    }


def disk_warning(samples: Samples) -> float | None:
    return sample(samples, "pixcrawler_threshold", resource="disk", severity="warning")


@pytest.mark.e2e
def test_an_emptied_config_file_is_refused_on_reload(tmp_path: Path) -> None:
    # As found: '> exporter.yml' then SIGHUP dropped the database collector, reset the
    # thresholds, and last_reload_successful stayed 1.
    doc = {
        "database": {"url": "postgresql://u@127.0.0.1:1/db"},
        "thresholds": {"disk": {"warning": 0.5}},
    }
    cfg = write_yaml(tmp_path / "exporter.yml", doc)
    exporter = start_exporter(tmp_path, ["--config", str(cfg), "--web.enable-lifecycle"])
    try:
        assert "database" in collectors(scrape(exporter))
        cfg.write_text("")
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until("the refusal", lambda: "reload refused" in exporter.log(), 10, exporter.log)
        samples = scrape(exporter)
        assert sample(samples, RELOAD_OK) == 0
        assert "database" in collectors(samples) and disk_warning(samples) == 0.5
        # An in-place write cut short: a whole section missing.
        write_yaml(cfg, {"thresholds": doc["thresholds"]})
        status, body = post_reload(exporter)
        assert status == 500 and "database" in body and str(cfg) in body, body
        assert "database" in collectors(scrape(exporter))
        # A section removed on purpose is left empty for the reload that removes it.
        write_yaml(cfg, {"database": {}, "thresholds": doc["thresholds"]})
        assert post_reload(exporter) == (200, "")
        samples = scrape(exporter)
        assert sample(samples, RELOAD_OK) == 1 and "database" not in collectors(samples)
        # Once it is gone, it may go from the file too.
        write_yaml(cfg, {"thresholds": doc["thresholds"]})
        assert post_reload(exporter) == (200, "")
    finally:
        stop_process(exporter.proc)
    refused = [line for line in exporter.log().splitlines() if "reload refused" in line]
    assert len(refused) == 2 and "is empty" in refused[0], refused


@pytest.mark.e2e
def test_an_empty_config_file_at_start_runs_on_defaults_with_a_warning(tmp_path: Path) -> None:
    cfg = tmp_path / "exporter.yml"
    cfg.write_text("# nothing yet\n")
    exporter = start_exporter(tmp_path, ["--config", str(cfg)])
    try:
        assert sample(scrape(exporter), RELOAD_OK) == 1
    finally:
        stop_process(exporter.proc)
    warned = [line for line in exporter.log().splitlines() if "WARNING" in line]
    assert any("is empty" in line and str(cfg) in line for line in warned), warned


# --- item 6: secret files that block or never end ----------------------------------------------


def start_with_secret(tmp_path: Path, secret: str) -> subprocess.CompletedProcess[str]:
    """Start with ``database.password_file`` naming ``secret``; at most 10 s."""

    def small_address_space() -> None:
        # Should the file be read whole (/dev/zero), 1 GiB ends it instead of the machine.
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {
        "PIXCRAWLER_DB_URL": "postgresql://u@127.0.0.1:1/db",
        "PIXCRAWLER_DB_PASSWORD_FILE": secret,
    }
    return subprocess.run(
        [sys.executable, "-m", "pixcrawler_exporter", "--listen", f"127.0.0.1:{free_port()}"],
        cwd=tmp_path,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=10,
        preexec_fn=small_address_space,
    )


@pytest.mark.e2e
def test_a_fifo_password_file_stops_the_start_at_once(tmp_path: Path) -> None:
    # As found: start-up hung before it listened, for ever.
    fifo = tmp_path / "db-password"
    os.mkfifo(fifo)
    began = time.monotonic()
    result = start_with_secret(tmp_path, str(fifo))
    assert time.monotonic() - began < 5
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "database.password_file" in lines[0], lines
    assert "not a regular file (a FIFO)" in lines[0], lines
    assert "listening" not in result.stderr + result.stdout


@pytest.mark.e2e
def test_dev_zero_as_a_password_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # As found: 3.3 GB read, then a MemoryError traceback.
    result = start_with_secret(tmp_path, "/dev/zero")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "database.password_file" in lines[0], lines
    assert "not a regular file (a character device)" in lines[0], lines


@pytest.mark.e2e
@pytest.mark.slow
def test_a_password_file_replaced_by_a_fifo_is_refused_on_reload(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    # As found: the reload held the reload lock for ever, later reloads queued behind it in the
    # request slots, and scrapes got 503.
    secret = tmp_path / "db-password"
    secret.write_text(postgres.password + "\n")
    database = {
        "url": postgres.url.replace(f":{postgres.password}@", "@"),  # from the file instead
        "password_file": str(secret),
        "preset": "none",
        "queries": [
            {"metric": "pixcrawler_seven", "help": "7.", "sql": "SELECT 7 AS v", "values": ["v"]}
        ],
    }
    cfg = write_yaml(tmp_path / "exporter.yml", {"database": database})
    exporter = start_exporter(tmp_path, ["--config", str(cfg), "--web.enable-lifecycle"])
    try:
        assert sample(scrape(exporter), "pixcrawler_seven") == 7
        secret.unlink()
        os.mkfifo(secret)
        for _ in range(12):
            began = time.monotonic()
            status, body = post_reload(exporter)
            assert time.monotonic() - began < 3
            assert status == 500 and "database.password_file" in body and "FIFO" in body, body
            samples = scrape(exporter)
            # The running configuration, and its password, stay.
            assert sample(samples, "pixcrawler_seven") == 7
            assert sample(samples, RELOAD_OK) == 0
        secret.unlink()
        secret.write_text(postgres.password + "\n")
        assert post_reload(exporter) == (200, "")
        samples = scrape(exporter)
        assert sample(samples, RELOAD_OK) == 1 and sample(samples, "pixcrawler_seven") == 7
    finally:
        stop_process(exporter.proc)
    assert postgres.password not in exporter.log()
