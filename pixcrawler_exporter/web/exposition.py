"""The Prometheus text format and OpenMetrics, written for the families this exporter makes.

client_python's encoders check every character of every name and label value in Python
(``_escape`` with a per-character predicate), which was most of the CPU time of a scrape. Ours
produce the same bytes for what the exporter exposes: gauges and counters (any other type too)
with names and label names of the legacy character set, without exemplars or native
histograms. Anything else, and any content type but the two Prometheus asks for, goes to
client_python's own encoder, so what a scraper receives never depends on which one ran. The
HELP and TYPE lines of a family are made once and kept, and so is the whole text of a family its
collector marked frozen (``collect.metrics.frozen``: served again unchanged, scrape after scrape)
and of a bundle of such families (``collect.metrics.Bundle``).
Content negotiation stays client_python's (routes.negotiate): this only takes over the writing of
what it chose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from pixcrawler_exporter.collect.metrics import Bundle, unbundled

Encoder = Callable[[Iterable[Metric]], bytes]

# Names that every encoding and escaping scheme leaves as they are (no ':', which client_python's
# OpenMetrics encoder turns into '_' in sample names but not in HELP and TYPE).
_PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# client_python's text-format munging of OpenMetrics types.
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}
_TEXT_SUFFIX = {"counter": "_total", "info": "_info"}
# Samples the text format moves into gauges of their own after the family.
_TEXT_EXTRA = ("_created", "_gsum", "_gcount")
_INF = math.inf


class _UnsupportedError(Exception):
    """A family our encoders do not write exactly as client_python does."""


class _Families:
    """What client_python's encoders call ``collect()`` on."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def encoder(content_type: str, fallback: Callable[[Any], bytes]) -> Encoder:
    """Ours for ``content_type`` where it writes what ``fallback`` (client_python's encoder
    chosen for that content type) would; else ``fallback`` itself."""
    if content_type == CONTENT_TYPE_PLAIN_0_0_4:
        return partial(_encode, _text, fallback)
    # Versions 1.0.0 and later differ in native histograms only, which go to client_python.
    if content_type == OPENMETRICS or (
        content_type.startswith("application/openmetrics-text;")
        and content_type.endswith("; escaping=underscores")
    ):
        return partial(_encode, _openmetrics, fallback)
    return lambda families: bytes(fallback(_Families(list(unbundled(families)))))


def _encode(
    write: Callable[[Metric, list[str]], None], fallback: Callable[[Any], bytes], families: Any
) -> bytes:
    families = list(families)
    out: list[str] = []
    try:
        for family in families:
            # A family marked frozen (collect.metrics.frozen) is written once per format.
            kept: dict[object, str] | None = getattr(family, "encoded", None)
            if kept is None:
                write(family, out)
            elif (text := kept.get(write)) is not None:
                out.append(text)
            else:
                out.append(_written(write, family))
    except _UnsupportedError:
        return bytes(fallback(_Families(list(unbundled(families)))))
    if write is _openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode()


def _written(write: Callable[[Metric, list[str]], None], family: Metric) -> str:
    """The text of a frozen family or of a bundle of them, written once per format and kept."""
    kept: dict[object, str] = family.encoded  # type: ignore[attr-defined]
    text = kept.get(write)
    if text is None:
        mine: list[str] = []
        if isinstance(family, Bundle):
            mine = [_written(write, member) for member in family.members]
        else:
            write(family, mine)
        text = kept.setdefault(write, "".join(mine))
    return text


_headers: dict[tuple[str, str, str, str, bool], str] = {}


def _header(family: Metric, openmetrics: bool) -> str:
    key = (family.name, family.documentation, family.type, family.unit, openmetrics)
    found = _headers.get(key)
    if found is None:
        found = _headers[key] = _make_header(family, openmetrics)
        if len(_headers) > 10_000:  # names made from configuration cannot grow it for ever
            _headers.clear()
    return found


