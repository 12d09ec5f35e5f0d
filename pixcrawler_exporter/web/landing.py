"""The landing page ``/``: for a person with a browser and no Grafana, the current statuses, the
capacity answer and each collector's health, from the same facts as ``/status``.

One server-rendered document: inline style, no script, font, image or anything fetched from
elsewhere, and a Content-Security-Policy that would block them if a bug let one in. Every status
is a word and a symbol as well as a colour, so it reads without telling red from green.

There is no ``<meta http-equiv="refresh">``: each load reads every source as a scrape does (the
database query included), so a tab forgotten on a wall would scrape forever at its own pace, and
a page that changes under a reader comparing two figures misleads. The page says when its
reading was taken; a browser reload takes a fresh one.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus

from pixcrawler_exporter.artifacts.links import DASHBOARD_URL, RUNBOOK_URL
from pixcrawler_exporter.collect.registration import REGISTRY
from pixcrawler_exporter.collect.scraper import Outcome, Snapshot
from pixcrawler_exporter.config import Config
from pixcrawler_exporter.derive.resources import RESOURCES, Resource
from pixcrawler_exporter.derive.status import Facts, megabytes, percent
from pixcrawler_exporter.derive.thresholds import Status
from pixcrawler_exporter.web import server

# Class, symbol and word per status; None is a resource whose value is unknown.
_LOOK: dict[Status | None, tuple[str, str, str]] = {
    Status.OK: ("ok", "\u2714", "OK"),
    Status.WARNING: ("warning", "\u25b2", "WARNING"),
    Status.ALERT: ("alert", "\u2716", "ALERT"),
    None: ("unknown", "?", "UNKNOWN"),
}
_NAMES: dict[Resource, tuple[str, str]] = {
    "disk": ("Disk", "fullest filesystem of disk.paths"),
    "memory": (
        "Memory",
        "memory the kernel cannot reclaim (anonymous, unevictable, plus temp files on tmpfs) "
        "over the memory limit; page cache is not counted",
    ),
    "cpu": ("CPU", "CPU seconds per second over the limit in cores"),
    "temp_storage": ("Temp storage", "counted temp bytes over max_temp_storage_mb"),
    "chunks": ("Active chunks", "chunks the database counts as running"),
}
# Colours from the Okabe-Ito palette's family, dark enough for white text (WCAG AA); the word
# and symbol carry the meaning either way.
_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,"DejaVu Sans",sans-serif;color:#1b1f24;background:#f3f4f6}
header{background:#1b1f24;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:22px}
header p{margin:2px 0 0;color:#c9d1d9;font-size:13px}
header .refused{color:#ffb3b3}
main{max-width:1240px;margin:0 auto;padding:16px 28px}
.cards{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:760px){.cards{grid-template-columns:1fr}main{padding:12px}}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 18px;
margin-bottom:14px;overflow-x:auto}
h2{margin:0 0 10px;font-size:16px}
.big .badge{font-size:22px;padding:4px 16px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td.value{font-weight:700}
.badge{display:inline-block;min-width:8.4em;padding:2px 10px;border-radius:4px;color:#fff;
font-weight:700;font-size:13px;white-space:nowrap}
.badge.ok{background:#1a7f37}.badge.warning{background:#b35900}.badge.alert{background:#c62828}
.badge.unknown{background:#5c6670}
tr.ok td:first-child{border-left:5px solid #1a7f37}
tr.warning td:first-child{border-left:5px solid #b35900}
tr.alert td:first-child{border-left:5px solid #c62828}
tr.unknown td:first-child{border-left:5px solid #5c6670}
.note{color:#57606a;font-size:13px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:12px 0 0}
dt{color:#57606a}dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
.detail{font-family:"DejaVu Sans Mono",monospace;font-size:12.5px;overflow-wrap:anywhere}
footer{font-size:13px;color:#57606a}
footer li{margin:2px 0}
"""
_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    # On this page it replaces a policy from --web.config.file's headers: it is the strictest
    # that lets the page's own style apply, and a stricter one would leave the page unstyled.
    "Content-Security-Policy": _CSP,
    # A back button or a proxy must not show an old reading as the current one.
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Page:
    """What the page shows besides the facts: who serves it and where to go next."""

    version: str
    links: Mapping[str, str]  # path -> description
    reload_ok: bool = True  # whether the last reload was taken (a refused one keeps the old)
    loaded_at: float | None = None  # wall clock, when the configuration in use was loaded


def response(facts: Facts, snapshot: Snapshot, config: Config, page: Page) -> server.Response:
    body = render(facts, snapshot, config, page)
    return server.Response(HTTPStatus.OK, body, "text/html; charset=utf-8", HEADERS)


