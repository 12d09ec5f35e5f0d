"""The database's configuration section: ``database.*``, with what it checks on every load."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pixcrawler_exporter.collectors.database import dsn
from pixcrawler_exporter.collectors.database.presets import (
    check_names,
    database_queries,
    gauges_of,
)
from pixcrawler_exporter.collectors.database.queries import Query, parse_queries
from pixcrawler_exporter.config.parsers import (
    ConfigError,
    choice,
    name_overrides,
    number,
    optional_text,
    text,
)
from pixcrawler_exporter.config.settings import Provenance, SourceSettings, setting


def database_url(raw: object) -> str | None:
    """A PostgreSQL URL; the SQLAlchemy form 'postgresql+asyncpg://' is accepted as is."""
    if raw is None or raw == "":
        return None
    value = text(raw).strip()
    scheme, sep, rest = value.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if not sep or base not in {"postgresql", "postgres"} or not rest:
        raise ValueError("a URL such as postgresql://user:password@host:5432/pixcrawler")
    url = f"postgresql://{rest}"
    dsn.redact_url(url)  # libpq must read it, and read it as its redacted form says
    # libpq takes any text as a port here and fails only when it connects, retried for ever.
    for port in dsn.options(url).get("port", "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"a URL whose port is a number from 1 to 65535, not {port!r}")
    return url


@dataclass(frozen=True)
class DatabaseSettings(SourceSettings):
    url: str | None = setting(
        None,
        database_url,
        env="PIXCRAWLER_DB_URL",
        # The crawler's own, with its own (often read-write) user: not taken silently.
        elsewhere="DATABASE_URL",
        secret=True,
        help="PostgreSQL URL; unset turns the database collector off.",
    )
    password_file: str | None = setting(
        None,
        optional_text,
        env="PIXCRAWLER_DB_PASSWORD_FILE",
        help="File holding the database password (a mounted secret), for a database.url "
        "without one; read at start and on every reload.",
    )
    statement_timeout_seconds: float = setting(
        2.0,
        number(0.01, 600),
        env="PIXCRAWLER_DB_STATEMENT_TIMEOUT_SECONDS",
        help="The server cancels a query that runs longer than this.",
    )
    connect_timeout_seconds: float = setting(
        3.0,
        number(1, 600),
        env="PIXCRAWLER_DB_CONNECT_TIMEOUT_SECONDS",
        help="Give up connecting after this.",
    )
    preset: str = setting(
        "crawl_jobs",
        choice("crawl_jobs", "processing_chunks", "none"),
        env="PIXCRAWLER_DB_PRESET",
        help="Default queries: 'crawl_jobs' (seed 003's job table), 'processing_chunks' (seed "
        "001's per-chunk table) or 'none' (only database.queries).",
    )
    names: Mapping[str, object] | None = setting(
        None,
        name_overrides,
        help="Table and column names for the preset, e.g. {table: jobs, active_chunks: active} "
        "(YAML only; docs/database.md lists each preset's names).",
    )
    queries: tuple[Query, ...] = setting(
        (),
        parse_queries,
        help="Extra queries mapped to metrics, sql_exporter style (YAML only; see "
        "docs/database.md).",
    )
    min_interval_seconds: float = setting(
        0.0,
        number(0, 86400),
        env="PIXCRAWLER_DB_MIN_INTERVAL_SECONDS",
        help="Serve cached results younger than this instead of querying; 0 queries on "
        "every scrape.",
    )

    def finish(self, given: Provenance) -> DatabaseSettings:
        done = self._with_password_file(given)
        done._check(given)
        return done

    def _with_password_file(self, given: Provenance) -> DatabaseSettings:
        if self.password_file is None:
            return self
        if self.url is None:
            raise ConfigError("database.password_file: set database.url too (without a password)")
        parts = urlsplit(self.url)
        if parts.password is not None or "password" in dict(parse_qsl(parts.query)):
            raise ConfigError(
                "database.password_file: database.url already holds a password; give one or "
                "the other"
            )
        password = given.secret("password_file", self.password_file)
        query = f"{parts.query}&" if parts.query else ""
        url = urlunsplit(parts._replace(query=f"{query}password={quote(password, safe='')}"))
        return dataclasses.replace(self, url=url)

    def _check(self, given: Provenance) -> None:
        """Rules that involve more than one setting."""
        if self.names and self.preset == "none":
            raise ConfigError("database.names: the 'none' preset takes no names")
        # Rendering the queries imports psycopg (~20 MB): only for a collector that will run.
        runs = given.enabled and self.url is not None
        try:
            queries = database_queries(self) if runs else ()
            if not runs and self.preset != "none":
                check_names(self.preset, **(self.names or {}))
        except ValueError as exc:
            raise ConfigError(f"{given.where('names')}: expected {exc}") from None
        metrics = [g.metric for q in queries for g in gauges_of(q)]
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ConfigError(
                f"database.queries: {', '.join(twice)} is also produced by the "
                f"{self.preset} preset; set database.preset to 'none' to replace it"
            )
        if self.queries:  # the check imports every collector: only when there is something
            _check_builtin_names(self.queries, given.of("queries"))


def _check_builtin_names(queries: Sequence[Query], source: str) -> None:
    # Two families of one name make client_python refuse the collectors (exit 1), or, for the
    # derived metrics rendered apart, two HELP lines that make Prometheus drop the whole scrape.
    # Imported here: it lists every collector, this one's package among them.
    from pixcrawler_exporter.collect.registry import builtin_names

    taken = builtin_names()
    for query in queries:
        if query.metric in taken:
            raise ConfigError(
                f"database.queries ({source}): the query for {query.metric} takes the name of "
                "one of the exporter's own metrics; name it otherwise"
            )
