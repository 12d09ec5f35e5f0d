"""Whatever an operator writes, the loaders answer with a configuration or a ConfigError.

Hypothesis throws variables, flags, YAML documents and web config files at them; any other
exception (a traceback for the operator) fails. A few cases go through the real process to see
that such an error is a message and exit 2.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixcrawler_exporter import cli, config
from pixcrawler_exporter.web import webconfig
from tests.conftest import run_cli

# Hundreds of generated inputs per test, many run through the CLI in a subprocess.
pytestmark = pytest.mark.slow

SPECS = list(config.specs())
ENV_NAMES = sorted(config.env_names())
KEYS = [spec.key for spec in SPECS]
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in KEYS if "." in key})
FLAGS = sorted(
    (str(spec.meta.flag), isinstance(spec.default, bool)) for spec in SPECS if spec.meta.flag
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that sit on the edges of the parsers, mixed with arbitrary text.
EDGES = [
    "", " ", "0", "-1", "1e309", "nan", "inf", "-inf", "0x10", "1_000", "true", "yes", "off",
    "12.5", "100%", "/", "/tmp", "relative", ":8395", "[::1]:80", "[::1", "host:99999", "a:b:c",
    "\x00", "\u00e9", "\n", "${HOME}", "postgresql://u:p@h/db", "azure", "auto", "json",
    # Hostile ones (issue 13): huge numbers, bytes that are not UTF-8 as the environment gives
    # them, URLs libpq reads otherwise than urllib does.
    "1" + "0" * 400, "9" * 5000, "1e400", "/tmp/bad\udcffdir", "postgresql://u:pa/ss@h/db",
    "postgresql://u:p?w@h/db", "postgresql://u:p w@h/db",
]  # fmt: skip
text_values = st.sampled_from(EDGES) | st.text(max_size=30)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text_values
)
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
config_keys = st.sampled_from(KEYS + SECTIONS) | st.text(max_size=12)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Mostly mappings shaped like the real file (sections of known keys), sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(yaml_values)
    doc: dict[str, Any] = {}
    for key in draw(st.lists(config_keys, max_size=5)):
        section, _, leaf = key.rpartition(".")
        target = doc
        if section and section in SECTIONS:
            for part in section.split("."):
                nxt = target.setdefault(part, {})
                if not isinstance(nxt, dict):
                    break
                target = nxt
            else:
                target[leaf] = draw(yaml_values)
                continue
        target[key] = draw(yaml_values)
    return doc


def _load(env: dict[str, str], flags: dict[str, Any], text: str | bytes | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = None
        if text is not None:
            path = os.path.join(tmp, "config.yml")
            Path(path).write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            loaded = config.load(env, flags, path, dotenv_path=Path(tmp, ".env"))
        except config.ConfigError as exc:
            assert str(exc)
        else:
            assert isinstance(loaded.config, config.Config)
            config.render(loaded)  # --print-config must not fail on what load accepted


@FUZZ
@given(env=st.dictionaries(st.sampled_from(ENV_NAMES), text_values, max_size=6))
def test_environment_values(env: dict[str, str]) -> None:
    _load({k: v.replace("\x00", "") for k, v in env.items()}, {}, None)


@FUZZ
@given(flags=st.dictionaries(st.sampled_from(KEYS), text_values | st.booleans(), max_size=6))
def test_flag_values(flags: dict[str, Any]) -> None:
    _load({}, flags, None)


@FUZZ
@given(doc=documents())
def test_yaml_documents(doc: Any) -> None:
    _load({}, {}, yaml.safe_dump(doc, allow_unicode=True))


# YAML text yaml.safe_dump would never write (issue 13): huge integers, repeated keys.
HOSTILE_YAML = st.sampled_from(
    [
        "poll_interval_seconds: 1" + "0" * 400,
        "poll_interval_seconds: " + "9" * 5000,
        "web:\n  max_requests: 0x" + "f" * 64,
        "poll_interval_seconds: 1\npoll_interval_seconds: 2",
        "log: {level: info, level: debug}",
        "database:\n  queries:\n    - {metric: pixcrawler_threshold, help: h, sql: SELECT 1 AS v,"
        " values: [v]}",
    ]
)


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200) | HOSTILE_YAML)
def test_yaml_text_that_may_not_be_yaml(text: str | bytes) -> None:
    _load({}, {}, text)


# Lines python-dotenv reads, or cannot: unclosed quotes, exports, comments, interpolation.
dotenv_lines = st.sampled_from(
    [
        'PIXCRAWLER_LOG_LEVEL="9',
        "PIXCRAWLER_LOG_LEVEL='debug",
        "export PIXCRAWLER_LOG_LEVEL=debug",
        "PIXCRAWLER_WEB_MAX_REQUESTS=" + "9" * 5000,
        "# PIXCRAWLER_LOG_LEVEL=debug",
        "PIXCRAWLER_DB_URL=postgresql://u:${PASSWORD}@h/db",
        "===",
        "",
    ]
) | st.builds(lambda n, v: f"{n}={v}", st.sampled_from(ENV_NAMES), text_values)


@FUZZ
@given(text=st.text(max_size=200) | st.lists(dotenv_lines, max_size=6).map("\n".join))
def test_dotenv_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # surrogateescape: a value from EDGES stands for bytes that are not UTF-8.
        Path(tmp, ".env").write_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            config.load({}, {}, None, dotenv_path=Path(tmp, ".env"))
        except config.ConfigError as exc:
            assert str(exc)


web_keys = st.sampled_from(
    [
        f"{section}.{key}" if section else key
        for section, keys in webconfig.KEYS.items()
        for key in keys
    ]
) | st.text(max_size=10)


@st.composite
def web_documents(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(yaml_values)
    doc: dict[str, Any] = {}
    for key in draw(st.lists(web_keys, max_size=5)):
        section, _, leaf = key.partition(".")
        value = draw(yaml_values)
        if leaf and isinstance(doc.setdefault(section, {}), dict):
            doc[section][leaf] = value
        else:
            doc[key] = value
    return doc


@st.composite
def tls_documents(draw: st.DrawFn) -> Any:
    """Both halves of the pair present, so the checks behind 'missing key' are reached too."""
    names = st.sampled_from(["server.crt", "server.key", "missing.pem", "/dev/null", ".", "a\x00"])
    tls = {
        "cert_file": draw(names | text_values),
        "key_file": draw(names | text_values),
        "client_auth_type": draw(st.sampled_from([*webconfig.CLIENT_AUTH_TYPES, None, "x"])),
        "min_version": draw(st.sampled_from([*webconfig.TLS_VERSIONS, None, "TLS10", 12])),
        "max_version": draw(st.sampled_from([*webconfig.TLS_VERSIONS, None])),
    }
    if draw(st.booleans()):
        tls["client_ca_file"] = draw(names | text_values)
    return {"tls_server_config": {k: v for k, v in tls.items() if v is not None}}


def _load_web(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "web.yml")
        path.write_text(text)
        try:
            web = webconfig.load(str(path))
        except ConfigError as exc:
            assert str(path) in str(exc)
        else:
            assert isinstance(web, webconfig.WebConfig)


@FUZZ
@given(doc=web_documents() | tls_documents())
def test_web_config_documents(doc: Any) -> None:
    _load_web(yaml.safe_dump(doc, allow_unicode=True))


# Web config text yaml.safe_dump would never write: repeated keys, huge numbers, odd hashes.
HOSTILE_WEB = [
    "rate_limit:\n  burst: 1\n  burst: 2\n  interval: 1s\n",
    "rate_limit: {interval: 1s, burst: 1" + "0" * 400 + "}\n",
    "rate_limit: {interval: 1s, burst: " + "7" * 5000 + "}\n",
    "basic_auth_users:\n  u: $2$10$" + "a" * 53 + "\n",
    "basic_auth_users:\n  u: $2x$10$" + "a" * 53 + "\n  u: $2y$10$" + "a" * 53 + "\n",
    "tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n",
]


@FUZZ
@given(text=st.sampled_from(HOSTILE_WEB) | st.text(max_size=200))
def test_web_config_text(text: str) -> None:
    _load_web(text)


ConfigError = config.ConfigError


@st.composite
def argv(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for flag, is_bool in draw(st.lists(st.sampled_from(FLAGS), max_size=5)):
        if is_bool:
            args.append(flag if draw(st.booleans()) else flag.replace("--", "--no-", 1))
        else:
            args.append(f"{flag}={draw(text_values)}")
    return args


@settings(FUZZ, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=argv())
def test_command_line(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in [n for n in os.environ if n.startswith("PIXCRAWLER_")]:
        monkeypatch.delenv(name)
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["--print-config", *[a.replace("\x00", "") for a in args]])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert "error" in err.getvalue()


@pytest.mark.parametrize(
    ("args", "env", "file_text"),
    [
        ((), {"PIXCRAWLER_POLL_INTERVAL_SECONDS": "nan"}, None),
        (("--listen", "[::1"), {}, None),
        ((), {}, "web: {listen: [1, 2]}\n"),
        ((), {}, "\tweb:\n  - :"),
        ((), {}, "thresholds: {disk: {warning: 0.95, critical: 0.9}}\n"),
    ],
)
def test_bad_configuration_is_a_message_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], file_text: str | None
) -> None:
    extra: list[str] = []
    if file_text is not None:
        (tmp_path / "c.yml").write_text(file_text)
        extra = ["--config", str(tmp_path / "c.yml")]
    done = run_cli(tmp_path, "--print-config", *args, *extra, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("pixcrawler-exporter: configuration error: ")
    assert "Traceback" not in done.stderr
