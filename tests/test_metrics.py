"""Desc's families and samples are exactly what client_python's constructors and add_metric
make (the encoders, client_python's included, and equality all see the same objects)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pixcrawler_exporter.collect.metrics import Desc, _utf8, add

names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
values = st.floats(allow_nan=False) | st.integers(-(2**64), 2**64)
label_values = st.text(max_size=6)  # surrogates included: add() escapes what is not UTF-8


def _theirs(desc: Desc) -> Metric:
    cls = CounterMetricFamily if desc.type == "counter" else GaugeMetricFamily
    return cls(desc.name, desc.help, labels=desc.labels)


@settings(max_examples=200, deadline=None)
@given(
    names,
    st.sampled_from(["gauge", "counter"]),
    st.lists(names, max_size=3, unique=True),
    st.lists(st.tuples(values, st.lists(label_values, min_size=3, max_size=3)), max_size=4),
)
def test_families_and_samples_as_client_python_makes_them(
    name: str, kind: str, labels: list[str], samples: list[tuple[float, list[str]]]
) -> None:
    desc = Desc(name + ("_total" if kind == "counter" else ""), "Help.", kind, tuple(labels))
    ours, theirs = desc.family(), _theirs(desc)
    for value, given_values in samples:
        label_values = given_values[: len(labels)]
        add(ours, value, *label_values)
        theirs.add_metric([_utf8(v) for v in label_values], value)  # type: ignore[attr-defined]
    assert type(ours) is type(theirs)
    assert vars(ours) == vars(theirs)
    assert [type(s) for s in ours.samples] == [type(s) for s in theirs.samples]
    if not labels and samples:
        one, expected = desc.value(samples[0][0]), _theirs(desc)
        expected.add_metric([], samples[0][0])  # type: ignore[attr-defined]
        assert vars(one) == vars(expected)


def test_families_do_not_share_their_samples() -> None:
    desc = Desc("pixcrawler_x", "Help.")
    first, second = desc.value(1), desc.value(2)
    assert [s.value for s in first.samples] == [1]
    assert [s.value for s in second.samples] == [2]
    assert desc.family().samples == []
