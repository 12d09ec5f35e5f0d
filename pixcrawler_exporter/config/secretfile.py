"""Reading a secret from a file (a mounted Kubernetes or Docker secret), bounded (see
boundedfile): a regular file of at most :data:`MAX_BYTES`, read within 2 s, or a
:class:`ConfigError` that names the setting and never the content.
"""

from __future__ import annotations

from pixcrawler_exporter.config.boundedfile import UnreadableError, read_bounded
from pixcrawler_exporter.config.parsers import ConfigError

# A password, a client secret or a token is far smaller; a 14 MB file is a mistake, and sending
# it with every database connection would push every read past its deadline.
MAX_BYTES = 64 * 1024


def read_secret(path: str, setting: str, source: str) -> str:
    """The secret in ``path``, without the newline a mounted secret often ends in.

    ``setting`` and ``source`` (its dotted key and where its value came from) head the message
    of a :class:`ConfigError` when the file cannot be used.
    """
    where = f"{setting} ({source})"
    try:
        data = read_bounded(path, MAX_BYTES)
    except UnreadableError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    try:
        value = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: cannot read {path}: not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value
