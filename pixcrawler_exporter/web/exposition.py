"""The Prometheus text format and OpenMetrics, written for the families this exporter makes.

client_python's encoders check every character of every name and label value in Python
(``_escape`` with a per-character predicate), which was most of the CPU time of a scrape. Ours
produce the same bytes for what the exporter exposes: gauges and counters (any other type too)
with names and label names of the legacy character set, without exemplars or native
histograms. Anything else, and any content type but the two Prometheus asks for, goes to
client_python's own encoder, so what a scraper receives never depends on which one ran. The
HELP and TYPE lines of a family are made once and kept, and so is the whole text of a family its
collector marked frozen (``collect.metrics.frozen``: served again unchanged, scrape after scrape).
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

Encoder = Callable[[Iterable[Metric]], bytes]

# Names that every encoding and escaping scheme leaves as they are (no ':', which client_python's
# OpenMetrics encoder turns into '_' in sample names but not in HELP and TYPE).
_PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# client_python's text-format munging of OpenMetrics types.
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}
_TEXT_SUFFIX = {"counter": "_total", "info": "_info"}
# Samples the text format moves into gauges of their own after the family.
_TEXT_EXTRA = ("_created", "_gsum", "_gcount")


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
    return lambda families: bytes(fallback(_Families(list(families))))


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
                mine: list[str] = []
                write(family, mine)
                out.append(kept.setdefault(write, "".join(mine)))
    except _UnsupportedError:
        return bytes(fallback(_Families(families)))
    if write is _openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode()


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
    for s in family.samples:
        _check(s)
        value = "" if s.value is None else _number(s.value)
        stamp = "" if s.timestamp is None else f" {s.timestamp}"
        out.append(f"{s.name}{_labels(s.labels)} {value}{stamp}\n")


def _text(family: Metric, out: list[str]) -> None:
    out.append(_header(family, False))
    extra: dict[str, list[str]] = {}
    for s in family.samples:
        _check(s)
        line = f"{s.name}{_labels(s.labels)} {_number(s.value)}{_millis(s.timestamp)}\n"
        suffix = s.name[len(family.name) :] if s.name.startswith(family.name) else ""
        if suffix in _TEXT_EXTRA:
            extra.setdefault(suffix, []).append(line)
        else:
            out.append(line)
    for suffix, lines in sorted(extra.items()):
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        name = family.name + suffix
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out.extend(lines)


def _check(sample: Any) -> None:
    if sample.exemplar or sample.native_histogram or not _PLAIN_NAME.fullmatch(sample.name):
        raise _UnsupportedError(sample.name)


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


def _number(value: float) -> str:
    """A float as Go's strconv writes it, as client_python's ``floatToGoString`` does."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    # Go switches to exponents sooner than Python for large numbers.
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s
