"""Alerts on the container's resources and the chunk capacity, at the thresholds the exporter's
own statuses use: an alert fires on the figure /status and the RESOURCE log lines report."""

from __future__ import annotations

from pixcrawler_exporter.artifacts.alerting import (
    FOR,
    INSTANCE,
    PERCENT,
    Alert,
    Group,
    alert,
    number,
    quote,
)
from pixcrawler_exporter.artifacts.recording import (
    CPU_THROTTLED,
    CPU_USAGE_RATIO,
    FAILED_CHUNKS_10M,
    OOM_KILLS_10M,
)
from pixcrawler_exporter.config import Config
from pixcrawler_exporter.derive.resources import Resource

# A threshold that is not an exporter setting (the exporter has no status for it).
FAILED_CHUNKS_PER_10M = 5


def usage(resource: str) -> str:
    """The figure the exporter evaluates the resource's status from, in every mode: alerts on it
    cannot disagree with /status or the RESOURCE log lines."""
    return f"pixcrawler_resource_usage_ratio{{resource={quote(resource)}}}"


def _threshold_pair(
    cfg: Config,
    resource: Resource,
    metric: str,
    name: str,
    what: str,
    for_warning: int,
    for_critical: int,
    description: str,
) -> list[Alert]:
    """The warning and critical alert of one resource. Both fire at the threshold, not just
    above it, as the exporter's own status does; ``resource`` lets Alertmanager inhibit the
    warning while the critical one fires."""
    t = cfg.thresholds
    pair = t.pair(resource)
    value = "{{ $value }}" if resource == "chunks" else PERCENT
    out = []
    for severity, suffix, threshold, for_s in (
        ("warning", "High", pair.warning, for_warning),
        ("critical", "Critical", pair.critical, for_critical),
    ):
        shown = f"{threshold:g}" if resource == "chunks" else f"{threshold * 100:g}%"
        out.append(
            alert(
                f"PixCrawler{name}{suffix}",
                f"{metric} >= {number(threshold)}",
                for_s,
                severity,
                f"{what} on {INSTANCE} is {value}",
                description.replace("<severity>", severity).replace("<threshold>", shown),
                {"resource": resource},
            )
        )
    return out


def resources_group(cfg: Config) -> Group:
    """The container's memory, CPU, disk and temp storage."""
    throttled = cfg.rules.cpu_throttling_seconds_per_second
    return Group(
        "pixcrawler-exporter.resources",
        records=(CPU_USAGE_RATIO, CPU_THROTTLED, OOM_KILLS_10M),
        alerts=[
            *_threshold_pair(
                cfg,
                "memory",
                usage("memory"),
                "MemoryUsage",
                "Memory usage",
                300,
                120,
                f"Memory that cannot be reclaimed on {INSTANCE} (in mode azure: the plan's "
                f"MemoryPercentage on its busiest instance) is {PERCENT} of the limit, at or "
                f"above the <severity> threshold of <threshold> for {FOR}: the figure the "
                "exporter's memory status and /status report.",
            ),
            *_threshold_pair(
                cfg,
                "cpu",
                usage("cpu"),
                "CPUUsage",
                "CPU usage",
                600,
                300,
                f"CPU used on {INSTANCE} is {PERCENT} of its CPU limit in cores (in mode azure: "
                "the plan's CpuPercentage on its busiest instance), at or above the <severity> "
                f"threshold of <threshold> for {FOR}.",
            ),
            alert(
                "PixCrawlerCPUThrottlingHigh",
                f"{CPU_THROTTLED} > {number(throttled)}",
                900,
                # Throttling slows the crawler down without breaking anything; the
                # kubernetes-mixin lowered its own throttling alert to info after years of noise.
                "info",
                f"CPU of {INSTANCE} is throttled by its quota",
                f"Tasks on {INSTANCE} were held back by the CFS quota for "
                "{{ $value | humanize }}s per second over 5m (more than "
                f"{throttled:g}) for {FOR}: the crawler runs slower than "
                "its CPU usage suggests.",
            ),
            alert(
                "PixCrawlerContainerOOMKilled",
                f"{OOM_KILLS_10M} > 0",
                0,
                "warning",
                f"The OOM killer killed a process on {INSTANCE}",
                "The OOM killer killed {{ $value | humanize }} process(es) in the watched "
                f"container on {INSTANCE} in the last 10m.",
            ),
            *_threshold_pair(
                cfg,
                "disk",
                usage("disk"),
                "DiskUsage",
                "Disk usage",
                600,
                300,
                f"The fullest filesystem of disk.paths on {INSTANCE} is {PERCENT} full, at or "
                f"above the <severity> threshold of <threshold> for {FOR} "
                "(pixcrawler_disk_usage_ratio says which).",
            ),
            *_threshold_pair(
                cfg,
                "temp_storage",
                usage("temp_storage"),
                "TempStorage",
                "Temp storage usage",
                300,
                120,
                f"The crawler's temp files on {INSTANCE} fill {PERCENT} of the temp storage "
                f"quota, at or above the <severity> threshold of <threshold> for {FOR}.",
            ),
        ],
    )


def capacity_group(cfg: Config) -> Group:
    """Active chunks, capacity and failing chunks."""
    return Group(
        "pixcrawler-exporter.capacity",
        records=(FAILED_CHUNKS_10M,),
        alerts=[
            *_threshold_pair(
                cfg,
                "chunks",
                "pixcrawler_chunks_active",
                "ActiveChunks",
                "Active chunks",
                600,
                300,
                f"{{{{ $value }}}} chunks are being processed on {INSTANCE}, at or above the "
                f"<severity> threshold of <threshold> for {FOR}.",
            ),
            alert(
                "PixCrawlerCapacityExhausted",
                "pixcrawler_can_start_chunk == 0",
                900,
                "warning",
                f"No chunk can start on {INSTANCE}",
                f"{INSTANCE} has had no free chunk slot, or no temp storage room for one more "
                f"chunk, for {FOR} (can_start_chunk {{{{ $value }}}}): new chunks wait.",
            ),
            alert(
                "PixCrawlerCapacityUnknown",
                # pixcrawler_can_start_chunk is absent while unknown, so the alert above cannot
                # fire then; an orchestrator asking is left without an answer, whatever the cause.
                "pixcrawler_can_start_chunk_known == 0",
                600,
                "warning",
                f"Whether a chunk can start on {INSTANCE} is unknown",
                f"{INSTANCE} has not known for {FOR} whether one more chunk can start "
                "(can_start_chunk_known {{ $value }}): active chunks, temp usage or the memory "
                "left cannot be read, so pixcrawler_can_start_chunk is absent and the capacity "
                "alerts cannot fire.",
            ),
            alert(
                "PixCrawlerChunkFailuresSpike",
                f"{FAILED_CHUNKS_10M} > {FAILED_CHUNKS_PER_10M}",
                0,
                "warning",
                f"{{{{ $value }}}} chunks failed in 10m on {INSTANCE}",
                f"{{{{ $value }}}} chunks failed in the jobs {INSTANCE} reads in the last 10m "
                f"(more than {FAILED_CHUNKS_PER_10M}).",
            ),
        ],
    )