def render(facts: Facts, snapshot: Snapshot, config: Config, page: Page) -> bytes:
    when = datetime.fromtimestamp(facts.timestamp, UTC)
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_word(_shown_overall(facts))} \u00b7 PixCrawler exporter</title>"
        f"<style>{_STYLE}</style></head>\n"
    )
    header = (
        f"<header><h1>PixCrawler exporter</h1><p>version {_e(page.version)} \u00b7 environment "
        f"{_e(facts.environment)} \u00b7 mode {_e(config.mode)} \u00b7 read at "
        f'<time id="read-at" datetime="{when.isoformat()}">'
        f"{when.strftime('%Y-%m-%d %H:%M:%S')} UTC</time> \u00b7 reload the page for a fresh "
        f"reading</p>{_config_line(page)}</header>\n"
    )
    main = (
        f'<main>\n<div class="cards">{_overall_card(facts, snapshot.outcomes)}'
        f"{_capacity_card(facts)}</div>\n"
        f"{_resources(facts, config)}\n{_collectors(snapshot.outcomes)}\n{_off(snapshot, config)}"
        f"\n{_links(page)}\n</main>"
    )
    return f"{head}<body>\n{header}{main}\n</body></html>\n".encode()


def _shown_overall(facts: Facts) -> Status | None:
    """The page's overall word: the worst known status, but never OK while a resource is
    unknown (pixcrawler_resource_status{resource="overall"} is the worst known alone)."""
    overall = facts.evaluations.get("overall")
    worst = overall.status if overall is not None else None
    unknown = any(facts.evaluations[r].status is None for r in RESOURCES)
    return None if worst in (None, Status.OK) and unknown else worst


def _overall_card(facts: Facts, outcomes: Mapping[str, Outcome]) -> str:
    named: dict[Status | None, list[str]] = {}
    for resource in RESOURCES:
        named.setdefault(facts.evaluations[resource].status, []).append(_NAMES[resource][0])
    rows = [
        f"<dt>{_word(status)}</dt><dd>{', '.join(named[status])}</dd>"
        for status in (Status.ALERT, Status.WARNING, None)
        if status in named
    ] or ["<dt>OK</dt><dd>every resource</dd>"]
    failing = [name for name, o in outcomes.items() if not o.success]
    rows.append(
        f"<dt>Collectors</dt><dd>{len(failing)} of {len(outcomes)} failing: "
        f"{_e(', '.join(failing))}</dd>"
        if failing
        else f"<dt>Collectors</dt><dd>all {len(outcomes)} read fine</dd>"
    )
    return (
        '<section id="overall"><h2>Overall status</h2>'
        f'<div class="big">{_badge(_shown_overall(facts), "status-overall")}</div>'
        f'<dl id="summary">{"".join(rows)}</dl>'
        '<p class="note">The worst status of the resources, UNKNOWN rather than OK while one '
        "is unknown; the alert rules and <code>/status</code> evaluate the same figures.</p>"
        "</section>"
    )


def _capacity_card(facts: Facts) -> str:
    c = facts.capacity
    cls, symbol, word = {
        True: ("ok", "\u2714", "YES"),
        False: ("alert", "\u2716", "NO"),
        None: ("unknown", "?", "UNKNOWN"),
    }[c.can_start]
    if c.active is None:
        why = "Unknown while the active chunk count is: the database collector is off or failing."
    elif c.can_start is None:
        why = "Unknown while the temp storage usage is: the temp storage scan has no figure."
    else:
        why = "Yes when a slot is free and the temp storage left holds one more chunk."
    rows = (
        ("Active chunks", "cap-active", _count(c.active)),
        (
            "Effective maximum",
            "cap-max",
            f"{c.effective_max} (configured {c.max_concurrent}, temp storage holds "
            f"{c.max_by_storage})",
        ),
        ("Available slots", "cap-available", _count(c.available)),
        ("Utilization", "cap-utilization", _percent(c.utilization)),
    )
    dl = "".join(f'<dt>{k}</dt><dd id="{i}">{v}</dd>' for k, i, v in rows)
    return (
        '<section id="capacity"><h2>Can a chunk start?</h2>'
        f'<div class="big"><span id="can-start" class="badge {cls}">{symbol} {word}</span></div>'
        f'<p class="note">{why}</p><dl>{dl}</dl></section>'
    )


