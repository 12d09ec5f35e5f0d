"""How a failure reads in logs, ``/health`` and ``collector_success``, and how a secret reads."""

from __future__ import annotations

# What a secret is replaced with wherever it could otherwise be shown: --print-config, log lines,
# error messages of a source whose URL or message quotes it.
REDACTED = "<redacted>"


class CollectorError(Exception):
    """A source could not be read. The message names what was read and why it failed."""


def describe(exc: BaseException) -> str:
    """One line for a failure: our own errors as they are worded; anything else with its type,
    which is part of the story (``KeyError('x')`` prints as ``'x'``)."""
    if isinstance(exc, CollectorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
