"""Graceful shutdown and configuration reload of a real exporter process."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Exporter, Samples, parse_samples, sample, start_exporter, stop_process
from tests.pg import ROLE, PostgresServer

pytest_plugins = ["tests.pg"]

SLOW_QUERY = {
    "metric": "pixcrawler_slow",
    "help": "Slow.",
    "sql": "SELECT 1 AS v FROM pg_sleep(3)",
    "values": ["v"],
}
FAST_QUERY = {"metric": "pixcrawler_seven", "help": "Seven.", "sql": "SELECT 7 AS v", "values": "v"}


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def post(exporter: Exporter, path: str) -> tuple[int, str]:
    req = urllib.request.Request(exporter.url + path, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.e2e
def test_sigterm_during_a_slow_scrape_still_answers_it(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "config.yml",
        {
            "database": {
                "url": postgres.url,
                "preset": "none",
                "statement_timeout_seconds": 10,
                "queries": [SLOW_QUERY],
            },
        },
    )
    exporter = start_exporter(tmp_path, ["--config", str(cfg)])
    answer: dict[str, Any] = {}

    def scrape() -> None:
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "8"}
        answer["status"], _, answer["body"] = exporter.get("/metrics", headers, timeout=15)
        answer["at"] = time.monotonic()

    try:
        scraper = threading.Thread(target=scrape)
        scraper.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        exporter.proc.send_signal(signal.SIGTERM)
        scraper.join(15)
        code = exporter.proc.wait(10)
    finally:
        stop_process(exporter.proc)
    assert answer["status"] == 200
    # The answer came after the signal: the scrape was in flight, and it is complete.
    assert answer["at"] > signalled
    samples = parse_samples(answer["body"].decode())
    assert sample(samples, "pixcrawler_slow") == 1
    assert sample(samples, "pixcrawler_database_up") == 1
    assert code == 0
    log = exporter.log()
    assert log.count("shutting down") == 1, log
    assert "Traceback" not in log


@pytest.mark.e2e
def test_sigterm_when_idle_exits_at_once(tmp_path: Path) -> None:
    exporter = start_exporter(tmp_path)
    start = time.monotonic()
    exporter.proc.send_signal(signal.SIGINT)
    assert exporter.proc.wait(10) == 0
    assert time.monotonic() - start < 3
    assert exporter.log().count("shutting down") == 1


def reload_config(
    postgres: PostgresServer, password_file: Path, temp_dir: Path, disk_warning: float
) -> dict[str, Any]:
    return {
        "database": {
            # No password in the URL: it comes from the file, as a mounted secret does.
            "url": f"postgresql://{ROLE}@127.0.0.1:{postgres.port}/pixcrawler",
            "password_file": str(password_file),
            "preset": "none",
            "queries": [FAST_QUERY],
        },
        "temp": {"dirs": [str(temp_dir)], "scan_interval_seconds": 1},
        "thresholds": {"disk": {"warning": disk_warning, "critical": 0.99}},
    }


def which_config(samples: Samples, dirs: tuple[Path, Path]) -> int:
    """0 or 1: the configuration this scrape answered from wholly; fails on a mixed answer."""
    warning = sample(samples, "pixcrawler_threshold", resource="disk", severity="warning")
    seen = [sample(samples, "pixcrawler_temp_storage_bytes", directory=str(d)) for d in dirs]
    assert sample(samples, "pixcrawler_database_up") == 1
    assert sample(samples, "pixcrawler_seven") == 7
    if warning == 0.5:
        assert seen == [100, None], seen
        return 0
    assert warning == 0.6 and seen == [None, 200], (warning, seen)
    return 1


@pytest.mark.e2e
def test_reload_changes_thresholds_temp_dirs_and_password_without_losing_a_scrape(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    old_pw, new_pw = postgres.password, "rotated-pw-7f3a9c"
    dirs = (tmp_path / "tmp-a", tmp_path / "tmp-b")
    for size, d in zip((100, 200), dirs, strict=True):
        d.mkdir()
        (d / "x.jpg").write_bytes(b"x" * size)
    secret = tmp_path / "db-password"
    secret.write_text(old_pw + "\n")
    cfg = write_config(tmp_path / "config.yml", reload_config(postgres, secret, dirs[0], 0.5))
    exporter = start_exporter(tmp_path, ["--config", str(cfg), "--web.enable-lifecycle"])
    seen: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def scrape_all_along() -> None:
        while not done.is_set():
            try:
                seen.append(which_config(exporter.scrape(), dirs))
            except AssertionError as exc:  # collected, not raised in a thread
                failures.append(repr(exc))

    scraper = threading.Thread(target=scrape_all_along)
    try:
        time.sleep(1.5)  # the first temp scan is done
        scraper.start()
        time.sleep(0.5)
        first = exporter.scrape()
        loaded_at = sample(
            first, "pixcrawler_exporter_config_last_reload_success_timestamp_seconds"
        )
        # Rotate: the file first, as a secret store updates the mount, then the server's role.
        secret.write_text(new_pw + "\n")
        postgres.execute(f"ALTER ROLE {ROLE} PASSWORD '{new_pw}'")
        rotated = time.time()
        write_config(cfg, reload_config(postgres, secret, dirs[1], 0.6))
        assert post(exporter, "/-/reload") == (200, "")
        time.sleep(1.0)
        # The old collector's connection is closed; the new one logged in with the new password
        # (the only one the server takes now).
        backends = postgres.query(
            f"SELECT backend_start FROM pg_stat_activity WHERE usename = '{ROLE}'"
        )
        assert backends and all(b[0].timestamp() > rotated for b in backends), backends
    finally:
        done.set()
        scraper.join(30)
        postgres.execute(f"ALTER ROLE {ROLE} PASSWORD '{old_pw}'")
        stop_process(exporter.proc)
    assert not failures, failures[:3]
    assert seen[0] == 0 and seen[-1] == 1 and seen == sorted(seen), seen
    log = exporter.log()
    assert "configuration reloaded" in log
    rebuilt = log.split("configuration reloaded", 1)[1].splitlines()[0]
    assert "database" in rebuilt and "temp_storage" in rebuilt and "memory" not in rebuilt
    assert old_pw not in log and new_pw not in log
    assert loaded_at is not None


@pytest.mark.e2e
def test_a_bad_reload_keeps_the_running_config(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    good = {"temp": {"dirs": [str(temp)]}, "thresholds": {"disk": {"warning": 0.5}}}
    cfg = write_config(tmp_path / "config.yml", good)
    exporter = start_exporter(tmp_path, ["--config", str(cfg), "--web.enable-lifecycle"])
    try:
        before = exporter.scrape()
        loaded_at = sample(
            before, "pixcrawler_exporter_config_last_reload_success_timestamp_seconds"
        )
        assert sample(before, "pixcrawler_exporter_config_last_reload_successful") == 1
        write_config(cfg, {**good, "thresholds": {"disk": {"warning": 0.95}}})
        status, body = post(exporter, "/-/reload")
        assert status == 500 and "thresholds.disk.warning" in body, body
        after = exporter.scrape()
        assert sample(after, "pixcrawler_threshold", resource="disk", severity="warning") == 0.5
        assert sample(after, "pixcrawler_exporter_config_last_reload_successful") == 0
        assert (
            sample(after, "pixcrawler_exporter_config_last_reload_success_timestamp_seconds")
            == loaded_at
        )
        # A missing secret file is refused the same way, naming the setting.
        write_config(cfg, {**good, "azure": {"client_secret_file": str(tmp_path / "nope")}})
        status, body = post(exporter, "/-/reload")
        assert status == 500 and "azure.client_secret_file" in body, body
        # SIGHUP reloads too; a restart-only setting is named and keeps its running value.
        write_config(
            cfg, {**good, "thresholds": {"disk": {"warning": 0.7}}, "web": {"max_requests": 3}}
        )
        exporter.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = exporter.scrape()
            if sample(now, "pixcrawler_exporter_config_last_reload_successful") == 1:
                break
            time.sleep(0.1)
        assert sample(now, "pixcrawler_threshold", resource="disk", severity="warning") == 0.7
        assert exporter.proc.poll() is None
    finally:
        stop_process(exporter.proc)
    log = exporter.log()
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == 2 and "thresholds.disk.warning" in refused[0], refused
    assert "a restart is needed" in log and "settings=web" in log
    # A collector left out for want of settings says so once, not again on every reload.
    assert log.count("database collector off") == 1, log


@pytest.mark.e2e
def test_reload_endpoint_needs_the_lifecycle_flag(tmp_path: Path) -> None:
    exporter = start_exporter(tmp_path)
    try:
        assert post(exporter, "/-/reload")[0] == 405
    finally:
        stop_process(exporter.proc)


def test_the_docs_name_every_restart_only_setting() -> None:
    from pixcrawler_exporter.app import RESTART_ONLY
    from tests.conftest import REPO

    text = (REPO / "docs/deployment.md").read_text()
    section = text.split("### Signals, reload and shutdown", 1)[1].split("\n## ", 1)[0]
    for key in RESTART_ONLY:
        assert f"`{key}`" in section, key


def test_a_rebuild_keeps_the_collectors_whose_settings_did_not_change(tmp_path: Path) -> None:
    from pixcrawler_exporter import config
    from pixcrawler_exporter.collect import registry

    def build(env: dict[str, str], previous: registry.Built | None = None) -> registry.Built:
        loaded = config.load(env, dotenv_path=tmp_path / "absent.env")
        return registry.build(loaded, previous)

    base = {"PIXCRAWLER_TEMP_DIRS": str(tmp_path)}
    first = build(base)
    names = [c.name for c in first.collectors]
    assert {"memory", "disk", "temp_storage"} <= set(names)
    # Thresholds are no collector's settings: everything is taken over.
    same = build({**base, "PIXCRAWLER_DISK_THRESHOLD_WARN": "50"}, first)
    assert all(a is b for a, b in zip(same.collectors, first.collectors, strict=True))
    assert same.new_since(first) == []
    # New temp directories rebuild the temp collector and nothing else.
    moved = build({"PIXCRAWLER_TEMP_DIRS": str(tmp_path / "elsewhere")}, first)
    assert [c.name for c in moved.new_since(first)] == ["temp_storage"]
    assert [c.name for c in moved.collectors] == names
    for c in {id(c): c for c in [*first.collectors, *moved.collectors]}.values():
        c.close()