def _resources(facts: Facts, config: Config) -> str:
    rows = []
    for resource in RESOURCES:
        e = facts.evaluations[resource]
        pair = config.thresholds.pair(resource)
        name, what = _NAMES[resource]
        if resource == "temp_storage" and facts.temp_storage_bytes is not None:
            what += (
                f' \u2014 <span id="temp-mb">{_number(megabytes(facts.temp_storage_bytes))}</span>'
                f" MiB of {_number(config.capacity.max_temp_storage_mb)} MiB"
            )
        rows.append(
            f'<tr id="resource-{resource}" class="{_LOOK[e.status][0]}"><td>{name}</td>'
            f"<td>{_badge(e.status, f'status-{resource}')}</td>"
            f'<td class="num value" id="value-{resource}">{_figure(resource, e.value)}</td>'
            f'<td class="num">{_threshold(resource, pair.warning)}</td>'
            f'<td class="num">{_threshold(resource, pair.critical)}</td>'
            f'<td class="note">{what}</td></tr>'
        )
    return (
        '<section id="resources"><h2>Resources</h2><table><tr><th>Resource</th><th>Status</th>'
        "<th>Value</th><th>Warning from</th><th>Alert from</th><th>What the value is</th></tr>"
        f"{''.join(rows)}</table></section>"
    )


def _collectors(outcomes: Mapping[str, Outcome]) -> str:
    rows = []
    for name, o in outcomes.items():
        cls, symbol, word = ("ok", "\u2714", "OK") if o.success else ("alert", "\u2716", "FAILED")
        # Error texts come from the collectors, which redact secrets; they may hold anything else.
        detail = _e(o.error) if o.error is not None else "read fine"
        rows.append(
            f'<tr id="collector-{_e(name)}" class="{cls}"><td>{_e(name)}</td>'
            f'<td><span class="badge {cls}">{symbol} {word}</span></td>'
            f'<td class="num">{_duration(o.duration_seconds)}</td>'
            f'<td class="detail">{detail}</td></tr>'
        )
    return (
        '<section id="collectors"><h2>Collectors</h2><table><tr><th>Collector</th>'
        f"<th>Health</th><th>Took</th><th>Detail</th></tr>{''.join(rows)}</table></section>"
    )


def _off(snapshot: Snapshot, config: Config) -> str:
    """Each collector not running, and what turns it on: its switch, or the setting it lacks."""
    switches = config.collectors.enabled()
    rows = []
    for r in REGISTRY.registrations():
        if r.name in snapshot.outcomes:
            continue
        if not switches[r.name]:
            how = (
                f"switched off: <code>--collector.{_e(r.name)}</code> or "
                f"<code>PIXCRAWLER_COLLECTOR_{_e(r.name.upper())}=true</code> turns it on"
            )
        else:
            reason = r.missing(config) if r.missing is not None else None
            how = f"needs a setting: {_e(reason)}" if reason else "not configured (see the log)"
        rows.append(
            f'<tr id="off-{_e(r.name)}" class="unknown"><td>{_e(r.name)}</td>'
            f"<td>{_e(r.help)}</td><td>{how}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<section id="off"><h2>Collectors that are off</h2><table><tr><th>Collector</th>'
        f"<th>Reads</th><th>How to turn it on</th></tr>{''.join(rows)}</table></section>"
    )


def _links(page: Page) -> str:
    items = "".join(
        f'<li><a href="{_e(path)}">{_e(path)}</a>: {_e(text)}</li>'
        for path, text in page.links.items()
    )
    items += (
        f'<li><a href="{RUNBOOK_URL}">Runbook</a>: what each alert means and what to do</li>'
        f'<li><a href="{DASHBOARD_URL}">Grafana dashboard</a>: import it for these figures '
        "over time</li>"
    )
    return f'<footer id="links"><ul>{items}</ul></footer>'


def _badge(status: Status | None, ident: str) -> str:
    cls, symbol, word = _LOOK[status]
    return f'<span id="{ident}" class="badge {cls}">{symbol} {word}</span>'


def _word(status: Status | None) -> str:
    return _LOOK[status][2]


def _figure(resource: Resource, value: float | None) -> str:
    """A value in its unit, rounded as /status rounds it: a count for chunks, a percent else."""
    if value is None:
        return "unknown"
    if resource == "chunks":
        return f"{_number(value)} chunks"
    return _percent(value)


def _threshold(resource: Resource, value: float) -> str:
    # Thresholds as configured, however small: a 0.001 % threshold must not read as 0 %.
    return f"{value:g} chunks" if resource == "chunks" else f"{value * 100:g}%"


def _percent(ratio: float | None) -> str:
    shown = percent(ratio)
    return "unknown" if shown is None else f"{_number(shown)}%"


def _count(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _number(value: float | None) -> str:
    # Two decimals at most, as /status rounds, without trailing zeros: 62.1, 80, 0.05.
    return "unknown" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _config_line(page: Page) -> str:
    """When the configuration was loaded, and a plain warning when the last reload was refused:
    the exporter then still runs on the configuration shown by this time."""
    if page.loaded_at is None:
        return ""
    loaded = datetime.fromtimestamp(page.loaded_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = f'<p id="config">configuration loaded {loaded} UTC'
    if not page.reload_ok:
        line += ' \u00b7 <strong class="refused">the last reload was refused (see the log)</strong>'
    return line + "</p>"
