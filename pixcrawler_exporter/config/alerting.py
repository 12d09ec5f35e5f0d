"""Settings of the rendered rules and dashboard: which series they select, the label they group
a fleet by, what the alerts beyond the thresholds alert on, and per-alert overrides
(monitoring-mixin conventions). One section, ``rules``; the alerts' own settings were once
``alerts.*``, a key still read with a deprecation warning (config/loading.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pixcrawler_exporter.config import promql
from pixcrawler_exporter.config.parsers import integer, number, percent, ratio
from pixcrawler_exporter.config.settings import setting

SEVERITIES = ("info", "warning", "critical")
_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER = re.compile(rf'\s*({_NAME})\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_MATCHERS_SHAPE = 'label matchers such as job="pixcrawler", namespace=~"crawl-.*"'
# Words PromQL's grammar does not take as a label in by (...): promtool refuses the rendered
# fleet rules' sum by (without) ("unexpected <without> in grouping opts"); inf and nan are numbers.
_NOT_GROUPING_LABELS = frozenset({"without", "inf", "nan"})


def label_matchers(raw: object) -> str:
    """PromQL label matchers, e.g. ``job="pixcrawler", namespace=~"crawl-.*"``, normalised to
    ``name="value"`` joined by ``, `` (braces around them are accepted); empty selects all."""
    if not isinstance(raw, str):
        raise ValueError(_MATCHERS_SHAPE)
    text = raw.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    found, pos = [], 0
    while pos < len(text):
        m = _MATCHER.match(text, pos)
        if m is None:
            raise ValueError(_MATCHERS_SHAPE)
        if (why := _refused(m.group(1), m.group(2), m.group(3))) is not None:
            raise ValueError(f"{_MATCHERS_SHAPE}; {m.group(1)}{m.group(2)}: {why}")
        found.append(f'{m.group(1)}{m.group(2)}"{m.group(3)}"')
        pos = m.end()
    return ", ".join(found)


def _refused(name: str, op: str, quoted: str) -> str | None:
    """Why Prometheus would refuse the matcher in the rendered rules, or None."""
    if name == "__name__":
        return "each rule selects its own metric name (__name__ would be set twice)"
    try:
        value = promql.unquote(quoted)
        if op in ("=~", "!~"):
            promql.check_regex(value)
    except ValueError as exc:
        return str(exc)
    return None


def split_matchers(selector: str) -> list[tuple[str, str]]:
    """A normalised selector's matchers as (label name, whole matcher)."""
    return [
        (m.group(1), m.group(0).strip().rstrip(",").strip()) for m in _MATCHER.finditer(selector)
    ]