def _make_header(family: Metric, openmetrics: bool) -> str:
    if not _PLAIN_NAME.fullmatch(family.name):
        raise _UnsupportedError(family.name)
    if openmetrics:
        doc = _escape_value(family.documentation)
        unit = f"# UNIT {family.name} {family.unit}\n" if family.unit else ""
        return f"# HELP {family.name} {doc}\n# TYPE {family.name} {family.type}\n{unit}"
    name = family.name + _TEXT_SUFFIX.get(family.type, "")
    kind = "untyped" if family.type == "unknown" else _TEXT_TYPES.get(family.type, family.type)
    doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _openmetrics(family: Metric, out: list[str]) -> None:
    out.append(_header(family, True))
    family_name, cached, append = family.name, _prefixes.get, out.append
    for name, labels, value, timestamp, exemplar, native in family.samples:
        if exemplar or native:
            raise _UnsupportedError(name)
        found = cached((family_name, name, *labels.items())) or _prefix(family_name, name, labels)
        number = "" if value is None else _number(value)
        stamp = "" if timestamp is None else f" {timestamp}"
        append(f"{found[0]}{number}{stamp}\n")


def _text(family: Metric, out: list[str]) -> None:
    out.append(_header(family, False))
    family_name, cached, append = family.name, _prefixes.get, out.append
    extra: dict[str, list[str]] | None = None
    for name, labels, value, timestamp, exemplar, native in family.samples:
        if exemplar or native:
            raise _UnsupportedError(name)
        found = cached((family_name, name, *labels.items())) or _prefix(family_name, name, labels)
        stamp = "" if timestamp is None else _millis(timestamp)
        line = f"{found[0]}{_number(value)}{stamp}\n"
        if found[1] is None:
            append(line)
        else:
            extra = extra if extra is not None else {}
            extra.setdefault(found[1], []).append(line)
    for suffix, lines in sorted(extra.items()) if extra else ():
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        name = family_name + suffix
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out.extend(lines)


# What a sample line starts with ('name{label="value"} '), and the suffix that moves it to a
# family of its own in the text format (None for most), by family name, sample name and
# labels: the same series come back on every scrape, and checking, sorting and escaping their
# labels anew was most of the encoders' time.
_prefixes: dict[tuple[object, ...], tuple[str, str | None]] = {}


def _prefix(family: str, name: str, labels: dict[str, str]) -> tuple[str, str | None]:
    key = (family, name, *labels.items())
    found = _prefixes.get(key)
    if found is None:
        if not _PLAIN_NAME.fullmatch(name):
            raise _UnsupportedError(name)
        suffix = name[len(family) :] if name.startswith(family) else ""
        found = (f"{name}{_labels(labels)} ", suffix if suffix in _TEXT_EXTRA else None)
        if len(_prefixes) > 10_000:  # label values made from readings cannot grow it for ever
            _prefixes.clear()
        _prefixes[key] = found
    return found


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    pairs = []
    for name, value in sorted(labels.items()):
        if not _PLAIN_NAME.fullmatch(name):
            raise _UnsupportedError(name)
        pairs.append(f'{name}="{_escape_value(value)}"')
    return "{" + ",".join(pairs) + "}"


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _millis(timestamp: Any) -> str:
    return "" if timestamp is None else f" {int(float(timestamp) * 1000):d}"


# Values written before, by value: most of a scrape's values (limits, thresholds, 0 and 1,
# counters that did not move) were in the previous one, and writing a float as Go does was
# the largest part of encoding.
_numbers: dict[float, str] = {}


def _number(value: float) -> str:
    """A float as Go's strconv writes it, as client_python's ``floatToGoString`` does."""
    found = _numbers.get(value)
    if found is None:
        found = _go_float(value)
        # Not 0 (0.0 and -0.0 are one key but written apart) nor NaN (never found again).
        if value and value == value:
            # Values that move every scrape (a few dozen on the defaults) fill it: starting over
            # now and then keeps it small (4,096 entries were 0.6 MB of resident memory).
            if len(_numbers) >= 512:
                _numbers.clear()
            _numbers[value] = found
    return found


def _go_float(value: float) -> str:
    d = float(value)
    s = repr(d)
    if d > 0:
        dot = s.find(".")
        # Go switches to exponents sooner than Python for large numbers.
        if dot > 6:
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
        return "+Inf" if d == _INF else s
    if d == d and d != -_INF:
        return s
    return "NaN" if d != d else "-Inf"
