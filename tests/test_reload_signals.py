"""SIGHUP under pressure: one reload thread, fed by the signal, whatever the signals and the
process's thread budget (issue 21, item 3)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from pixcrawler_exporter import app
from pixcrawler_exporter.collectors.temp_storage.settings import TempSettings
from pixcrawler_exporter.config import ConfigError
from pixcrawler_exporter.config.secretfile import read_secret
from tests.conftest import Exporter, start_exporter, stop_process
from tests.helpers.realcgroup import joiner, pids_cgroup
from tests.helpers.wait import wait_until


def threads(exporter: Exporter) -> int:
    for line in Path(f"/proc/{exporter.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def hold(port: int, count: int) -> list[socket.socket]:
    """``count`` idle connections, each taking a connection thread while one can be had."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


@pytest.mark.e2e
@pytest.mark.slow
def test_sighup_with_no_thread_to_spare_does_not_end_the_process(tmp_path: Path) -> None:
    # As found: pids.max 60 and 100 idle connections, then one SIGHUP ended the process
    # ("can't start new thread" raised in serve_forever).
    with pids_cgroup(60) as dirs:
        exporter = start_exporter(tmp_path, preexec=joiner(dirs))
        port = int(exporter.url.rsplit(":", 1)[1])
        held: list[socket.socket] = []
        try:
            held = hold(port, 100)
            wait_until("every task taken", lambda: threads(exporter) >= 58, 10)
            for _ in range(3):
                exporter.proc.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                assert exporter.proc.poll() is None, exporter.log()
            assert exporter.get("/-/healthy")[0] == 200  # answered by the overflow thread
            for sock in held:
                sock.close()
            held = []
            # The threads come back, and the exporter with them: reloaded, scraping.
            wait_until(
                "a scrape",
                lambda: exporter.get("/metrics", timeout=5)[0] == 200,
                15,
                exporter.log,
            )
        finally:
            for sock in held:
                sock.close()
            stop_process(exporter.proc)
    log = exporter.log()
    assert "configuration reloaded" in log, log
    assert "Traceback" not in log, log


@pytest.mark.e2e
@pytest.mark.slow
def test_a_sighup_storm_keeps_one_reload_thread(tmp_path: Path) -> None:
    # A database collector with 50 custom queries makes a reload take a few milliseconds: on
    # a thread per signal, 500 signals 2 ms apart piled up nearly 200 threads.
    queries = [
        {"metric": f"pixcrawler_q{i}", "help": "Q.", "sql": f"SELECT {i} AS v", "values": ["v"]}
        for i in range(50)
    ]
    doc = {
        "database": {"url": "postgresql://u@127.0.0.1:1/db", "preset": "none", "queries": queries}
    }
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump(doc))
    exporter = start_exporter(tmp_path, ["--config", str(cfg)])
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], threads(exporter))
            time.sleep(0.005)

    try:
        time.sleep(1)  # the first scrape of the status loop has made its threads
        before = threads(exporter)
        sampler = threading.Thread(target=sample)
        sampler.start()
        for _ in range(500):
            os.kill(exporter.proc.pid, signal.SIGHUP)
            time.sleep(0.002)
        # The storm coalesces: a few reloads, the last one after the last signal.
        time.sleep(2)
        done.set()
        sampler.join()
        assert exporter.proc.poll() is None, exporter.log()
        reloads = exporter.log().count("configuration reloaded")
        assert exporter.get("/metrics")[0] == 200
    finally:
        done.set()
        stop_process(exporter.proc)
    # A reload may start a collector's pool thread; never one per signal.
    assert peak[0] <= before + 3, (before, peak[0])
    assert 1 <= reloads < 500, reloads


def no_threads(_thread: threading.Thread) -> None:
    raise RuntimeError("can't start new thread")


def test_no_thread_to_retire_on_retires_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []
    monkeypatch.setattr(threading.Thread, "start", no_threads)
    app._retire(lambda: released.append(threading.current_thread().name))
    assert released == [threading.current_thread().name]


def test_no_thread_to_read_a_secret_on_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    monkeypatch.setattr(threading.Thread, "start", no_threads)
    with pytest.raises(ConfigError, match=r"^database.password_file \(file c.yml\): cannot read"):
        read_secret(str(secret), "database.password_file", "file c.yml")


def temp_dirs(exporter: app.App) -> tuple[str, ...]:
    return tuple(exporter.config.source(TempSettings).dirs)


def test_a_collector_that_finds_no_thread_refuses_the_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixcrawler_exporter import config
    from pixcrawler_exporter.collect import registry

    env = {"PIXCRAWLER_TEMP_DIRS": str(tmp_path)}

    def load() -> config.Loaded:
        return config.load(env, dotenv_path=tmp_path / "absent.env")

    loaded = load()
    exporter = app.App(loaded, registry.build(loaded), load)
    try:
        # New temp directories: a new temp collector, whose scan needs a thread of its own.
        env["PIXCRAWLER_TEMP_DIRS"] = str(tmp_path / "elsewhere")
        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", no_threads)
            error = exporter.reload()
        assert error == "RuntimeError: can't start new thread"
        assert temp_dirs(exporter) == (str(tmp_path),)  # the running one stays
        assert exporter.reload() is None  # and the next reload, with threads, goes ahead
        assert temp_dirs(exporter) == (str(tmp_path / "elsewhere"),)
    finally:
        exporter.close()
