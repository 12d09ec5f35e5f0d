"""How a collection from PostgreSQL fails: a reason (the error counter's label) and a message.

Messages name the database by its redacted URL; libpq's own never quote a password.
"""

from __future__ import annotations

import re
import time

from psycopg import errors


class ReadError(Exception):
    """A collection that failed: ``reason`` is one of the collector's REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def time_left(limit: float, deadline: float) -> float:
    """``limit``, or less if ``deadline`` (a ``time.monotonic()`` value) comes sooner."""
    left = deadline - time.monotonic()
    if left <= 0.001:
        raise ReadError("timeout", "the scrape deadline passed before the queries finished")
    return min(limit, left)


_AUTH = re.compile(r"authentication|password|pg_hba\.conf|role .* does not exist", re.IGNORECASE)


def classify(exc: BaseException, phase: str) -> tuple[str, str]:
    """The reason label and a one-line message for a psycopg exception."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    reason = "query"
    if isinstance(exc, errors.QueryCanceled):
        reason = "timeout"  # statement_timeout, or a cancel at the deadline
    elif isinstance(
        exc,
        errors.UndefinedTable
        | errors.UndefinedColumn
        | errors.UndefinedFunction
        | errors.InvalidSchemaName
        | errors.UndefinedObject
        | errors.InvalidCatalogName,
    ):
        reason = "missing_object"
    elif isinstance(exc, errors.InsufficientPrivilege):
        reason = "permission"
    elif isinstance(exc, errors.InvalidPassword | errors.InvalidAuthorizationSpecification):
        reason = "auth"
    elif phase == "connect":
        # A failed connection carries no SQLSTATE: only libpq's message tells the cause.
        if _AUTH.search(message):
            reason = "auth"
        elif re.search(r"database .* does not exist", message):
            reason = "missing_object"
        else:
            reason = "connect"
    return reason, message
