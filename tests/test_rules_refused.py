"""Rules settings that promtool refuses are refused when the configuration is loaded, not by
Prometheus later: each is rendered as the configuration used to accept it and promtool refuses
the file, then the exporter refuses the setting (exit 2, the setting named). And a corpus of
regexes, of which promtool accepts exactly those the configuration accepts."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pixcrawler_exporter import config
from pixcrawler_exporter.artifacts import rules
from pixcrawler_exporter.config import promql
from tests.conftest import need_tool, run_cli

# (setting, variable, value as given)
REFUSED = [
    ("selector", "PIXCRAWLER_RULES_SELECTOR", 'job="crawl\nprod"'),  # a raw line break
    ("selector", "PIXCRAWLER_RULES_SELECTOR", r'job="crawl\q"'),  # an escape PromQL lacks
    ("selector", "PIXCRAWLER_RULES_SELECTOR", r'job="\x4"'),
    ("selector", "PIXCRAWLER_RULES_SELECTOR", r'job="\ud800"'),  # not a code point
    ("selector", "PIXCRAWLER_RULES_SELECTOR", '__name__="up"'),  # set twice with the rule's own
    ("selector", "PIXCRAWLER_RULES_SELECTOR", 'job=~"("'),
    ("selector", "PIXCRAWLER_RULES_SELECTOR", r'job=~"(pix)\\1"'),  # a backreference
    ("selector", "PIXCRAWLER_RULES_SELECTOR", 'job=~"(?!test).*"'),  # lookahead
    ("selector", "PIXCRAWLER_RULES_SELECTOR", 'job=~"pix.++"'),  # possessive
    ("selector", "PIXCRAWLER_RULES_SELECTOR", r'job=~"pix\\Z"'),  # Python's end, not Go's
    ("selector", "PIXCRAWLER_RULES_SELECTOR", 'job=~"(pix{600}){2}"'),  # 1200 copies
    ("selector", "PIXCRAWLER_RULES_SELECTOR", 'job=~"\\\\p{Greek}"'),  # a script: see promql
    ("group_label", "PIXCRAWLER_RULES_GROUP_LABEL", "without"),
    ("group_label", "PIXCRAWLER_RULES_GROUP_LABEL", "NaN"),
]
FOR_TOO_LONG = "100000000000000000000h"


def promtool_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rendered.rules.yml"
    path.write_text(text)
    return subprocess.run(
        [need_tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rendered_as_accepted_before(setting: str, value: str) -> str:
    """The rules file for ``value``, set without the configuration's checks."""
    base = config.Config()
    if setting == "selector":
        given = dataclasses.replace(base.rules, selector=value)
    else:
        given = dataclasses.replace(base.rules, group_label=value)
    return rules.render(dataclasses.replace(base, rules=given))


@pytest.mark.parametrize(("setting", "variable", "value"), REFUSED)
def test_what_promtool_refuses_the_configuration_refuses(
    tmp_path: Path, setting: str, variable: str, value: str
) -> None:
    if value != 'job=~"\\\\p{Greek}"':  # refused on purpose though this promtool knows Greek
        done = promtool_check(tmp_path, rendered_as_accepted_before(setting, value))
        assert done.returncode != 0, f"promtool accepts {value!r}: {done.stdout}"

    done = run_cli(tmp_path, "rules", env={variable: value})
    assert done.returncode == 2, done.stdout[-500:] + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"pixcrawler-exporter: configuration error: environment variable {variable}"
    )
    assert "Traceback" not in done.stderr
    served = run_cli(tmp_path, "--print-config", env={variable: value})  # the exporter itself
    assert served.returncode == 2 and variable in served.stderr


