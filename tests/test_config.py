"""Configuration: precedence, provenance, redaction and every class of error (exit 2)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pixcrawler_exporter import config
from pixcrawler_exporter.collectors.azure.settings import AzureSettings
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings
from pixcrawler_exporter.derive.resources import RESOURCES
from tests.conftest import Exporter, run_cli


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    loaded = config.load({}, dotenv_path=tmp_path / ".env")
    assert loaded.config.mode == "local"
    assert loaded.config.poll_interval_seconds == 60
    assert loaded.config.web.listen == f":{config.DEFAULT_PORT}"
    assert not 9100 <= config.DEFAULT_PORT <= 9999
    assert set(loaded.sources.values()) == {"default"}


def test_precedence_flag_over_env_over_file_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "PIXCRAWLER_POLL_INTERVAL_SECONDS=11\nPIXCRAWLER_MODE=azure\n"
        "PIXCRAWLER_LOG_LEVEL=debug\nPIXCRAWLER_LISTEN=:9001\nUNRELATED=1\n"
    )
    cfg_file = tmp_path / "c.yml"
    cfg_file.write_text(
        "poll_interval_seconds: 22\nlog: {level: warning}\nweb: {listen: ':9002'}\n"
    )
    loaded = config.load(
        {"PIXCRAWLER_LOG_LEVEL": "error", "PIXCRAWLER_LISTEN": ":9003"},
        {"web.listen": ":9004"},
        str(cfg_file),
        dotenv_path=tmp_path / ".env",
    )
    cfg = loaded.config
    assert (cfg.mode, loaded.sources["mode"]) == ("azure", ".env")
    assert (cfg.poll_interval_seconds, loaded.sources["poll_interval_seconds"]) == (
        22,
        f"file {cfg_file}",
    )
    assert (cfg.log.level, loaded.sources["log.level"]) == ("error", "env PIXCRAWLER_LOG_LEVEL")
    assert (cfg.web.listen, loaded.sources["web.listen"]) == (":9004", "flag --web.listen-address")


def test_seed_database_url_is_accepted_and_redacted(tmp_path: Path) -> None:
    loaded = config.load(
        {"PIXCRAWLER_DB_URL": "postgresql+asyncpg://user:hunter2@db:5432/pixcrawler"},
        dotenv_path=tmp_path / ".env",
    )
    assert (
        loaded.config.source(DatabaseSettings).url == "postgresql://user:hunter2@db:5432/pixcrawler"
    )
    text = config.render(loaded)
    assert "hunter2" not in text
    assert "url: <redacted>  # env PIXCRAWLER_DB_URL" in text


def test_print_config_is_yaml_that_config_accepts(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "--print-config", "--no-collector.network", env={"PIXCRAWLER_MODE": "azure"}
    )
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["mode"] == "azure"
    assert doc["collectors"]["network"] is False
    assert "mode: azure  # env PIXCRAWLER_MODE" in result.stdout
    assert "network: false  # flag --no-collector.network" in result.stdout
    # Feeding it back gives the same values.
    (tmp_path / "printed.yml").write_text(result.stdout)
    again = config.load(
        {}, config_file=str(tmp_path / "printed.yml"), dotenv_path=tmp_path / ".env"
    )
    assert again.config.mode == "azure" and again.config.collectors.network is False


ERRORS = [
    # (description, env, files, args, words the message must contain)
    (
        "wrong type in env",
        {"PIXCRAWLER_POLL_INTERVAL_SECONDS": "soon"},
        {},
        [],
        ["PIXCRAWLER_POLL_INTERVAL_SECONDS", "'soon'", "a number from 1 to 86400"],
    ),
    (
        "out of range in env",
        {"PIXCRAWLER_POLL_INTERVAL_SECONDS": "0"},
        {},
        [],
        ["PIXCRAWLER_POLL_INTERVAL_SECONDS", "'0'", "from 1 to 86400"],
    ),
    (
        "bad choice",
        {"PIXCRAWLER_MODE": "cloud"},
        {},
        [],
        ["PIXCRAWLER_MODE", "'cloud'", "local, azure"],
    ),
    (
        "bad flag value",
        {},
        {},
        ["--listen", "localhost"],
        ["flag --listen", "'localhost'", "HOST:PORT"],
    ),
    (
        "wrong type in file",
        {},
        {"c.yml": "poll_interval_seconds: [1, 2]\n"},
        ["--config", "c.yml"],
        ["poll_interval_seconds in c.yml", "[1, 2]", "a number"],
    ),
    (
        "unknown key in file",
        {},
        {"c.yml": "web:\n  listen_adress: ':1'\n"},
        ["--config", "c.yml"],
        ["web.listen_adress in c.yml", "unknown setting", "did you mean web.listen?"],
    ),
    (
        "unreadable file",
        {},
        {},
        ["--config", "missing.yml"],
        ["cannot read config file missing.yml", "No such file"],
    ),
    (
        "malformed yaml",
        {},
        {"c.yml": "web: {listen: [\n"},
        ["--config", "c.yml"],
        ["c.yml is not valid YAML", "line"],
    ),
    (
        "section not a mapping",
        {},
        {"c.yml": "web: 5\n"},
        ["--config", "c.yml"],
        ["web in c.yml", "expected a mapping"],
    ),
    (
        "top level not a mapping",
        {},
        {"c.yml": "- a\n"},
        ["--config", "c.yml"],
        ["c.yml", "mapping"],
    ),
    (
        "bad .env value",
        {},
        {".env": "PIXCRAWLER_COLLECTOR_DISK=maybe\n"},
        [],
        ["PIXCRAWLER_COLLECTOR_DISK in .env", "'maybe'", "true or false"],
    ),
    (
        "cgroup_process not a regular expression",
        {"PIXCRAWLER_CGROUP_PROCESS": "celery("},
        {},
        [],
        ["PIXCRAWLER_CGROUP_PROCESS", "'celery('", "a regular expression", "missing )"],
    ),
    (
        "cgroup_path and cgroup_process together",
        {"PIXCRAWLER_CGROUP_PROCESS": "celery", "PIXCRAWLER_CGROUP_PATH": "/docker/abc"},
        {},
        [],
        ["cgroup_path (from env PIXCRAWLER_CGROUP_PATH)", "cgroup_process", "set one of them"],
    ),
    (
        "secret value is not echoed",
        {"PIXCRAWLER_DB_URL": "mysql://u:topsecret@h/db"},
        {},
        [],
        ["PIXCRAWLER_DB_URL", "<redacted>", "postgresql://"],
    ),
]


@pytest.mark.parametrize(
    ("env", "files", "args", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
@pytest.mark.slow
def test_config_errors_exit_2_with_a_clear_message(
    tmp_path: Path, env: dict[str, str], files: dict[str, str], args: list[str], words: list[str]
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    result = run_cli(tmp_path, *args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") <= 3, result.stderr  # one message, not a dump
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert "topsecret" not in result.stderr


def test_env_names_keep_the_seed_names() -> None:
    names = config.env_names()
    for seed_name in (
        "PIXCRAWLER_MODE",
        "PIXCRAWLER_POLL_INTERVAL_SECONDS",
        "PIXCRAWLER_ENVIRONMENT",
        "PIXCRAWLER_DB_URL",
    ):
        assert seed_name in names


def test_every_resource_has_one_threshold_pair_under_its_name() -> None:
    t = config.Thresholds(memory=config.ThresholdPair(0.1, 0.2))
    assert [f.name for f in dataclasses.fields(t)] == list(RESOURCES)
    for resource in RESOURCES:
        assert t.pair(resource) is getattr(t, resource)
    assert t.pair("memory") == config.ThresholdPair(0.1, 0.2)
    keys = [s.key for s in config.specs() if s.key.startswith("thresholds.")]
    assert keys == [f"thresholds.{r}.{s}" for r in RESOURCES for s in ("warning", "critical")]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WEBSITE_INSTANCE_ID": "abc"}, "azure_app_service"),
        ({"FUNCTIONS_WORKER_RUNTIME": "python", "WEBSITE_INSTANCE_ID": "abc"}, "azure_functions"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "kubernetes"),
    ],
)
def test_environment_detection(tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    loaded = config.load(environ, dotenv_path=tmp_path / ".env")
    assert loaded.environment == expected


def test_environment_detection_container_and_local(tmp_path: Path) -> None:
    from pixcrawler_exporter import environment

    root, proc = tmp_path / "root", tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    root.mkdir()
    (proc / "1/cgroup").write_text("0::/init.scope\n")
    assert environment.detect({}, root, proc) == "local"
    (proc / "1/cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    assert environment.detect({}, root, proc) == "docker"
    (proc / "1/cgroup").write_text("0::/\n")
    (root / ".dockerenv").touch()
    assert environment.detect({}, root, proc) == "docker"


def test_environment_override_and_seed_alias(tmp_path: Path) -> None:
    loaded = config.load(
        {"PIXCRAWLER_ENVIRONMENT": "azure", "KUBERNETES_SERVICE_HOST": "x"},
        dotenv_path=tmp_path / ".env",
    )
    assert loaded.environment == "azure_app_service"


def test_seed_004_log_variables_are_honoured(tmp_path: Path) -> None:
    cfg = config.load({"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"}, dotenv_path=tmp_path / "x")
    assert (cfg.config.log.level, cfg.config.log.format) == ("debug", "json")
    assert cfg.sources["log.level"] == "env LOG_LEVEL"
    # Seed 004's "standard" is the human format.
    cfg = config.load({"LOG_FORMAT": "standard"}, dotenv_path=tmp_path / "x")
    assert cfg.config.log.format == "text"
    # The exporter's own name wins when both say the same, and both saying different things
    # is an error rather than one of them silently ignored.
    both = {"PIXCRAWLER_LOG_LEVEL": "warning", "LOG_LEVEL": "WARNING"}
    assert config.load(both, dotenv_path=tmp_path / "x").sources["log.level"] == (
        "env PIXCRAWLER_LOG_LEVEL"
    )
    done = run_cli(
        tmp_path, "--print-config", env={"PIXCRAWLER_LOG_LEVEL": "info", "LOG_LEVEL": "DEBUG"}
    )
    assert done.returncode == 2
    assert "PIXCRAWLER_LOG_LEVEL ('info') and LOG_LEVEL ('DEBUG')" in done.stderr
    done = run_cli(tmp_path, "--print-config", env={"LOG_FORMAT": "xml"})
    assert done.returncode == 2 and "LOG_FORMAT: 'xml' is not valid" in done.stderr


def test_seed_003_resource_environment_is_honoured_not_ignored(tmp_path: Path) -> None:
    loaded = config.load(
        {"PIXCRAWLER_RESOURCE_ENVIRONMENT": "azure"}, dotenv_path=tmp_path / ".env"
    )
    assert loaded.environment == "azure_app_service"
    assert loaded.config.capacity.max_temp_storage_mb == 8000  # that environment's default
    done = run_cli(tmp_path, "--print-config", env={"PIXCRAWLER_RESOURCE_ENVIRONMENT": "mars"})
    assert done.returncode == 2 and "PIXCRAWLER_RESOURCE_ENVIRONMENT: 'mars'" in done.stderr
    done = run_cli(
        tmp_path,
        "--print-config",
        env={"PIXCRAWLER_ENVIRONMENT": "local", "PIXCRAWLER_RESOURCE_ENVIRONMENT": "azure"},
    )
    assert done.returncode == 2 and "disagree" in done.stderr


def test_exporter_logs_json_under_seed_004_log_format(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory(env={"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"})
    exp.scrape()
    lines = [line for line in exp.log().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines), lines


def test_secret_files_fill_the_secrets_and_are_read_on_every_load(tmp_path: Path) -> None:
    pw, secret = tmp_path / "pw", tmp_path / "azure"
    pw.write_text("p@ss word\n")
    secret.write_text("az-secret\r\n")
    env = {
        "PIXCRAWLER_DB_URL": "postgresql://u@h:5432/db?sslmode=disable",
        "PIXCRAWLER_DB_PASSWORD_FILE": str(pw),
        "AZURE_CLIENT_SECRET_FILE": str(secret),
    }
    cfg = config.load(env, dotenv_path=tmp_path / ".env").config
    assert (
        cfg.source(DatabaseSettings).url
        == "postgresql://u@h:5432/db?sslmode=disable&password=p%40ss%20word"
    )
    assert cfg.source(AzureSettings).client_secret == "az-secret"
    pw.write_text("rotated")
    url = config.load(env, dotenv_path=tmp_path / ".env").config.source(DatabaseSettings).url
    assert url is not None and url.endswith("password=rotated")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PIXCRAWLER_DB_URL": "postgresql://u:inline@h/db"},
            "database.password_file: database.url already holds a password",
        ),
        ({}, "database.password_file: set database.url too"),
        (
            {"PIXCRAWLER_DB_URL": "postgresql://u@h/db", "PW": "missing"},
            "database.password_file (env PIXCRAWLER_DB_PASSWORD_FILE): cannot read",
        ),
        (
            {"PIXCRAWLER_DB_URL": "postgresql://u@h/db", "PW": "empty"},
            "is empty",
        ),
    ],
)
def test_secret_file_errors_name_the_setting_never_the_secret(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "pw").write_text("the-secret\n")
    (tmp_path / "empty").write_text("\n")
    name = env.pop("PW", "pw")
    env["PIXCRAWLER_DB_PASSWORD_FILE"] = str(tmp_path / name)
    with pytest.raises(config.ConfigError) as err:
        config.load(env, dotenv_path=tmp_path / ".env")
    assert message in str(err.value)
    assert "the-secret" not in str(err.value)


def test_azure_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("x")
    env = {"AZURE_CLIENT_SECRET": "y", "AZURE_CLIENT_SECRET_FILE": str(tmp_path / "s")}
    with pytest.raises(config.ConfigError, match=r"azure\.client_secret is set too"):
        config.load(env, dotenv_path=tmp_path / ".env")


def test_print_config_round_trips_the_rules_section(tmp_path: Path) -> None:
    given = tmp_path / "given.yml"
    given.write_text(
        "rules:\n"
        '  selector: \'{namespace="crawl", job=~"pix.*"}\'\n'
        "  group_label: cluster\n"
        "  alerts:\n"
        "    PixCrawlerCPUThrottlingHigh: {severity: warning, for: 1h30m}\n"
        "    PixCrawlerChunkFailuresSpike: {disable: true}\n"
    )
    printed = run_cli(tmp_path, "--config", str(given), "--print-config")
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "printed.yml").write_text(printed.stdout)
    first = config.load({}, config_file=str(given), dotenv_path=tmp_path / ".env").config
    again = config.load(
        {}, config_file=str(tmp_path / "printed.yml"), dotenv_path=tmp_path / ".env"
    )
    assert again.config.rules == first.rules
    assert first.rules.selector == 'namespace="crawl", job=~"pix.*"'
    alerts = first.rules.alerts or {}
    assert alerts["PixCrawlerCPUThrottlingHigh"] == config.AlertOverride("warning", 5400)
    assert "for: 90m" in printed.stdout


def test_print_config_loads_back_with_its_secrets_given_again(tmp_path: Path) -> None:
    """A database URL, Azure with a client secret, thresholds and rules: what --print-config
    prints loads back with --config, its secrets (printed as comments, never their values) given
    again by their variables, into the same configuration; without them it loads too."""
    given = tmp_path / "given.yml"
    given.write_text(
        "mode: azure\n"
        "database:\n"
        "  statement_timeout_seconds: 1.5\n"
        "  names: {table: jobs, active_chunks: active}\n"
        "azure:\n"
        "  resource_id: /subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/serverfarms/p\n"
        "  tenant_id: tenant\n"
        "  client_id: client\n"
        "thresholds:\n"
        "  memory: {warning: 0.7, critical: 0.85}\n"
        "  chunks: {warning: 20, critical: 30}\n"
        "rules:\n"
        '  selector: \'job="crawler", namespace=~"crawl-.*"\'\n'
        "  group_label: cluster\n"
        "  alerts: {PixCrawlerChunkFailuresSpike: {disable: true}}\n"
    )
    secrets = {
        "PIXCRAWLER_DB_URL": "postgresql://crawler:hunter2@db:5432/pix?sslmode=require",
        "AZURE_CLIENT_SECRET": "s3cr3t: with # and 'quotes'",
    }
    printed = run_cli(tmp_path, "--config", str(given), "--print-config", env=secrets)
    assert printed.returncode == 0, printed.stderr
    assert "hunter2" not in printed.stdout and "s3cr3t" not in printed.stdout
    assert "  # url: <redacted>  # env PIXCRAWLER_DB_URL" in printed.stdout
    (tmp_path / "printed.yml").write_text(printed.stdout)

    def loaded(path: Path, environ: dict[str, str]) -> config.Config:
        return config.load(environ, {}, str(path), dotenv_path=tmp_path / ".env").config

    assert loaded(tmp_path / "printed.yml", secrets) == loaded(given, secrets)
    again = run_cli(tmp_path, "--config", "printed.yml", "--print-config", env=secrets)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout) == yaml.safe_load(printed.stdout)
    assert "  # url: <redacted>  # env PIXCRAWLER_DB_URL" in again.stdout
    bare = loaded(tmp_path / "printed.yml", {})  # no secrets: no database, Azure's identity
    assert bare.source(DatabaseSettings).url is None
    assert bare.source(AzureSettings).client_secret is None
    assert bare.rules == loaded(given, {}).rules


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "not a regular file (a FIFO)"),
        (lambda p: os.symlink("/dev/zero", p), "not a regular file (a character device)"),
        (lambda p: p.write_bytes(b"x" * (14 * 1024 * 1024)), "more than the 65536 bytes"),
        (lambda p: p.mkdir(), "not a regular file (a directory)"),
    ],
    ids=["fifo", "dev-zero", "14-MB", "directory"],
)
def test_a_secret_file_that_would_block_or_never_end_is_refused_at_once(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    make(tmp_path / "pw")
    env = {
        "PIXCRAWLER_DB_URL": "postgresql://u@h/db",
        "PIXCRAWLER_DB_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    started = time.monotonic()
    with pytest.raises(config.ConfigError) as err:
        config.load(env, dotenv_path=tmp_path / ".env")
    assert time.monotonic() - started < 1.5
    assert str(err.value).startswith("database.password_file (env PIXCRAWLER_DB_PASSWORD_FILE): ")
    assert message in str(err.value)


def test_the_old_alerts_section_is_read_into_rules_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(
        "alerts: {fill_floor: 0.6, chunk_duration_seconds: 900}\nrules: {group_label: cluster}\n"
    )
    loaded = config.load({}, {}, str(tmp_path / "c.yml"), dotenv_path=tmp_path / ".env")
    rules = loaded.config.rules
    assert (rules.fill_floor, rules.chunk_duration_seconds, rules.group_label) == (
        0.6,
        900,
        "cluster",
    )
    assert loaded.sources["rules.fill_floor"] == f"file {tmp_path / 'c.yml'}"
    assert loaded.warnings == (
        f"alerts in {tmp_path / 'c.yml'} is deprecated: its settings are now rules.* "
        "(rules.fill_floor, rules.chunk_duration_seconds); rename the section",
    )
    (tmp_path / "c.yml").write_text("alerts: {fill_floor: 0.6}\nrules: {fill_floor: 0.7}\n")
    with pytest.raises(config.ConfigError, match=r"keep only rules\.fill_floor"):
        config.load({}, {}, str(tmp_path / "c.yml"), dotenv_path=tmp_path / ".env")
