"""The image's health check without a container: whose answer counts, and where it looks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pixcrawler_exporter.web import healthcheck, identity
from tests.conftest import Exporter, foreign_server, free_port


@pytest.mark.parametrize(
    ("cmdline", "args"),
    [
        (["pixcrawler-exporter"], ()),
        (
            ["/opt/venv/bin/python", "/opt/venv/bin/pixcrawler-exporter", "--listen", ":1"],
            ("--listen", ":1"),
        ),
        (
            ["python3", "-u", "-m", "pixcrawler_exporter", "--no-collector.cpu"],
            ("--no-collector.cpu",),
        ),
        (["python", "-m", "pixcrawler_exporter.web.healthcheck"], None),
        (["pixcrawler-exporter", "rules"], None),
        (["sh", "-c", "pixcrawler-exporter --listen :1"], None),
        (["python", "-m"], None),
    ],
)
def test_exporter_args(cmdline: list[str], args: tuple[str, ...] | None) -> None:
    assert healthcheck.exporter_args(cmdline) == args


def test_an_exporter_is_seen_with_its_arguments_and_token(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory("--no-collector.network")
    (seen,) = [p for p in healthcheck.visible_exporters() if p.pid == exp.proc.pid]
    assert seen.args[-1] == "--no-collector.network"
    assert seen.ppid == os.getpid()
    status, headers, _ = exp.get("/-/healthy")
    assert status == 200 and headers[identity.HEADER] == seen.token
    assert healthcheck.check(exp.url + "/-/healthy", {seen.token}) == (
        True,
        f"{exp.url}/-/healthy: 200",
    )
    # The same exporter, but not the process the check expects.
    healthy, detail = healthcheck.check(exp.url + "/-/healthy", {identity.token(1, "0")})
    assert not healthy and "not by this container's exporter" in detail


def test_another_server_is_not_the_exporter(tmp_path: Path) -> None:
    port = free_port()
    with foreign_server(port):
        healthy, detail = healthcheck.check(f"http://127.0.0.1:{port}/-/healthy", {"x"})
    assert not healthy and "not by this container's exporter" in detail


def test_configured_url_reads_the_exporters_arguments_before_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {"PIXCRAWLER_LISTEN": "127.0.0.1:1"}
    assert healthcheck.configured_url([], env) == "http://127.0.0.1:1/-/healthy"
    url = healthcheck.configured_url(["--listen", "[::1]:2", "--no-collector.cpu"], env)
    assert url == "http://[::1]:2/-/healthy"
    assert healthcheck.configured_url(["--listen=:3"], {}) == "http://127.0.0.1:3/-/healthy"


def test_main_process_is_pid_1_or_the_one_child_of_an_init() -> None:
    p = healthcheck.Process
    assert healthcheck.main_process([p(1, 0, (), "a"), p(7, 1, (), "b")]) == p(1, 0, (), "a")
    assert healthcheck.main_process([p(7, 1, (), "b"), p(9, 5, (), "c")]) == p(7, 1, (), "b")
    assert healthcheck.main_process([p(9, 5, (), "c")]) is None
    assert healthcheck.main_process([p(7, 1, (), "b"), p(8, 1, (), "d")]) is None
