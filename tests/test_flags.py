"""node_exporter's flags, as its users type them, and a --help that says defaults and variables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pixcrawler_exporter import cli, config
from tests.conftest import (
    Exporter,
    free_port,
    parse_samples,
    run_cli,
    spawn_exporter,
    stop_process,
)
from tests.helpers.wait import wait_until


def test_node_exporters_listen_and_telemetry_path_flags(tmp_path: Path) -> None:
    # spawn_exporter passes --listen itself; the later --web.listen-address wins, as argparse
    # takes the last of a flag and its alias.
    port = free_port()
    exp = spawn_exporter(
        tmp_path,
        ["--web.listen-address", f"127.0.0.1:{port}", "--web.telemetry-path", "/internal/metrics"],
    )
    exp.url = f"http://127.0.0.1:{port}"
    try:
        wait_until("it serves", lambda: _answers(exp), 20, exp.log)
        check_telemetry_path(exp)
    finally:
        stop_process(exp.proc)


def _answers(exp: Exporter) -> bool:
    try:
        return exp.get("/-/healthy", timeout=1)[0] == 200
    except OSError:
        return False


def check_telemetry_path(exp: Exporter) -> None:
    status, _, body = exp.get("/internal/metrics")
    assert status == 200
    names = {name for name, _ in parse_samples(body.decode())}
    assert "pixcrawler_exporter_build_info" in names
    assert exp.get("/metrics")[0] == 404
    status, _, page = exp.get("/")
    assert status == 200 and b'href="/internal/metrics"' in page


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--log.level", "WARN", "--log.format", "JSON"], {}, ("warning", "json")),
        (["--log-level", "debug", "--log-format", "text"], {}, ("debug", "text")),
        ([], {"LOG_LEVEL": "WARN"}, ("warning", "text")),
        ([], {"LOG_LEVEL": "Warning", "PIXCRAWLER_LOG_LEVEL": "warn"}, ("warning", "text")),
        ([], {"PIXCRAWLER_LOG_LEVEL": "CRITICAL"}, ("error", "text")),
    ],
)
def test_log_flags_and_the_usual_level_spellings(
    tmp_path: Path, argv: list[str], env: dict[str, str], expected: tuple[str, str]
) -> None:
    run = run_cli(tmp_path, "--print-config", *argv, env=env)
    assert run.returncode == 0, run.stderr
    doc = yaml.safe_load(run.stdout)
    assert (doc["log"]["level"], doc["log"]["format"]) == expected


def test_disable_defaults_leaves_on_only_the_collectors_named(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    exp = exporter_factory("--collector.disable-defaults", "--collector.cpu")
    samples = exp.scrape()
    on = {
        dict(labels)["collector"]
        for (name, labels) in samples
        if name == "pixcrawler_exporter_collector_success"
    }
    assert on == {"cpu"}
    printed = run_cli(tmp_path, "--print-config", "--collector.disable-defaults").stdout
    assert "memory: false  # default, collectors.disable_defaults" in printed
    # The variable does the same, and a collector switched on by variable stays on.
    env = {"PIXCRAWLER_COLLECTOR_DISABLE_DEFAULTS": "true", "PIXCRAWLER_COLLECTOR_DISK": "1"}
    enabled = config.load(env, dotenv_path=tmp_path / ".env").config.collectors.enabled()
    assert {name for name, is_on in enabled.items() if is_on} == {"disk"}


def test_help_shows_each_default_and_variable_and_no_placeholders() -> None:
    text = cli.parser().format_help()
    assert "PATHS." not in text and "WEB." not in text and "LOG." not in text
    flat = " ".join(text.split())
    for spec in config.specs():
        if spec.meta.flag is None:
            continue
        assert spec.meta.flag in text
        for name in spec.meta.env:
            assert name in flat, f"{name} missing from --help"
    assert "--web.listen-address LISTEN, --listen LISTEN" in text
    assert "(default: :8395; env: PIXCRAWLER_LISTEN)" in flat
    assert "(default: /proc; env: PIXCRAWLER_PATH_PROCFS)" in flat


@pytest.mark.parametrize("path", ["metrics", "/status", "/", "/a b", "/m?x=1"])
def test_a_telemetry_path_that_cannot_work_is_exit_2(tmp_path: Path, path: str) -> None:
    run = run_cli(tmp_path, "--print-config", "--web.telemetry-path", path)
    assert run.returncode == 2
    assert "flag --web.telemetry-path" in run.stderr and "Traceback" not in run.stderr


def test_a_value_given_by_an_alias_is_quoted_by_the_alias(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "--print-config", "--listen", "nowhere")
    assert run.returncode == 2
    assert "flag --listen: 'nowhere' is not valid" in run.stderr
