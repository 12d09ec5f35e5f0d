"""How a failure reads in logs, ``/health`` and ``collector_success``, and how a secret reads."""

from __future__ import annotations

import re

# What a secret is replaced with wherever it could otherwise be shown: --print-config, log lines,
# error messages of a source whose URL or message quotes it.
REDACTED = "<redacted>"
# A secret shorter than this is not searched for in free text: its letters turn up by chance,
# and "pi<redacted>crawler" would give the password "x" away. Real ones (an Azure client secret
# has 40 characters) are far longer.
MIN_SCRUBBED = 8


class CollectorError(Exception):
    """A source could not be read. The message names what was read and why it failed."""


def describe(exc: BaseException) -> str:
    """One line for a failure: our own errors as they are worded; anything else with its type,
    which is part of the story (``KeyError('x')`` prints as ``'x'``)."""
    if isinstance(exc, CollectorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` replaced, in any case (a host name comes back lower-cased), for
    messages from a source that might quote it back; a short secret is left alone."""
    if not secret or len(secret) < MIN_SCRUBBED:
        return text
    return re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