def test_a_for_longer_than_prometheus_holds_is_refused(tmp_path: Path) -> None:
    override = config.AlertOverride(for_seconds=10**20 * 3600)
    base = config.Config()
    given = dataclasses.replace(base.rules, alerts={"PixCrawlerMemoryUsageHigh": override})
    done = promtool_check(tmp_path, rules.render(dataclasses.replace(base, rules=given)))
    assert done.returncode != 0 and "out of range" in done.stdout + done.stderr

    path = tmp_path / "exporter.yml"
    path.write_text(f"rules: {{alerts: {{PixCrawlerMemoryUsageHigh: {{for: {FOR_TOO_LONG}}}}}}}\n")
    done = run_cli(tmp_path, "rules", "--config", str(path))
    assert done.returncode == 2
    assert "rules.alerts in" in done.stderr and "(at PixCrawlerMemoryUsageHigh.for)" in done.stderr
    path.write_text("rules: {alerts: {PixCrawlerMemoryUsageHigh: {for: 2562047h}}}\n")
    done = run_cli(tmp_path, "rules", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert promtool_check(tmp_path, done.stdout).returncode == 0


def test_selectors_promtool_accepts_are_accepted_as_they_are(tmp_path: Path) -> None:
    accepted = (
        r'job="pix\"crawler\\prod\u00e9\x41\101\n\t", env!="a\a\b\f\r\v"',
        r'job=~"pix(?i:CRAWL)(?P<n>[[:alpha:]\\d_-]{1,3})\\pL\\p{Lu}\\x{1F600}\\Q.*\\E$"',
        r'job!~"^(a|b{2,}|(?s).)*?\\z"',
        'job=~"", instance=~"(?:(?:(?:a){10}){10}){10}"',
    )
    for selector in accepted:
        environ = {"PIXCRAWLER_RULES_SELECTOR": selector}
        cfg = config.load(environ, {}, None, dotenv_path=tmp_path / "absent.env").config
        assert cfg.rules.selector == selector
        done = promtool_check(tmp_path, rules.render(cfg))
        assert done.returncode == 0, done.stdout + done.stderr


# Pieces of Go regexes, valid and not, for the corpus below.
TOKENS = (  # noqa: SIM905 (a list literal takes a line per piece)
    "a b ( ) (?: (?i) (?i: (?-i) (?i-) (?) (?s-m: (?P<n> (?<n> (?= (?P=n) | * + ? *? ?? +? "
    "{2} {1,3} {0} {,2} {2,} {1001} {500} {1000} {3} {01} [ ] [^ - [:alpha:] [:^alpha:] "
    "[:foo:] [] []a] \\ \\d \\b \\B \\pL \\p{Lu} \\P{^L} \\x41 \\x{41} \\x{D800} \\x{110000} "
    "\\101 \\0 \\1 \\8 \\12 \\Q \\E \\Q(\\E \\z \\Z \\A \\C \\e \\. \\- \\] . ^ $ { } é \\n "
    "\\t # : \\w z"
).split()


def corpus(seed: int, size: int) -> list[str]:
    draw = random.Random(seed)
    found = {"".join(draw.choices(TOKENS, k=draw.randint(1, 12))) for _ in range(size)}
    return sorted(found)


def test_the_regex_check_agrees_with_promtool(tmp_path: Path) -> None:
    """Every regex of a seeded corpus (about 15% valid) is refused by promtool exactly when
    the configuration refuses it."""
    regexes = corpus(seed=21, size=3000)
    exprs = [{"record": "r", "expr": "up{job=~" + json.dumps(r) + "}"} for r in regexes]
    text = yaml.safe_dump({"groups": [{"name": "g", "rules": exprs}]}, allow_unicode=True)
    done = promtool_check(tmp_path, text)
    refused_by_promtool = {
        regexes[int(m.group(1)) - 1]
        for m in re.finditer(
            r'rule (\d+), "r": could not parse expression', done.stdout + done.stderr
        )
    }
    assert 0.5 * len(regexes) < len(refused_by_promtool) < 0.95 * len(regexes)

    def refused(regex: str) -> bool:
        try:
            promql.check_regex(promql.unquote(json.dumps(regex)[1:-1]))
        except ValueError:
            return True
        return False

    disagree = [r for r in regexes if refused(r) != (r in refused_by_promtool)]
    assert disagree == []
