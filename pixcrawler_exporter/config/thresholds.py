"""Threshold settings: a warning and a critical threshold per resource."""

from __future__ import annotations

from dataclasses import dataclass

from pixcrawler_exporter.config.parsers import Parser, integer, percent, ratio
from pixcrawler_exporter.config.settings import SettingMeta, declare, section, setting
from pixcrawler_exporter.derive.resources import Resource


@dataclass(frozen=True)
class ThresholdPair:
    warning: float
    critical: float


def _pair(
    resource: Resource, env: str, warning: float, critical: float
) -> tuple[ThresholdPair, dict[str, SettingMeta]]:
    """A ``{warning, critical}`` section. Ratios in YAML; the seed's variables take percents
    (``PIXCRAWLER_DISK_THRESHOLD_WARN=80`` is 0.8); chunk thresholds are counts everywhere."""
    parse: Parser[float]
    env_parse: Parser[float]
    if resource == "chunks":
        parse = env_parse = integer(0, 10**6)
    else:
        parse, env_parse = ratio, percent(0, 1)
    what = (
        ": active chunks, in every form."
        if resource == "chunks"
        else " usage: a ratio 0-1 in YAML, percent 0-100 in the variable (80 is 80%; "
        "0 < value <= 1 there is refused as a ratio)."
    )
    settings = {
        severity: declare(
            default,
            parse,
            env=f"PIXCRAWLER_{env}_THRESHOLD_{suffix}",
            env_parse=env_parse,
            help=f"{severity.capitalize()} threshold for {resource.replace('_', ' ')}{what}",
        )
        for severity, suffix, default in (
            ("warning", "WARN", warning),
            ("critical", "ALERT", critical),
        )
    }
    return ThresholdPair(warning, critical), settings


@dataclass(frozen=True)
class Thresholds:
    disk: ThresholdPair = section(*_pair("disk", "DISK", 0.8, 0.9))
    memory: ThresholdPair = section(*_pair("memory", "MEMORY", 0.8, 0.9))
    cpu: ThresholdPair = section(*_pair("cpu", "CPU", 0.8, 0.95))
    temp_storage: ThresholdPair = section(*_pair("temp_storage", "TEMP_STORAGE", 0.8, 0.9))
    chunks: ThresholdPair = section(*_pair("chunks", "CHUNK", 35, 40))

    def pair(self, resource: Resource) -> ThresholdPair:
        pairs: dict[Resource, ThresholdPair] = {
            "disk": self.disk,
            "memory": self.memory,
            "cpu": self.cpu,
            "temp_storage": self.temp_storage,
            "chunks": self.chunks,
        }
        return pairs[resource]


@dataclass(frozen=True)
class Alerts:
    """What the rules alert on beyond the thresholds: work left behind, storage filling up and
    the work pipeline."""

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
    # The work pipeline's alerts (artifacts/pipeline.py).
    chunk_duration_seconds: int = setting(
        1800,
        integer(10, 7 * 86400),
        env="PIXCRAWLER_ALERT_CHUNK_DURATION_SECONDS",
        help="The longest a chunk can take: PixCrawlerChunksUnaccounted fires when the database "
        "and Celery disagree for longer (a prefetched chunk is seen by neither while the one "
        "before it runs).",
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
