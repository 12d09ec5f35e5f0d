"""Mistakes in the environment are said as clearly as mistakes in YAML (issue 20, item 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pixcrawler_exporter import config
from pixcrawler_exporter.collectors.database.settings import DatabaseSettings
from pixcrawler_exporter.collectors.temp_storage.settings import TempSettings
from tests.conftest import Exporter, run_cli


def load(tmp_path: Path, env: dict[str, str]) -> config.Loaded:
    return config.load(env, dotenv_path=tmp_path / ".env")


def test_a_misspelt_variable_gets_a_did_you_mean_warning_at_start(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    exp = exporter_factory(env={"PIXCRAWLER_TEMP_DIR": str(tmp_path)})
    exp.scrape()
    assert (
        "WARNING pixcrawler_exporter: environment variable PIXCRAWLER_TEMP_DIR is not a setting; "
        "did you mean PIXCRAWLER_TEMP_DIRS?" in exp.log()
    )


def test_the_crawlers_own_variables_are_left_alone(tmp_path: Path) -> None:
    # Seed 003's .env names the crawler's settings PIXCRAWLER_RESOURCE_*; others are its own.
    (tmp_path / ".env").write_text("PIXCRAWLER_DB_PASSWROD_FILE=/run/x\n")
    env = {"PIXCRAWLER_RESOURCE_MAX_CONCURRENT_CHUNKS": "35", "PIXCRAWLER_API_WORKERS": "4"}
    loaded = load(tmp_path, env)
    assert loaded.warnings == (
        f"{tmp_path / '.env'}: PIXCRAWLER_DB_PASSWROD_FILE is not a setting; did you mean "
        "PIXCRAWLER_DB_PASSWORD_FILE?",
    )


@pytest.mark.parametrize("value", ["/tmp/a,/tmp/b", "/tmp/a:/tmp/b", " /tmp/a , /tmp/b "])
def test_path_lists_take_the_separator_users_type(tmp_path: Path, value: str) -> None:
    temp = load(tmp_path, {"PIXCRAWLER_TEMP_DIRS": value}).config.source(TempSettings)
    assert temp.dirs == ("/tmp/a", "/tmp/b")


def test_a_database_port_that_is_no_number_is_exit_2_at_start(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "--print-config", env={"PIXCRAWLER_DB_URL": "postgresql://u@db:54x2/p"})
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "pixcrawler-exporter: configuration error: environment variable PIXCRAWLER_DB_URL: "
        "'postgresql://u@db:54x2/p' is not valid; expected a URL whose port is a number from 1 "
        "to 65535, not '54x2'"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://redis:63x9/0", "'redis://redis:63x9/0'"),  # no password: as written
        ("redis://:s3cr@t:x@redis:63x9/0", "<redacted>"),
        ("redis://user:pa/ss@redis:63x9/0", "<redacted>"),
        ("redis:/redis:6379", "<redacted> (no scheme:// in it)"),
    ],
)
def test_a_url_is_shown_as_written_unless_it_can_hold_a_password(
    tmp_path: Path, url: str, shown: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, {"PIXCRAWLER_CELERY_BROKER_URL": url})
    assert str(err.value).startswith(
        f"environment variable PIXCRAWLER_CELERY_BROKER_URL: {shown} is not valid"
    )
    for secret in ("s3cr", "pa/ss"):
        assert secret not in str(err.value)


def test_the_crawlers_database_url_says_which_variable_to_set(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://app:pw@db:5432/pixcrawler"
    loaded = load(tmp_path, {"DATABASE_URL": url})
    assert loaded.config.source(DatabaseSettings).url is None
    assert loaded.warnings == (
        "DATABASE_URL is set but the exporter does not read it; for database.url set "
        "PIXCRAWLER_DB_URL (it may be the same value)",
    )
    both = load(tmp_path, {"DATABASE_URL": url, "PIXCRAWLER_DB_URL": url})
    assert both.warnings == ()


def test_a_percent_written_in_yaml_for_a_ratio_says_what_to_write(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("thresholds: {memory: {warning: 80}}\n")
    run = run_cli(tmp_path, "--print-config", "--config", "c.yml")
    assert run.returncode == 2
    assert "expected a ratio from 0 to 1, not a percent: write 0.8 for 80%" in run.stderr
