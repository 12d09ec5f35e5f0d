"""Our encoders write byte for byte what client_python's write, for any family we could make."""

from __future__ import annotations

import math
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from pixcrawler_exporter.collect.metrics import Bundle, frozen
from pixcrawler_exporter.web import exposition, routes

ACCEPTS = (
    "",
    "text/plain; version=0.0.4",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    # What Prometheus sends.
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
    # Not ours to write: client_python's encoder answers.
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
)

names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
label_values = st.text(
    st.characters(exclude_categories=["Cs"]) | st.sampled_from('\\"\n'), max_size=8
)
numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, 1e6, 1234567.0, 12345678.9, 1e16, 2**53 + 1, -0.0, math.inf])
)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


@st.composite
def families(draw: st.DrawFn) -> list[Metric]:
    out: list[Metric] = []
    for _ in range(draw(st.integers(0, 4))):
        labels = draw(st.lists(names, max_size=3, unique=True))
        name = draw(names)
        doc = draw(label_values)
        kind = draw(st.sampled_from(["gauge", "counter"]))
        family: Metric = (
            CounterMetricFamily(name, doc, labels=labels)
            if kind == "counter"
            else GaugeMetricFamily(name, doc, labels=labels)
        )
        for _ in range(draw(st.integers(0, 3))):
            values = [draw(label_values) for _ in labels]
            family.add_metric(values, draw(numbers))  # type: ignore[attr-defined]
        out.append(family)
    return out


def _ours(accept: str) -> exposition.Encoder:
    theirs, content_type = routes.negotiate(accept)
    return exposition.encoder(content_type, theirs)


def _both(accept: str, fams: list[Metric]) -> tuple[bytes, bytes]:
    theirs, content_type = routes.negotiate(accept)
    ours = exposition.encoder(content_type, theirs)
    return ours(fams), theirs(_Families(fams))


@settings(max_examples=300, deadline=None)
@given(families(), st.sampled_from(ACCEPTS))
def test_same_bytes_as_client_python(fams: list[Metric], accept: str) -> None:
    ours, theirs = _both(accept, fams)
    assert ours == theirs


def test_families_ours_does_not_write_go_to_client_python() -> None:
    colon = GaugeMetricFamily("job:rate", "A recording-rule style name.", value=1)
    info = InfoMetricFamily("build", "Build.", value={"version": "1"})
    unit = GaugeMetricFamily("temp", "Temperature.", value=3, unit="celsius")
    created = CounterMetricFamily("req", "Requests.", value=2, created=1700000000.5)
    for accept in ACCEPTS:
        ours, theirs = _both(accept, [colon, info, unit, created])
        assert ours == theirs, accept


def test_openmetrics_and_text_as_the_formats_say() -> None:
    g = GaugeMetricFamily("pixcrawler_x", 'Help with "quotes" and \\.', labels=["path"])
    g.add_metric(['/a "b"\n'], 1234567.0)
    c = CounterMetricFamily("pixcrawler_y_total", "Count.")
    c.add_metric([], 3)
    text = _ours("text/plain; version=0.0.4")
    assert text([g, c]).decode() == (
        '# HELP pixcrawler_x Help with "quotes" and \\\\.\n'
        "# TYPE pixcrawler_x gauge\n"
        'pixcrawler_x{path="/a \\"b\\"\\n"} 1.234567e+06\n'
        "# HELP pixcrawler_y_total Count.\n"
        "# TYPE pixcrawler_y_total counter\n"
        "pixcrawler_y_total 3.0\n"
    )
    om = exposition.encoder(
        *reversed(routes.negotiate("application/openmetrics-text; version=1.0.0"))
    )
    assert om([c]).decode() == (
        "# HELP pixcrawler_y Count.\n# TYPE pixcrawler_y counter\npixcrawler_y_total 3.0\n# EOF\n"
    )


def test_a_frozen_family_is_written_once_per_format() -> None:
    g = GaugeMetricFamily("pixcrawler_x", "X.", labels=["a"])
    g.add_metric(["1"], 2.0)
    frozen(g)
    for accept in ACCEPTS:
        ours, theirs = _both(accept, [g])
        assert ours == theirs, accept
    # Changing a frozen family breaks its promise: the encoders keep what they wrote first,
    # which is how the test sees that they did not write it again.
    g.add_metric(["2"], 3.0)
    text, om = _ours("text/plain; version=0.0.4"), _ours("application/openmetrics-text")
    assert text([g]).decode().count("pixcrawler_x{") == 1
    assert om([g]).decode().count("pixcrawler_x{") == 1
    plain = GaugeMetricFamily("pixcrawler_y", "Y.", labels=["a"])
    plain.add_metric(["1"], 1.0)
    text([plain])
    plain.add_metric(["2"], 1.0)
    assert text([plain]).decode().count("pixcrawler_y{") == 2


def test_a_bundle_is_written_as_its_members_in_every_format() -> None:
    members = []
    for name in ("pixcrawler_a", "pixcrawler_b"):
        g = GaugeMetricFamily(name, f"{name}.", labels=["w"])
        g.add_metric(["x"], 1.5)
        members.append(frozen(g))
    plain = GaugeMetricFamily("pixcrawler_c", "C.", value=2)
    bundle = Bundle.of(tuple(members))
    assert bundle is not None
    for accept in ACCEPTS:
        theirs, content_type = routes.negotiate(accept)
        ours = exposition.encoder(content_type, theirs)
        expected = theirs(_Families([*members, plain]))
        assert ours([bundle, plain]) == expected, accept
        assert ours([bundle, plain]) == expected, accept  # the text kept on it
    # An unsupported family among the members sends the whole scrape to client_python, the
    # members in place of the bundle.
    colon = frozen(GaugeMetricFamily("job:rate", "Rate.", value=1))
    odd = Bundle.of((members[0], colon))
    assert odd is not None
    theirs, content_type = routes.negotiate("application/openmetrics-text")
    assert exposition.encoder(content_type, theirs)([odd]) == theirs(_Families([members[0], colon]))


def test_only_a_tuple_of_frozen_families_is_bundled() -> None:
    kept = frozen(GaugeMetricFamily("pixcrawler_a", "A.", value=1))
    moving = GaugeMetricFamily("pixcrawler_b", "B.", value=1)
    assert Bundle.of((kept,)) is not None
    assert Bundle.of((kept, moving)) is None
    assert Bundle.of([kept]) is None
