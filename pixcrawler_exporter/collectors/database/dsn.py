"""The database URL as libpq reads it, and the same URL with its secrets redacted.

libpq, not Python's URL parser, decides what the password is: it takes everything between the
first ':' and the first '@' of the user part (``r_q:hunt?erQ2@host`` has the password
``hunt?erQ2``, where ``urllib`` sees a query string). So the redacted form replaces the spans
libpq reads as ``password`` and ``sslpassword``, and is then read back by libpq: unless libpq
finds the same settings with each secret replaced, the URL is refused as ambiguous. Only the
field is replaced, never other text that happens to equal it.
"""

from __future__ import annotations

from urllib.parse import unquote

from pixcrawler_exporter.collect.errors import REDACTED

SECRET_KEYS = frozenset({"password", "sslpassword"})
_ENCODE_HINT = (
    "percent-encode reserved characters in the password (%40 for @, %2F for /, %20 for a space)"
)


def options(url: str) -> dict[str, str]:
    """libpq's own reading of ``url``. Its error text is not passed on: it quotes the part it
    could not read, which may be the password."""
    # psycopg costs ~20 MB: imported when a URL is given, not with every configuration.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except psycopg.Error:
        raise ValueError(f"a PostgreSQL URL that libpq accepts; {_ENCODE_HINT}") from None


def redact_url(url: str) -> str:
    """``url`` as written with each secret libpq reads in it replaced by ``<redacted>``.

    Raises ValueError, without quoting the URL, when libpq refuses it or when libpq's reading
    and the redaction could disagree (a raw '@' after the user part, as in ``u:pa/ss@h``).
    """
    shown = _replace_secrets(url)
    expected = {k: REDACTED if k in SECRET_KEYS else v for k, v in options(url).items()}
    if options(shown) != expected:
        raise ValueError(f"an unambiguous PostgreSQL URL; {_ENCODE_HINT}")
    return shown


def _replace_secrets(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("a URL such as postgresql://user:password@host:5432/pixcrawler")
    # libpq's user part: up to the first '@', unless a '/' comes before it.
    at, slash = rest.find("@"), rest.find("/")
    userinfo = ""
    if at != -1 and (slash == -1 or at < slash):
        user, colon, password = rest[:at].partition(":")
        userinfo = (f"{user}:{REDACTED}" if colon and password else rest[:at]) + "@"
        rest = rest[at + 1 :]
    if "@" in rest:
        # libpq reads it as part of a host or database name: the password's tail, most likely.
        raise ValueError(f"a PostgreSQL URL with '@' only after the user name; {_ENCODE_HINT}")
    location, question, query = rest.partition("?")
    params = [
        f"{key}={REDACTED}" if unquote(key) in SECRET_KEYS else f"{key}{eq}{value}"
        for key, eq, value in (p.partition("=") for p in query.split("&"))
    ]
    return f"{scheme}://{userinfo}{location}{question}{'&'.join(params) if question else ''}"
