"""The work pipeline's configuration section: ``celery.*``.

The broker URL is read as kombu and redis-py read it (``redis://[[user]:password@]host[:port]
[/db]``, ``rediss://`` for TLS): a password holding ``@``, ``/`` or ``:`` is percent-encoded in
the URL, or given in a file with ``password_file``. The URL is checked when it is loaded (scheme,
host, port, database number), so a typo is exit 2 at start, not a collector that retries for
ever; it is shown only with its password replaced.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pixcrawler_exporter.collect.errors import REDACTED
from pixcrawler_exporter.config.parsers import (
    ConfigError,
    boolean,
    integer,
    number,
    optional_number,
    optional_text,
    text,
)
from pixcrawler_exporter.config.settings import Provenance, SourceSettings, setting

SCHEMES = ("redis", "rediss")
_URL_EXAMPLE = "a Redis URL such as redis://:password@redis:6379/0 (rediss:// for TLS)"


def redis_url(raw: object) -> str | None:
    """A Redis URL with a host, a port from 1 to 65535 and a database number, when given."""
    if raw is None or raw == "":
        return None
    value = text(raw).strip()
    parts = urlsplit(value)
    if parts.scheme.lower() not in SCHEMES:
        scheme = f" ({parts.scheme}:// is not Redis)" if parts.scheme else ""
        raise ValueError(f"{_URL_EXAMPLE}{scheme}")
    try:
        port = parts.port  # ValueError: not a number, or out of range
    except ValueError:
        raise ValueError(f"{_URL_EXAMPLE}; its port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{_URL_EXAMPLE}; it names no host")
    if port == 0:
        raise ValueError(f"{_URL_EXAMPLE}; its port must be a number from 1 to 65535")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"{_URL_EXAMPLE}; the path is the database number, not {db!r}")
    return value


def password_of(url: str) -> str | None:
    """The password in ``url`` as the client reads it (percent-decoded), if any."""
    password = urlsplit(url).password
    return unquote(password) if password else None


def redact(url: str) -> str:
    """``url`` with its password replaced; one without a password is shown as written."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def names(raw: object) -> tuple[str, ...]:
    """Queue or task names: a YAML list, or comma-separated text."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("a list of names (comma-separated in a variable)")
    return tuple(dict.fromkeys(i for i in (s.strip() for s in items) if i))


def queue_names(raw: object) -> tuple[str, ...]:
    found = names(raw)
    if not found:
        raise ValueError("at least one queue name (comma-separated in a variable)")
    return found


@dataclass(frozen=True)
class CelerySettings(SourceSettings):
    broker_url: str | None = setting(
        None,
        redis_url,
        env="PIXCRAWLER_CELERY_BROKER_URL",
        elsewhere=("CELERY_BROKER_URL", "BROKER_URL"),
        secret=True,
        help="The Celery broker's Redis URL, as the workers' broker_url; unset turns the celery "
        "collector off.",
    )
    password_file: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_CELERY_PASSWORD_FILE",
        help="File holding the broker's password (a mounted secret), for a celery.broker_url "
        "without one; also the result backend's when celery.result_backend_url is unset. Read "
        "at start and on every reload.",
    )
    result_backend_url: str | None = setting(
        None,
        redis_url,
        env="PIXCRAWLER_CELERY_RESULT_BACKEND_URL",
        secret=True,
        help="Redis URL of the workers' result_backend, read to find chunks that finished "
        "without the database hearing of it; unset means the broker's Redis.",
    )
    queues: tuple[str, ...] = setting(
        ("celery",),
        queue_names,
        env="PIXCRAWLER_CELERY_QUEUES",
        help="Queues whose waiting messages are counted, priority sub-queues included "
        "(comma-separated in the variable).",
    )
    refresh_interval_seconds: float = setting(
        5.0,
        number(0.5, 3600),
        env="PIXCRAWLER_CELERY_REFRESH_INTERVAL_SECONDS",
        help="How often the background refresher reads the broker (one pipelined round trip) "
        "and the result backend.",
    )
    timeout_seconds: float = setting(
        2.0,
        number(0.1, 60),
        env="PIXCRAWLER_CELERY_TIMEOUT_SECONDS",
        help="Connect and socket timeout of every call to Redis and of the reconciliation's "
        "database query.",
    )
    max_age_seconds: float | None = setting(
        None,
        optional_number(1, 10**6),
        env="PIXCRAWLER_CELERY_MAX_AGE_SECONDS",
        help="Figures older than this are dropped from the scrape; unset means 3 x the refresh "
        "interval.",
    )
    visibility_timeout_seconds: float = setting(
        3600.0,
        number(1, 10**7),
        env="PIXCRAWLER_CELERY_VISIBILITY_TIMEOUT_SECONDS",
        help="The broker's visibility_timeout (broker_transport_options; Celery's default is "
        "an hour): an unacknowledged message older than this is delivered again.",
    )
    task_events: bool = setting(
        False,
        boolean,
        env="PIXCRAWLER_CELERY_TASK_EVENTS",
        help="Count task events (workers started with -E): tasks per outcome, run time and "
        "time waiting in the queue.",
    )
    task_names: tuple[str, ...] = setting(
        (),
        names,
        env="PIXCRAWLER_CELERY_TASK_NAMES",
        help="Task names that get a series of their own (comma-separated in the variable); "
        "others count as 'other'. Empty: the first 50 names seen.",
    )
    max_workers: int = setting(
        100,
        integer(1, 10000),
        env="PIXCRAWLER_CELERY_MAX_WORKERS",
        help="Workers given series of their own; more are counted online but not named.",
    )
    worker_forget_seconds: float = setting(
        300.0,
        number(10, 10**6),
        env="PIXCRAWLER_CELERY_WORKER_FORGET_SECONDS",
        help="A worker offline this long loses its series.",
    )

    @property
    def max_age(self) -> float:
        return self.max_age_seconds or 3 * self.refresh_interval_seconds

    @property
    def backend_url(self) -> str | None:
        """The result backend's URL: the broker's Redis unless one is given."""
        return self.result_backend_url or self.broker_url

    def finish(self, given: Provenance) -> CelerySettings:
        if given.enabled and self.broker_url is not None:
            _check_installed()
        if self.password_file is None:
            return self
        if self.broker_url is None:
            raise ConfigError(
                "celery.password_file: set celery.broker_url too (without a password)"
            )
        if password_of(self.broker_url) is not None:
            raise ConfigError(
                "celery.password_file: celery.broker_url already holds a password; give one "
                "or the other"
            )
        password = given.secret("password_file", self.password_file)
        return dataclasses.replace(self, broker_url=with_password(self.broker_url, password))


def _check_installed() -> None:
    missing = [m for m in ("kombu", "redis") if not _installed(m)]
    if missing:
        raise ConfigError(
            f"celery.broker_url is set but {' and '.join(missing)} is not installed: install "
            "the celery extra, pip install 'pixcrawler-exporter[celery]'"
        )


def _installed(name: str) -> bool:
    # Found, not imported: the clients are imported when the collector is built.
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = quote(unquote(parts.username), safe="") if parts.username else ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
