"""Alerts for what the seeds' operators watch for beyond the thresholds: work left behind (chunks
stuck active, temp files a crashed worker never removed), jobs whose chunk counters are out of
sync, storage filling up, and a temp scan that stopped or cannot read everything. Ages, windows
and the floor come from ``rules.*``."""

from __future__ import annotations

import math

from pixcrawler_exporter.artifacts.alerting import (
    AGE,
    FOR,
    INSTANCE,
    PERCENT,
    Group,
    alert,
    duration,
    number,
)
from pixcrawler_exporter.collectors.temp_storage.settings import TempSettings
from pixcrawler_exporter.config import Config

# The scan sleeps at least as long as it took, so one interval late is normal; five is not.
SCAN_STALE_INTERVALS = 5
SCAN_MIN_STALE_SECONDS = 600
SCAN_ERRORS_WINDOW = "15m"


def groups(cfg: Config) -> list[Group]:
    return [_leftovers(cfg), _job_counters(cfg), _filling(cfg), _temp_scan(cfg)]


def _leftovers(cfg: Config) -> Group:
    """Chunks counted active that nothing works on, and temp files nobody removes."""
    a = cfg.rules
    stuck, orphaned = duration(a.stuck_chunk_age_seconds), duration(a.orphaned_file_age_seconds)
    return Group(
        "pixcrawler-exporter.leftovers",
        [
            alert(
                "PixCrawlerChunksActiveOnIdleJobs",
                # Active chunks over all jobs minus those of running jobs: what jobs that are not
                # running still claim (seed 003: a worker crashed, or a task ended without its
                # callback). Always 0 with the processing_chunks preset.
                'pixcrawler_job_chunks{state="active"} - ignoring(state) '
                "pixcrawler_chunks_active > 0",
                1800,
                "warning",
                f"{{{{ $value }}}} chunks are counted active on jobs that are not running on "
                f"{INSTANCE}",
                f"Jobs that are not running still count {{{{ $value }}}} active chunks in the "
                f"jobs table {INSTANCE} reads, for {FOR}: their workers crashed or their tasks "
                "ended without the completion callback. Reconcile the counters with Celery.",
            ),
            alert(
                "PixCrawlerChunkStuck",
                f"pixcrawler_chunks_oldest_active_age_seconds > {a.stuck_chunk_age_seconds}",
                300,
                "warning",
                f"Active work on {INSTANCE} has not moved for {AGE}",
                f"The oldest active work in the table {INSTANCE} reads was last updated {AGE} "
                f"ago, more than {stuck}, for {FOR}: its chunk is stuck and holds a slot.",
            ),
            alert(
                "PixCrawlerTempFilesOrphaned",
                f"pixcrawler_temp_storage_oldest_file_age_seconds > {a.orphaned_file_age_seconds}",
                600,
                "warning",
                f"Temp files below {{{{ $labels.directory }}}} on {INSTANCE} are {AGE} old",
                f"The oldest crawler file below {{{{ $labels.directory }}}} on {INSTANCE} is "
                f"{AGE} old, older than {orphaned}, for {FOR}: a crashed worker's chunk was "
                "left behind and holds temp storage.",
            ),
        ],
    )