def label_name(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not re.fullmatch(_NAME, raw):
        raise ValueError("a Prometheus label name such as cluster")
    if raw.lower() in _NOT_GROUPING_LABELS:
        raise ValueError(
            "a Prometheus label name such as cluster, other than without, inf and nan "
            "(PromQL does not take them in by (...))"
        )
    return raw


def duration_seconds(raw: object) -> int:
    """``for:`` as Prometheus writes it (``90s``, ``5m``, ``1h30m``) or whole seconds, at most
    the longest duration Prometheus holds."""
    shape = f"a duration such as 0s, 90s, 5m or 1h30m, at most {promql.MAX_DURATION_SECONDS}s"
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        total = raw
    elif m := _DURATION.fullmatch(raw) if isinstance(raw, str) and raw else None:
        hours, minutes, seconds = (int(g or 0) for g in m.groups())
        total = hours * 3600 + minutes * 60 + seconds
    else:
        raise ValueError(shape)
    if total > promql.MAX_DURATION_SECONDS:
        raise ValueError(f"{shape} (about 292 years: Prometheus's longest)")
    return total


def duration(seconds: int) -> str:
    """A Prometheus duration in the largest unit that divides it: 300 -> '5m'."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class AlertOverride:
    severity: str | None = None
    for_seconds: int | None = None
    disable: bool = False

    def plain(self) -> dict[str, object]:
        """As written in YAML (what ``--print-config`` shows and ``--config`` reads back)."""
        out: dict[str, object] = {}
        if self.severity is not None:
            out["severity"] = self.severity
        if self.for_seconds is not None:
            out["for"] = duration(self.for_seconds)
        if self.disable:
            out["disable"] = True
        return out


def alert_overrides(raw: object) -> Mapping[str, AlertOverride] | None:
    """``{AlertName: {severity: info, for: 30m, disable: false}}``; alert names are checked when
    the rules are rendered."""
    if raw is None:
        return None
    shape = "a mapping of alert name to {severity, for, disable}"
    if not isinstance(raw, dict):
        raise ValueError(shape)
    out = {}
    for name, given in raw.items():
        if not isinstance(name, str) or not isinstance(given, dict):
            raise ValueError(shape)
        unknown = set(given) - {"severity", "for", "disable"}
        severity, disable = given.get("severity"), given.get("disable", False)
        if unknown or (severity is not None and severity not in SEVERITIES):
            raise ValueError(f"{shape}, severity one of {', '.join(SEVERITIES)} (at {name})")
        if not isinstance(disable, bool):
            raise ValueError(f"{shape}, disable true or false (at {name})")
        try:
            delay = duration_seconds(given["for"]) if "for" in given else None
        except ValueError as exc:
            raise ValueError(f"{exc} (at {name}.for)") from None
        out[name] = AlertOverride(severity, delay, disable)
    return out


@dataclass(frozen=True)
class Rules:
    selector: str = setting(
        'job="pixcrawler"',
        label_matchers,
        env="PIXCRAWLER_RULES_SELECTOR",
        help="Label matchers every rule's series are selected by (any labels, e.g. "
        'job="pixcrawler", namespace="crawl"); the dashboard adds those not on job to its '
        "queries.",
    )
    group_label: str | None = setting(
        None,
        label_name,
        env="PIXCRAWLER_RULES_GROUP_LABEL",
        help="Label a fleet is grouped by (e.g. cluster): the fleet recording rules sum by it "
        "and the dashboard gets a variable for it. Unset sums over everything selected.",
    )
    cpu_throttling_seconds_per_second: float = setting(
        0.25,
        number(0, 10_000),
        env="PIXCRAWLER_RULES_CPU_THROTTLING_SECONDS_PER_SECOND",
        help="PixCrawlerCPUThrottlingHigh fires above this many throttled seconds per second.",
    )
    # What the rules alert on beyond the thresholds: work left behind, storage filling up and
    # the work pipeline (artifacts/watch.py, artifacts/pipeline.py).
    stuck_chunk_age_seconds: int = setting(
        7200,
        integer(60, 30 * 86400),
        env="PIXCRAWLER_ALERT_STUCK_CHUNK_AGE_SECONDS",
        help="PixCrawlerChunkStuck: active work not updated for longer than this (needs a "
        "timestamp column in database.names).",
    )
    orphaned_file_age_seconds: int = setting(
        7200,
        integer(60, 30 * 86400),
        env="PIXCRAWLER_ALERT_ORPHANED_FILE_AGE_SECONDS",
        help="PixCrawlerTempFilesOrphaned: a temp file older than this was left behind.",
    )
    fill_lookback_seconds: int = setting(
        3600,
        integer(300, 7 * 86400),
        env="PIXCRAWLER_ALERT_FILL_LOOKBACK_SECONDS",
        help="The filling-up alerts extrapolate the trend over this window (predict_linear).",
    )
    fill_horizon_seconds: int = setting(
        4 * 3600,
        integer(300, 30 * 86400),
        env="PIXCRAWLER_ALERT_FILL_HORIZON_SECONDS",
        help="The filling-up alerts fire when temp storage or a disk would be full within this.",
    )
    fill_floor: float = setting(
        0.5,
        ratio,
        env="PIXCRAWLER_ALERT_FILL_FLOOR_PERCENT",
        env_parse=percent(0, 1),
        help="The filling-up alerts wait until usage is at least this (0-1; percent in the "
        "variable), so a burst on an empty volume does not page.",
    )
    # The work pipeline's alerts (artifacts/pipeline.py), and PixCrawlerJobStalled.
    chunk_duration_seconds: int = setting(
        1800,
        integer(10, 7 * 86400),
        env="PIXCRAWLER_ALERT_CHUNK_DURATION_SECONDS",
        help="The longest a chunk can take: PixCrawlerChunksUnaccounted fires when the database "
        "and Celery disagree for longer (a prefetched chunk is seen by neither while the one "
        "before it runs), PixCrawlerJobStalled when a running job has had chunks left and "
        "none active for longer.",
    )
    queue_wait_seconds: int = setting(
        1800,
        # The queue-wait histogram's largest finite bucket is 3600 s: a quantile beyond it
        # reads as 3600, so a higher threshold could never be reached.
        integer(1, 3600),
        env="PIXCRAWLER_ALERT_QUEUE_WAIT_SECONDS",
        help="PixCrawlerCeleryQueueWaitHigh: 9 in 10 tasks waited at least this long in the "
        "queue before starting (needs celery.task_events and task-sent events).",
    )
    redis_memory_ratio: float = setting(
        0.9,
        ratio,
        env="PIXCRAWLER_ALERT_REDIS_MEMORY_PERCENT",
        env_parse=percent(0, 1),
        help="PixCrawlerRedisMemoryHigh: the broker's Redis uses at least this share of its "
        "maxmemory (0-1; percent in the variable).",
    )
    task_failure_ratio: float = setting(
        0.1,
        ratio,
        env="PIXCRAWLER_ALERT_TASK_FAILURE_PERCENT",
        env_parse=percent(0, 1),
        help="PixCrawlerCeleryTaskFailures: at least this share of a task's runs ended failed "
        "over 15m (0-1; percent in the variable; needs celery.task_events).",
    )
    alerts: Mapping[str, AlertOverride] | None = setting(
        None,
        alert_overrides,
        help="Per-alert overrides (YAML only): {AlertName: {severity: info|warning|critical, "
        "for: 10m, disable: true}}.",
    )
