"""The landing page ``/``: statuses, the capacity answer and each collector's health, for a person
with a browser and no Grafana.

Rendered on the server from the same facts as ``/status`` and ``/metrics``, one self-contained
document: no script, font, image or style sheet from anywhere, so it reads the same behind any
firewall. A browser reload shows the current state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pixcrawler_exporter.collect.scraper import Snapshot
from pixcrawler_exporter.derive.status import Facts

# Status -> (text, background); colour-blind readers get the word as well as the colour.
_BADGES = {
    "OK": ("OK", "#1a7f37"),
    "WARNING": ("WARNING", "#9a6700"),
    "ALERT": ("ALERT", "#cf222e"),
    None: ("unknown", "#6e7781"),
}
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
header{background:#24292f;color:#fff;padding:14px 24px}
header h1{font-size:20px;margin:0}header p{margin:4px 0 0;color:#d0d7de;font-size:13px}
main{display:flex;flex-wrap:wrap;gap:16px;padding:16px 24px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;
flex:1 1 320px}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{text-align:left;padding:5px 6px;border-bottom:1px solid #eaeef2}
th{color:#57606a;font-weight:600}
.badge{display:inline-block;min-width:74px;text-align:center;color:#fff;border-radius:12px;
padding:2px 8px;font-size:12px;font-weight:600}
.answer{font-size:30px;font-weight:700;margin:4px 0 10px}
.detail{color:#57606a;font-size:12px;word-break:break-word}
footer{padding:0 24px 16px;font-size:13px}footer a{margin-right:12px}
"""


@dataclass(frozen=True)
class Page:
    """What the page shows besides the facts: who serves it and where to go next."""

    version: str
    links: Mapping[str, str]  # path -> description
    reload_ok: bool
    loaded_at: float


def render(facts: Facts, snapshot: Snapshot, page: Page) -> bytes:
    overall = facts.evaluations.get("overall")
    title = _badge(overall.status.name if overall and overall.status else None)
    when = datetime.fromtimestamp(facts.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    loaded = datetime.fromtimestamp(page.loaded_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    reload_note = "" if page.reload_ok else " · <strong>last reload refused</strong>"
    links = "".join(
        f'<a href="{_e(path)}" title="{_e(text)}">{_e(path)}</a>'
        for path, text in page.links.items()
    )
    body = (
        f"<header><h1>PixCrawler exporter {title}</h1><p>version {_e(page.version)} · "
        f"{_e(facts.environment)} · read {when} · configuration loaded {loaded}{reload_note}"
        "</p></header>\n<main>\n"
        f"{_capacity(facts)}\n{_statuses(facts)}\n{_collectors(snapshot)}\n</main>\n"
        f"<footer>{links}</footer>"
    )
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>PixCrawler exporter</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
    return document.encode()


def _capacity(facts: Facts) -> str:
    c = facts.capacity
    answer = {True: "YES", False: "NO", None: "unknown"}[c.can_start]
    colour = {True: "#1a7f37", False: "#cf222e", None: "#6e7781"}[c.can_start]
    rows = [
        ("Active chunks", _n(c.active)),
        ("Free slots", _n(c.available)),
        ("Effective maximum", str(c.effective_max)),
        ("Configured maximum", str(c.max_concurrent)),
        ("Maximum the temp storage holds", str(c.max_by_storage)),
        ("Utilization", f"{c.utilization:.0%}" if c.utilization is not None else "unknown"),
    ]
    hint = (
        '<p class="detail">Needs the active chunk count (database collector) and the temp '
        "storage scan.</p>"
        if c.can_start is None
        else ""
    )
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        '<section id="capacity"><h2>Can a chunk start?</h2>'
        f'<div class="answer" style="color:{colour}">{answer}</div>{hint}'
        f"<table>{table}</table></section>"
    )


def _statuses(facts: Facts) -> str:
    rows = []
    for name, value in facts.values.items():
        e = facts.evaluations.get(name)
        if value is None:
            shown = "unknown"
        elif name == "chunks":
            shown = f"{value:g} active"
        else:
            shown = f"{value:.1%}"
        status = e.status.name if e is not None and e.status is not None else None
        rows.append(
            f"<tr><td>{_e(name.replace('_', ' '))}</td><td>{shown}</td>"
            f"<td>{_badge(status)}</td></tr>"
        )
    return (
        '<section id="statuses"><h2>Resources</h2><table><tr><th>resource</th><th>value</th>'
        f"<th>status</th></tr>{''.join(rows)}</table></section>"
    )


def _collectors(snapshot: Snapshot) -> str:
    rows = []
    for name, outcome in snapshot.outcomes.items():
        badge = _badge("OK") if outcome.success else _badge("ALERT").replace(">ALERT<", ">failing<")
        detail = f'<div class="detail">{_e(outcome.error)}</div>' if outcome.error else ""
        rows.append(
            f"<tr><td>{_e(name)}{detail}</td><td>{outcome.duration_seconds * 1000:.0f} ms</td>"
            f"<td>{badge}</td></tr>"
        )
    return (
        '<section id="collectors"><h2>Collectors</h2><table><tr><th>collector</th>'
        f"<th>took</th><th>health</th></tr>{''.join(rows)}</table></section>"
    )


def _badge(status: str | None) -> str:
    text, colour = _BADGES.get(status, _BADGES[None])
    return f'<span class="badge" style="background:{colour}">{text}</span>'


def _n(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
