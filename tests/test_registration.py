"""A collector is one file with its registration line: docs/development.md's example is run as
written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from pixcrawler_exporter.collect.contract import Collector
from pixcrawler_exporter.collect.metrics import Bundle, frozen, unbundled
from pixcrawler_exporter.collect.registration import REGISTRY, BuildContext, Registry, lazy
from pixcrawler_exporter.collect.registry import Renderer
from pixcrawler_exporter.collect.scraper import Scraper
from tests.conftest import REPO

# Runs in a fresh interpreter: the example's directory joins the collectors package before the
# configuration is first imported, as a new file in collectors/ would.
PROBE = """
import json, sys
import pixcrawler_exporter.collectors as package
package.__path__.append(sys.argv[1])
from pixcrawler_exporter import cli, config
from pixcrawler_exporter.artifacts import reference
from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.collect.scraper import Scraper

on = config.load({}, dotenv_path="/nonexistent")
off = config.load({"PIXCRAWLER_COLLECTOR_UPTIME": "false"}, dotenv_path="/nonexistent")
moved = config.load({"PIXCRAWLER_UPTIME_FILE": "no-such-file"}, dotenv_path="/nonexistent")
flag = cli.parser().parse_args(["--no-collector.uptime"])


def scrape(loaded):
    built = registry.build(loaded)
    scraper = Scraper([c for c in built.collectors if c.name == "uptime"])
    renderer = registry.Renderer(scraper.collectors, "local", "local", built.layout.version)
    found = {f.name: [s.value for s in f.samples] for f in renderer.families(scraper.collect(5))}
    scraper.close()
    return found


print(json.dumps({
    "on": on.config.collectors.uptime,
    "off": off.config.collectors.uptime,
    "flag": vars(flag)["collectors.uptime"],
    "families": scrape(on),
    "moved": scrape(moved),
    "printed": config.render(moved),
    "config_row": [r for r in reference.config_table().splitlines() if "uptime" in r],
    "metric_row": [r for r in reference.metric_table(reference.all_descs()).splitlines()
                   if "uptime" in r],
}))
"""


def example() -> str:
    readme = (REPO / "docs/development.md").read_text()
    found = re.search(
        r"<!-- example-collector:start -->\n```python\n(.*?)```\n<!-- example-collector:end -->",
        readme,
        re.S,
    )
    assert found, "docs/development.md has no example collector"
    return found.group(1)


def test_readmes_example_collector_is_one_file_and_one_registration(tmp_path: Path) -> None:
    (tmp_path / "uptime.py").write_text(example())
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert (got["on"], got["off"], got["flag"]) == (True, False, False)
    assert got["families"]["pixcrawler_uptime_seconds"][0] > 0
    assert got["families"]["pixcrawler_exporter_collector_success"] == [1.0]
    # Its own section: read from its variable, printed and documented like any setting.
    assert got["moved"]["pixcrawler_exporter_collector_success"] == [0.0]
    assert "\nuptime:\n  file: no-such-file  # env PIXCRAWLER_UPTIME_FILE\n" in got["printed"]
    assert "`PIXCRAWLER_COLLECTOR_UPTIME` | `--collector.uptime` | `true`" in got["config_row"][0]
    assert "| `uptime.file` | `PIXCRAWLER_UPTIME_FILE` | — | `uptime` |" in got["config_row"][1]
    assert "`pixcrawler_uptime_seconds` | gauge | — | uptime |" in got["metric_row"][0]


class _Fixed(Collector[int]):
    name = "fixed"
    descs = ()

    def read(self) -> int:
        return 1

    def metrics(self, reading: int) -> Iterable[Metric]:
        return ()


class _Unconfigured(_Fixed):
    name = "unconfigured"

    @classmethod
    def build(cls, context: BuildContext) -> None:
        return None


def test_registry_builds_what_is_on_and_configured() -> None:
    found = Registry()
    found.register("fixed", help="-", load=lambda: _Fixed)
    found.register("unconfigured", help="-", load=lambda: _Unconfigured)
    found.register("off", help="-", load=lambda: _Fixed, default=False)
    assert [r.name for r in found.registrations()] == ["fixed", "off", "unconfigured"]
    context = None  # none of these reads it
    built = found.build({"fixed": True, "unconfigured": True, "off": False}, context)  # type: ignore[arg-type]
    assert [c.name for c in built] == ["fixed"]


def test_a_collector_missing_its_settings_is_not_even_loaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def never() -> type[_Fixed]:
        raise AssertionError("loaded")

    found = Registry()
    found.register("needy", help="-", load=never, missing=lambda config: "needy.url is not set")
    context = BuildContext(None, None, Path("/proc"), Path("/"))  # type: ignore[arg-type]
    with caplog.at_level("INFO"):
        assert found.build({"needy": True}, context) == []
    assert "needy collector off: needy.url is not set" in caplog.text


def test_a_name_registered_twice_or_misspelt_is_refused() -> None:
    found = Registry()
    found.register("fixed", help="-", load=lambda: _Fixed)
    with pytest.raises(ValueError, match="registered twice"):
        found.register("fixed", help="-", load=lambda: _Fixed)
    with pytest.raises(ValueError, match="lower-case identifier"):
        found.register("Temp-Storage", help="-", load=lambda: _Fixed)


def test_lazy_loads_only_collector_classes() -> None:
    assert lazy(__name__, "_Fixed")() is _Fixed
    with pytest.raises(TypeError, match="not a collector class"):
        lazy(__name__, "example")()


def test_every_collector_is_registered_under_its_own_name() -> None:
    names = [r.name for r in REGISTRY.registrations()]
    assert names == sorted(names)
    assert {
        "memory",
        "cpu",
        "pressure",
        "disk",
        "network",
        "temp_storage",
        "database",
        "azure",
    } <= set(names)
    for r in REGISTRY.registrations():
        assert r.load().name == r.name


class _Kept(Collector[int]):
    """Hands back the same tuple of families while its reading stays the same."""

    name = "kept"
    descs = ()
    freeze = True

    def __init__(self) -> None:
        self.made: dict[int, tuple[Metric, ...]] = {}
        self.value = 1

    def read(self) -> int:
        return self.value

    def metrics(self, reading: int) -> Iterable[Metric]:
        if reading not in self.made:
            g = GaugeMetricFamily("pixcrawler_kept", "Kept.", value=reading)
            self.made[reading] = (frozen(g) if self.freeze else g,)
        return self.made[reading]


def _rendered(renderer: Renderer, scraper: Scraper) -> list[Metric]:
    found = renderer.families(scraper.collect(5))
    return [f for f in found if isinstance(f, Bundle) or f.name == "pixcrawler_kept"]


def test_kept_frozen_families_are_served_as_one_bundle() -> None:
    collector = _Kept()
    scraper = Scraper([collector])
    renderer = Renderer(scraper.collectors, "local", "local", "v2")
    first = _rendered(renderer, scraper)
    assert len(first) == 1 and isinstance(first[0], Bundle)
    assert [f.samples[0].value for f in unbundled(first)] == [1]
    assert _rendered(renderer, scraper)[0] is first[0]  # the same bundle, text and all
    collector.value = 2
    changed = _rendered(renderer, scraper)
    assert changed[0] is not first[0]
    assert [f.samples[0].value for f in unbundled(changed)] == [2]
    collector.freeze, collector.value = False, 3
    assert [type(f) for f in _rendered(renderer, scraper)] == [GaugeMetricFamily]
    scraper.close()
