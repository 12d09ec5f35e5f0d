"""Metric descriptions declared once per module and turned into families on each scrape."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Desc:
    """One metric's name, type, help and label names.

    Counters are declared with their ``_total`` name; client_python strips the suffix for the
    family and adds it back to the sample, so the exposed name is the declared one.
    """

    name: str
    help: str
    type: str = "gauge"  # "gauge", "counter" or "histogram"
    labels: Sequence[str] = field(default_factory=tuple)

    def family(self) -> Metric:
        """An empty family: what ``describe()`` returns, and the start of a scrape's family."""
        # A copy of one made by client_python's constructor, whose checks of the name, type and
        # unit were a fifth of the time spent building a scrape's families and never differ.
        prototype = self._prototype
        fam = object.__new__(prototype.__class__)
        fam.__dict__.update(prototype.__dict__)
        fam.samples = []
        return fam

    @cached_property
    def _prototype(self) -> Metric:
        return self._make()

    def _make(self) -> Metric:
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        if self.type == "histogram":
            return HistogramMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    def value(self, value: float, *label_values: str) -> Metric:
        """A family holding one sample."""
        fam = self.family()
        if label_values or fam.__class__ not in _SAMPLE_SUFFIX:
            add(fam, value, *label_values)
        else:  # most families: one sample without labels, as add() would append it
            fam.samples.append(_new_tuple(Sample, (self._sample_name, {}, value, None, None, None)))
        return fam

    @cached_property
    def _sample_name(self) -> str:
        return self._prototype.name + _SAMPLE_SUFFIX.get(self._prototype.__class__, "")


# The sample name's suffix by family class: what their add_metric appends (counters: _total).
_SAMPLE_SUFFIX = {GaugeMetricFamily: "", CounterMetricFamily: "_total"}
_new_tuple = tuple.__new__


def add(fam: Metric, value: float, *label_values: str) -> None:
    """Add one sample to a gauge or counter family built by :meth:`Desc.family`."""
    # ASCII (isascii costs nothing: str keeps the flag) is always valid UTF-8 already.
    if not all(map(str.isascii, label_values)):
        label_values = tuple(map(_utf8, label_values))
    suffix = _SAMPLE_SUFFIX.get(fam.__class__)
    if suffix is None:
        fam.add_metric(label_values, value)  # type: ignore[attr-defined]
        return
    # The sample add_metric appends (no timestamp, exemplar or created time), made without the
    # three Python calls of add_metric and the namedtuple's __new__.
    names = fam._labelnames  # type: ignore[attr-defined]
    labels = dict(zip(names, label_values)) if label_values else {}  # noqa: B905 - add_metric's
    sample = (fam.name + suffix, labels, value, None, None, None)
    fam.samples.append(_new_tuple(Sample, sample))


def _utf8(text: str) -> str:
    """``text``, with what cannot be written as UTF-8 escaped as ``\\xNN``.

    A path from the environment or the filesystem may hold bytes that are not UTF-8, which
    Python keeps as lone surrogates; the exposition format is UTF-8, so without this one odd
    directory name would turn every scrape into an error.
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that did not come from a byte
            return text.encode("utf-8", "backslashreplace").decode()
    return text


def observe(
    fam: Metric, buckets: Sequence[tuple[float, int]], total: float, *label_values: str
) -> None:
    """Add one histogram to a family built by :meth:`Desc.family`: cumulative counts by upper
    bound, the last bound +Inf, and the sum of the observations."""
    shown = [("+Inf" if b == float("inf") else f"{b:g}", float(n)) for b, n in buckets]
    fam.add_metric([_utf8(v) for v in label_values], shown, total)  # type: ignore[attr-defined]


def frozen(fam: Metric) -> Metric:
    """``fam``, marked as never changing again: the encoders (web/exposition.py) then write it
    once per format and keep the text on it. For a family a collector serves scrape after scrape
    until what it says changes, when the collector makes a new one instead of changing it."""
    fam.encoded = {}  # type: ignore[attr-defined]
    return fam


class Bundle(Metric):
    """Frozen families (:func:`frozen`) that a collector handed back unchanged, served as one.

    Not a family of its own: nothing of it is written but its members' text, which the encoders
    (web/exposition.py) write once per format and keep, as for a frozen family. It exists so that
    a collector's kept families (the celery collector's, most scrapes) cost one item on their way
    through the scrape instead of one each: about five Python calls a family, and a third of what
    that collector added to a scrape's p50. Any other reader takes the members (:func:`unbundled`).
    """

    def __init__(self, members: tuple[Metric, ...]) -> None:
        # client_python's constructor is not called: it would check a name that is never written.
        self.members = members
        self.encoded: dict[object, str] = {}
        self.name, self.documentation, self.unit, self.type = "", "", "", "unknown"
        self.samples = []

    @classmethod
    def of(cls, families: Iterable[Metric]) -> Bundle | None:
        """A bundle of ``families`` when it is a tuple of frozen families, else None."""
        if isinstance(families, tuple) and all(hasattr(f, "encoded") for f in families):
            return cls(families)
        return None


def unbundled(families: Iterable[Metric]) -> Iterator[Metric]:
    """``families``, with each :class:`Bundle` replaced by its members."""
    for family in families:
        if isinstance(family, Bundle):
            yield from family.members
        else:
            yield family