def _job_counters(cfg: Config) -> Group:
    """Seed 003's "job never completes: chunk counters out of sync", job by job: the database
    counts the running jobs (the crawl_jobs preset), since sums over all jobs let one job's
    error offset another's."""
    return Group(
        "pixcrawler-exporter.jobs",
        [
            alert(
                "PixCrawlerJobCountersOutOfSync",
                "pixcrawler_jobs_counters_out_of_sync > 0",
                # The orchestrator changes a job's counters in one statement, so no snapshot
                # sees them apart; 15m rides over one that changes them in several.
                900,
                "warning",
                f"Chunk counters of running jobs on {INSTANCE} do not add up",
                f"The jobs table {INSTANCE} reads has had {{{{ $value }}}} running job(s) whose "
                f"total_chunks is not active + completed + failed chunks for {FOR}: a chunk's "
                "end was counted twice or never, or a counter was changed by hand. Such a job "
                "completes early or never. Reconcile its counters with Celery.",
            ),
            alert(
                "PixCrawlerJobStalled",
                "pixcrawler_jobs_stalled > 0",
                # No timestamp in seed 003's table: the count is of jobs now, and for: says
                # for how long. A job may wait that long for a free slot, no longer.
                cfg.rules.chunk_duration_seconds,
                "warning",
                f"Running jobs on {INSTANCE} have chunks left and none active",
                f"The jobs table {INSTANCE} reads has had {{{{ $value }}}} running job(s) with "
                f"chunks left and none active for {FOR}, longer than a chunk can take: nothing "
                "will finish them, so they never complete. Requeue their chunks, or fail the "
                "jobs.",
            ),
        ],
    )


def _filling(cfg: Config) -> Group:
    """predict_linear over a window, from a floor up: a burst on an empty volume is no page."""
    a = cfg.rules
    window, horizon = duration(a.fill_lookback_seconds), duration(a.fill_horizon_seconds)
    floor = number(a.fill_floor)
    shown = f"{a.fill_floor * 100:g}%"

    def filling(metric: str) -> str:
        return (
            f"{metric} >= {floor} and "
            f"predict_linear({metric}[{window}], {a.fill_horizon_seconds}) >= 1"
        )

    temp = 'pixcrawler_resource_usage_ratio{resource="temp_storage"}'
    return Group(
        "pixcrawler-exporter.filling",
        [
            alert(
                "PixCrawlerTempStorageFillingUp",
                filling(temp),
                600,
                "warning",
                f"Temp storage on {INSTANCE} fills its quota within {horizon}",
                f"At the rate of the last {window}, the crawler's temp files on {INSTANCE} "
                f"({PERCENT} of the quota now, at least {shown}) fill the temp storage quota "
                f"within {horizon}, for {FOR}.",
            ),
            alert(
                "PixCrawlerDiskFillingUp",
                filling("pixcrawler_disk_usage_ratio"),
                600,
                "warning",
                f"The filesystem of {{{{ $labels.path }}}} on {INSTANCE} fills within {horizon}",
                f"At the rate of the last {window}, the filesystem holding {{{{ $labels.path }}}} "
                f"on {INSTANCE} ({PERCENT} full now, at least {shown}) is full within "
                f"{horizon}, for {FOR}.",
            ),
        ],
    )


def _temp_scan(cfg: Config) -> Group:
    """The background scan behind every temp figure: stopped, or not reading everything. A
    configured directory that cannot be read at all fails the collector
    (PixCrawlerCollectorFailing)."""
    stale = max(
        SCAN_MIN_STALE_SECONDS,
        math.ceil(SCAN_STALE_INTERVALS * cfg.source(TempSettings).scan_interval_seconds),
    )
    return Group(
        "pixcrawler-exporter.temp-scan",
        [
            alert(
                "PixCrawlerTempScanStale",
                f"time() - pixcrawler_temp_storage_last_scan_timestamp_seconds > {stale}",
                300,
                "warning",
                f"The temp scan on {INSTANCE} has not completed for {AGE}",
                f"The last temp scan on {INSTANCE} completed {AGE} ago, more than "
                f"{duration(stale)}, for {FOR}: the walk hangs (a stuck filesystem?), so the "
                "temp figures, the temp status and can_start_chunk are that old.",
            ),
            alert(
                "PixCrawlerTempScanErrors",
                f"increase(pixcrawler_temp_storage_scan_errors_total[{SCAN_ERRORS_WINDOW}]) > 0",
                900,
                "warning",
                f"The temp scan on {INSTANCE} cannot read every directory",
                f"The temp scan on {INSTANCE} hit {{{{ $value | humanize }}}} unreadable "
                f"directories in {SCAN_ERRORS_WINDOW}, for {FOR}: the files below them are not "
                "counted, so temp usage reads low. The exporter's log names them.",
            ),
        ],
    )
