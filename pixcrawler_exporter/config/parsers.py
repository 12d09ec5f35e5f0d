"""Parsers for setting values: each takes a raw value (text from env, flags or .env, or a
YAML value) and raises ValueError whose message says what is accepted."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

# One spelling for every redaction; re-exported as config's.
from pixcrawler_exporter.collect.errors import REDACTED as REDACTED


class ConfigError(Exception):
    """A setting is wrong. The message names the setting, the bad value and what is accepted."""


T = TypeVar("T")

# A raw value is whatever YAML, a flag or a variable gave: ``object`` until a parser has read it.
Parser = Callable[[object], T]


def integer(low: int, high: int) -> Parser[int]:
    def parse(raw: object) -> int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            if not isinstance(raw, str | int | float):
                raise TypeError
            value = int(raw.strip()) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
        return value

    return parse


def number(low: float, high: float, scale: float = 1.0, unit: str = "") -> Parser[float]:
    """A float in [low, high] after dividing by ``scale`` (percent variables use scale=100)."""

    def parse(raw: object) -> float:
        accepted = f"a number from {low * scale:g} to {high * scale:g}{unit}"
        try:
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise ValueError
            value = float(raw.strip() if isinstance(raw, str) else raw) / scale
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond floats
            raise ValueError(accepted) from None
        if not low <= value <= high:  # also rejects NaN
            raise ValueError(accepted)
        return value

    return parse


def percent(low: float, high: float) -> Parser[float]:
    """A ratio in [low, high] given in percent, as the seed's variables give it (80 is 0.8).

    A value above 0 and up to 1 is refused: it is a ratio written where a percent belongs
    (``0.8`` would silently mean 0.8%, 100 times too low, and every alert would fire). Below 1%
    nobody sets a threshold; if one must, 0 is still accepted.
    """
    inner = number(low, high, scale=100, unit=" (percent)")

    def parse(raw: object) -> float:
        value = inner(raw)
        if 0 < value <= 0.01:
            shown = f"{value * 100:g}"
            raise ValueError(
                f"a percent from {low * 100:g} to {high * 100:g}, not a ratio: {shown} would be "
                f"{shown}%; write {value * 10000:g} for {value * 10000:g}%"
            )
        return value

    return parse


def ratio(raw: object) -> float:
    """A ratio from 0 to 1, as YAML takes thresholds; a percent written there (80 for 80 %)
    gets the ratio to write instead, as the percent variables' ratio gets the percent."""
    inner = number(0, 1)
    try:
        return inner(raw)
    except ValueError:
        value = raw if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        if value is not None and 1 < value <= 100:
            raise ValueError(
                f"a ratio from 0 to 1, not a percent: write {value / 100:g} for {value:g}%"
            ) from None
        raise


def optional_number(low: float, high: float) -> Parser[float | None]:
    inner = number(low, high)
    return lambda raw: None if raw is None or raw == "" else inner(raw)


def boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("true or false")


def choice(*options: str, aliases: Mapping[str, str] | None = None) -> Parser[str]:
    known = aliases or {}

    def parse(raw: object) -> str:
        word = raw.strip().lower() if isinstance(raw, str) else ""
        if word in options:
            return word
        if word in known:
            return known[word]
        raise ValueError(f"one of {', '.join(options)}")

    return parse


def text(raw: object) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise ValueError("a string")
    return str(raw)


def optional_text(raw: object) -> str | None:
    return None if raw is None or raw == "" else text(raw)


def optional_regex(raw: object) -> str | None:
    """A Python regular expression (kept as text, compiled where it is used); empty: none."""
    value = optional_text(raw)
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"a regular expression ({exc})") from None
    return value


def path_list(raw: object) -> tuple[str, ...]:
    """A list of absolute paths: a YAML list, or text separated by ':' (like $PATH) or ','
    (as every other list in a variable is: /tmp,/var/tmp would otherwise be one directory)."""
    items = re.split("[:,]", raw) if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("a list of absolute paths (separated by ':' or ',' in a variable)")
    paths = tuple(i for i in (s.strip() for s in items) if i)
    if not paths or not all(p.startswith("/") for p in paths):
        raise ValueError(
            "a non-empty list of absolute paths (separated by ':' or ',' in a variable)"
        )
    return paths


def absolute_path(raw: object) -> str:
    value = text(raw)
    if not value.startswith("/"):
        raise ValueError("an absolute path")
    return value


def listen_address(raw: object) -> str:
    accepted = "HOST:PORT, [IPv6]:PORT or :PORT with a port from 1 to 65535"
    value = text(raw).strip()
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(accepted)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(accepted)
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(accepted) from None
    elif ":" in host:
        raise ValueError(accepted + " (write IPv6 addresses in brackets)")
    return value


def telemetry_path(raw: object) -> str:
    """An absolute URL path other than the exporter's own pages, without a query."""
    value = text(raw).strip()
    accepted = "a path such as /metrics: starting with '/', without '?', '#' or spaces"
    if not value.startswith("/") or any(c in value for c in "?# \t\r\n") or len(value) > 200:
        raise ValueError(accepted)
    if value.rstrip("/") in {"", "/status", "/health", "/-/healthy", "/-/reload"}:
        raise ValueError(
            f"{accepted}, and not one of the other pages (/, /status, /health, /-/...)"
        )
    return value


def patterns(raw: object) -> tuple[str, ...]:
    """Shell-style file name patterns: a YAML list, or comma-separated text."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("a list of file name patterns such as '*.jpg' (comma-separated)")
    found = tuple(i for i in (s.strip() for s in items) if i)
    if not found:
        raise ValueError("at least one file name pattern such as '*.jpg' (comma-separated)")
    return found


def name_overrides(raw: object) -> Mapping[str, object] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ValueError("a mapping of preset name to table or column name")
    return dict(raw)
