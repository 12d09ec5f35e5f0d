"""The Grafana dashboard, generated so that its thresholds and recording rules cannot drift.

``python3 -m grafana.dashboard`` (from the repository's root) rewrites
``grafana/pixcrawler-exporter.json``; a test fails when the committed file differs from what this
module generates. The stat panels are coloured by the exporter's default thresholds, read from
``pixcrawler_exporter.config``, and the panels an alert shares an expression with query the
recording rule that ``pixcrawler_exporter.artifacts.rules`` renders, so dashboard and alert
show one figure.

Plain data rather than grafana-foundation-sdk: the model needed here is small, and a
dependency would pin the dashboard to the SDK's schema version rather than to what Grafana
imports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixcrawler_exporter.artifacts import recording, resources, rules
from pixcrawler_exporter.collectors.azure import presets
from pixcrawler_exporter.config import Config, Rules, load, split_matchers
from pixcrawler_exporter.derive.resources import Resource

UID = "pixcrawler-exporter"
TITLE = "PixCrawler exporter"
OUTPUT = Path(__file__).resolve().parent / "pixcrawler-exporter.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every query is scoped to the chosen job and instances.
# The figure each status is evaluated from: what /status, the log lines and the alerts show.
USAGE = "pixcrawler_resource_usage_ratio"
SCOPE = 'job="$job", instance=~"$instance"'
WIDTH = 24  # Grafana's grid

GREEN, ORANGE, RED = "green", "orange", "red"
STATUS_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "OK", "color": GREEN, "index": 0},
            "1": {"text": "WARNING", "color": ORANGE, "index": 1},
            "2": {"text": "ALERT", "color": RED, "index": 2},
        },
    }
]
YES_NO_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "NO", "color": RED, "index": 0},
            "1": {"text": "YES", "color": GREEN, "index": 1},
        },
    }
]
UP_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": RED, "index": 0},
            "1": {"text": "up", "color": GREEN, "index": 1},
        },
    }
]


def sel(metric: str, /, **labels: str) -> str:
    """``metric{job="$job", instance=~"$instance", ...}``."""
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{SCOPE}{extra}}}"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = "{{instance}}"


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # "stat", "timeseries" or "state-timeline"
    unit: str
    targets: Sequence[Target]
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: Sequence[tuple[str, float | None]] = ((GREEN, None),)
    show_thresholds: bool = False  # draw the thresholds as dashed lines in a time series
    mappings: Sequence[Mapping[str, Any]] = ()
    overrides: Sequence[Mapping[str, Any]] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: Sequence[Panel]


def steps(cfg: Config, resource: Resource) -> list[tuple[str, float | None]]:
    """Green below the warning threshold, orange from it, red from the critical one."""
    pair = cfg.thresholds.pair(resource)
    return [(GREEN, None), (ORANGE, pair.warning), (RED, pair.critical)]


def stat(
    title: str,
    targets: Sequence[Target],
    unit: str,
    thresholds: Sequence[tuple[str, float | None]],
    description: str,
    width: int = 3,
    **kw: Any,
) -> Panel:
    return Panel(title, "stat", unit, targets, description, width, 4, thresholds, **kw)


def ratio_series(
    cfg: Config,
    title: str,
    expr: str,
    resource: Resource,
    description: str,
    legend: str = "{{instance}}",
) -> Panel:
    """A ratio over time against the resource's thresholds, drawn as dashed lines."""
    return Panel(
        title,
        "timeseries",
        "percentunit",
        [Target(expr, legend)],
        description,
        thresholds=steps(cfg, resource),
        show_thresholds=True,
    )


# Colours the "effective max" figure of a stat as text: the thresholds are for active chunks.
FIXED_TEXT = [
    {
        "matcher": {"id": "byRegexp", "options": ".*effective max"},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "text"}}],
    }
]


def overview_row(cfg: Config) -> Row:
    """The headline figures, coloured by the thresholds."""
    return Row(
        "Overview",
        [
            stat(
                "Overall status",
                [Target(sel("pixcrawler_resource_status", resource="overall"))],
                "none",
                [(GREEN, None), (ORANGE, 1), (RED, 2)],
                "The worst status of disk, memory, CPU, temp storage and chunks.",
                mappings=STATUS_MAPPINGS,
            ),
            stat(
                "Can start a chunk",
                [Target(sel("pixcrawler_can_start_chunk"))],
                "none",
                [(RED, None), (GREEN, 1)],
                "A chunk slot is free and temp storage has room for one more chunk.",
                mappings=YES_NO_MAPPINGS,
            ),
            stat(
                "Memory",
                [Target(sel(USAGE, resource="memory"))],
                "percentunit",
                steps(cfg, "memory"),
                "The memory status's figure, as /status and the alerts have it: memory the "
                "kernel cannot reclaim over the effective limit (mode azure: the plan's "
                "MemoryPercentage on its busiest instance).",
            ),
            stat(
                "CPU",
                [Target(sel(USAGE, resource="cpu"))],
                "percentunit",
                steps(cfg, "cpu"),
                "The CPU status's figure: CPU used against the CPU limit in cores between two "
                "collections (mode azure: the plan's CpuPercentage on its busiest instance).",
            ),
            stat(
                "Disk (fullest path)",
                [Target(sel(USAGE, resource="disk"))],
                "percentunit",
                steps(cfg, "disk"),
                "The disk status's figure: the fullest of the filesystems holding disk.paths.",
            ),
            stat(
                "Temp storage",
                [Target(sel(USAGE, resource="temp_storage"))],
                "percentunit",
                steps(cfg, "temp_storage"),
                "The crawler's temp files over the temp storage quota.",
            ),
            stat(
                "Active chunks / effective max",
                [
                    Target(sel("pixcrawler_chunks_active"), "{{instance}} active"),
                    Target(sel("pixcrawler_chunks_effective_max"), "{{instance}} effective max"),
                ],
                "none",
                steps(cfg, "chunks"),
                "Chunks being processed, coloured by the chunk thresholds, beside the most "
                "that may run.",
                width=6,
                overrides=FIXED_TEXT,
            ),
        ],
    )


def capacity_row(cfg: Config) -> Row:
    """Active chunks against what may run, and why."""
    return Row(
        "Capacity",
        [
            Panel(
                "Active chunks against the maximum",
                "timeseries",
                "none",
                [
                    Target(sel("pixcrawler_chunks_active"), "{{instance}} active"),
                    Target(sel("pixcrawler_chunks_effective_max"), "{{instance}} effective max"),
                    Target(sel("pixcrawler_chunks_max_concurrent"), "{{instance}} configured max"),
                    Target(
                        sel("pixcrawler_chunks_max_by_storage"), "{{instance}} temp storage holds"
                    ),
                ],
                "The effective maximum is the smaller of the configured one and what the temp "
                "storage quota holds.",
                thresholds=steps(cfg, "chunks"),
                show_thresholds=True,
            ),
            Panel(
                "Capacity utilization",
                "timeseries",
                "percentunit",
                [Target(sel("pixcrawler_capacity_utilization_ratio"))],
                "Active chunks over the effective maximum.",
            ),
            Panel(
                "Free chunk slots",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_chunks_available"))],
                "Effective maximum minus active chunks.",
            ),
            Panel(
                "Can start a chunk",
                "state-timeline",
                "none",
                [Target(sel("pixcrawler_can_start_chunk"))],
                "1 when a slot is free and temp storage has room for one more chunk.",
                mappings=YES_NO_MAPPINGS,
                thresholds=[(RED, None), (GREEN, 1)],
            ),
            Panel(
                "Status per resource",
                "state-timeline",
                "none",
                [Target(sel("pixcrawler_resource_status"), "{{instance}} {{resource}}")],
                "OK, WARNING or ALERT, as the exporter evaluates and logs them.",
                width=WIDTH,
                mappings=STATUS_MAPPINGS,
                thresholds=[(GREEN, None), (ORANGE, 1), (RED, 2)],
            ),
        ],
    )


def container_row(cfg: Config) -> Row:
    """The watched container's resources against its limits."""
    return Row(
        "Container resources",
        [*_memory_panels(cfg), *_cpu_panels(cfg), *_disk_and_network_panels(cfg)],
    )


def _memory_panels(cfg: Config) -> list[Panel]:
    """Working set, limit, the host's figures and OOM kills."""
    return [
        Panel(
            "Memory: working set against limit",
            "timeseries",
            "bytes",
            [
                Target(sel("pixcrawler_memory_unreclaimable_bytes"), "{{instance}} unreclaimable"),
                Target(sel("pixcrawler_memory_working_set_bytes"), "{{instance}} working set"),
                Target(sel("pixcrawler_memory_usage_bytes"), "{{instance}} usage (with cache)"),
                Target(sel("pixcrawler_memory_limit_bytes"), "{{instance}} limit"),
            ],
            "The container's figures: what the kernel cannot reclaim (the status's figure), "
            "the working set the kubelet evicts on, and usage with page cache.",
        ),
        Panel(
            "Memory: the host's figures",
            "timeseries",
            "bytes",
            [
                Target(sel("pixcrawler_host_memory_total_bytes"), "{{instance}} host total"),
                Target(
                    sel("pixcrawler_host_memory_available_bytes"),
                    "{{instance}} host available",
                ),
            ],
            "What the host reports, for comparison: inside a container it is not the limit.",
        ),
        ratio_series(
            cfg,
            "Memory usage ratio",
            sel(USAGE, resource="memory"),
            "memory",
            "The memory status's figure over time, against the thresholds.",
        ),
        Panel(
            "OOM kills in 10m",
            "timeseries",
            "none",
            [Target(sel(recording.OOM_KILLS_10M))],
            "Processes the OOM killer killed in the watched container.",
        ),
    ]


def _cpu_panels(cfg: Config) -> list[Panel]:
    """CPU against its limit, CFS throttling and pressure stalls."""
    return [
        Panel(
            "CPU used against limit",
            "timeseries",
            "suffix: cores",
            [
                Target(
                    f"rate({sel('pixcrawler_cpu_usage_seconds_total')}[$__rate_interval])",
                    "{{instance}} used",
                ),
                Target(sel("pixcrawler_cpu_limit_cores"), "{{instance}} limit"),
            ],
            "CPU seconds used per second, against the CFS quota in cores (or the CPUs the "
            "process may run on).",
        ),
        ratio_series(
            cfg,
            "CPU usage ratio (5m)",
            sel(recording.CPU_USAGE_RATIO),
            "cpu",
            "CPU used over 5m against the limit, as the CPU alerts read it.",
        ),
        Panel(
            "CPU throttled time (5m)",
            "timeseries",
            "s",
            [Target(sel(recording.CPU_THROTTLED), "{{instance}} throttled per second")],
            "Seconds the CFS quota held tasks back, per second (counted per CPU).",
            thresholds=[(GREEN, None), (ORANGE, cfg.rules.cpu_throttling_seconds_per_second)],
            show_thresholds=True,
        ),
        Panel(
            "CPU throttled periods",
            "timeseries",
            "cps",
            [Target(f"rate({sel('pixcrawler_cpu_throttled_periods_total')}[$__rate_interval])")],
            "CFS periods per second in which the container was throttled.",
        ),
        Panel(
            "Pressure stall (PSI)",
            "timeseries",
            "percentunit",
            [
                Target(
                    f"rate({sel('pixcrawler_pressure_stall_seconds_total')}[$__rate_interval])",
                    "{{instance}} {{resource}} {{kind}}",
                )
            ],
            "Share of time some (or all) tasks waited for CPU, memory or I/O.",
            width=WIDTH,
        ),
    ]


def _disk_and_network_panels(cfg: Config) -> list[Panel]:
    """The filesystems holding disk.paths and the pod's traffic."""
    return [
        ratio_series(
            cfg,
            "Disk usage per path",
            sel("pixcrawler_disk_usage_ratio"),
            "disk",
            "Share of each filesystem not available to unprivileged users, as df counts it.",
            "{{instance}} {{path}}",
        ),
        Panel(
            "Disk space per path",
            "timeseries",
            "bytes",
            [
                Target(sel("pixcrawler_disk_available_bytes"), "{{instance}} {{path}} free"),
                Target(sel("pixcrawler_disk_size_bytes"), "{{instance}} {{path}} size"),
            ],
            "Size and space available of the filesystems holding disk.paths.",
        ),
        Panel(
            "Network",
            "timeseries",
            "Bps",
            [
                Target(
                    f"rate({sel('pixcrawler_network_receive_bytes_total')}[$__rate_interval])",
                    "{{instance}} {{interface}} received",
                ),
                Target(
                    f"rate({sel('pixcrawler_network_transmit_bytes_total')}[$__rate_interval])",
                    "{{instance}} {{interface}} sent",
                ),
            ],
            "Bytes per second per interface: downloads show up as received.",
            width=WIDTH,
        ),
    ]


def temp_storage_row(cfg: Config) -> Row:
    """The crawler's temp files and the background scan."""
    return Row(
        "Temp storage",
        [
            Panel(
                "Temp storage used against quota",
                "timeseries",
                "bytes",
                [
                    Target(
                        f"sum by (instance) ({sel('pixcrawler_temp_storage_bytes')})",
                        "{{instance}} used",
                    ),
                    Target(sel("pixcrawler_temp_storage_limit_bytes"), "{{instance}} quota"),
                ],
                "The crawler's temp files in all temp directories, against the quota.",
            ),
            ratio_series(
                cfg,
                "Temp storage usage ratio",
                sel("pixcrawler_temp_storage_usage_ratio"),
                "temp_storage",
                "Temp files over the quota, against the thresholds.",
            ),
            Panel(
                "Temp bytes per directory",
                "timeseries",
                "bytes",
                [Target(sel("pixcrawler_temp_storage_bytes"), "{{instance}} {{directory}}")],
                "Bytes of the crawler's files below each temp directory.",
            ),
            Panel(
                "Temp files per directory",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_temp_storage_files"), "{{instance}} {{directory}}")],
                "Number of the crawler's files below each temp directory.",
            ),
            Panel(
                "Temp scan duration",
                "timeseries",
                "s",
                [Target(sel("pixcrawler_temp_storage_scan_duration_seconds"))],
                "How long the last background scan took.",
                width=8,
            ),
            Panel(
                "Time since the last temp scan",
                "timeseries",
                "s",
                [Target(f"time() - {sel('pixcrawler_temp_storage_last_scan_timestamp_seconds')}")],
                "Grows past the scan interval when scans stall.",
                width=8,
            ),
            Panel(
                "Temp scan errors",
                "timeseries",
                "none",
                [
                    Target(
                        f"increase({sel('pixcrawler_temp_storage_scan_errors_total')}"
                        "[$__rate_interval])"
                    )
                ],
                "Directories the scan could not read.",
                width=8,
            ),
        ],
    )


def database_row(cfg: Config) -> Row:
    """The crawl database: jobs, chunks and whether it answers."""
    return Row(
        "Database and jobs",
        [
            Panel(
                "Active chunks (database)",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_chunks_active"))],
                "Chunks being processed, from the database, against the chunk thresholds.",
                thresholds=steps(cfg, "chunks"),
                show_thresholds=True,
            ),
            Panel(
                "Jobs per status",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_jobs"), "{{instance}} {{status}}")],
                "Crawl jobs per status.",
            ),
            Panel(
                "Chunks per state",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_job_chunks"), "{{instance}} {{state}}")],
                "Chunks summed over all jobs: total, active, completed, failed.",
            ),
            Panel(
                "Jobs out of sync or stalled",
                "timeseries",
                "none",
                [
                    Target(sel("pixcrawler_jobs_counters_out_of_sync"), "{{instance}} out of sync"),
                    Target(sel("pixcrawler_jobs_stalled"), "{{instance}} stalled"),
                ],
                "Running jobs whose chunk counters do not add up, and running jobs with chunks "
                "left and none active, counted job by job in the database "
                "(PixCrawlerJobCountersOutOfSync, PixCrawlerJobStalled).",
                thresholds=[(GREEN, None), (ORANGE, 1)],
            ),
            Panel(
                "Failed chunks in 10m",
                "timeseries",
                "none",
                [Target(sel(recording.FAILED_CHUNKS_10M))],
                "Rise of the failed-chunk count over 10m, as PixCrawlerChunkFailuresSpike reads "
                "it.",
                thresholds=[(GREEN, None), (ORANGE, resources.FAILED_CHUNKS_PER_10M + 1)],
                show_thresholds=True,
            ),
            Panel(
                "Database reachable",
                "state-timeline",
                "none",
                [Target(sel("pixcrawler_database_up"))],
                "Whether the last collection from PostgreSQL worked.",
                mappings=UP_MAPPINGS,
                thresholds=[(RED, None), (GREEN, 1)],
            ),
            Panel(
                "Database errors",
                "timeseries",
                "none",
                [
                    Target(
                        f"increase({sel('pixcrawler_database_errors_total')}[$__rate_interval])",
                        "{{instance}} {{reason}}",
                    )
                ],
                "Failed collections from PostgreSQL by cause.",
            ),
        ],
    )


def _quantiles(metric: str, legend: str) -> list[Target]:
    """The median and 90th percentile per task from a histogram of the celery collector."""
    bucket = sel(f"{metric}_bucket")
    return [
        Target(
            f"histogram_quantile({q}, rate({bucket}[$__rate_interval]))",
            f"{{{{instance}}}} {{{{task}}}} {legend} p{round(q * 100)}",
        )
        for q in (0.5, 0.9)
    ]


def pipeline_row(cfg: Config) -> Row:
    """The celery collector: the broker's queues, the workers, the tasks, Redis, and the
    database against Celery."""
    return Row(
        "Work pipeline",
        [
            Panel(
                "Queue depth",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_celery_queue_messages"), "{{instance}} {{queue}}")],
                "Messages waiting in each watched queue (celery.queues), priority sub-queues "
                "summed.",
                width=8,
            ),
            Panel(
                "Unacknowledged messages",
                "timeseries",
                "none",
                [Target(sel("pixcrawler_celery_unacked_messages"))],
                "Messages taken by a worker and not acknowledged: running chunks (acks late), "
                "prefetched ones, and those of a worker that died.",
                width=8,
            ),
            Panel(
                "Oldest unacknowledged against the visibility timeout",
                "timeseries",
                "s",
                [
                    Target(sel("pixcrawler_celery_unacked_oldest_age_seconds"), "{{instance}} age"),
                    Target(
                        sel("pixcrawler_celery_visibility_timeout_seconds"),
                        "{{instance}} visibility timeout",
                    ),
                ],
                "Past the visibility timeout a message is delivered again; "
                "PixCrawlerCeleryUnackedPastVisibilityTimeout fires when it stays there.",
                width=8,
            ),
            Panel(
                "Workers online and tasks running",
                "timeseries",
                "none",
                [
                    Target(sel("pixcrawler_celery_workers_online"), "{{instance}} workers online"),
                    Target(sel("pixcrawler_celery_tasks_running"), "{{instance}} tasks running"),
                ],
                "Workers with a heartbeat within two intervals, and the tasks their last "
                "heartbeats say they run.",
                width=8,
            ),
            Panel(
                "Heartbeat age per worker",
                "timeseries",
                "s",
                [
                    Target(
                        "time() - "
                        + sel("pixcrawler_celery_worker_last_heartbeat_timestamp_seconds"),
                        "{{instance}} {{worker}}",
                    )
                ],
                "Seconds since each worker's last heartbeat; past two intervals it is offline.",
                width=8,
            ),
            Panel(
                "Broker and event stream",
                "state-timeline",
                "none",
                [
                    Target(sel("pixcrawler_redis_up"), "{{instance}} broker"),
                    Target(sel("pixcrawler_celery_events_up"), "{{instance}} events"),
                ],
                "Whether the broker's Redis answers and the workers' events are followed.",
                width=8,
                mappings=UP_MAPPINGS,
                thresholds=[(RED, None), (GREEN, 1)],
            ),
            Panel(
                "Task outcomes",
                "timeseries",
                "ops",
                [
                    Target(
                        f"rate({sel('pixcrawler_celery_tasks_total')}[$__rate_interval])",
                        "{{instance}} {{task}} {{outcome}}",
                    )
                ],
                "Task runs ending per second by outcome (celery.task_events).",
                width=8,
            ),
            Panel(
                "Task run time",
                "timeseries",
                "s",
                _quantiles("pixcrawler_celery_task_runtime_seconds", "run time"),
                "Median and 90th percentile of the run time of tasks that ended "
                "(celery.task_events).",
                width=8,
            ),
            Panel(
                "Time waiting in the queue",
                "timeseries",
                "s",
                _quantiles("pixcrawler_celery_task_queue_wait_seconds", "wait"),
                "From a task being sent to it starting; PixCrawlerCeleryQueueWaitHigh fires on "
                "the 90th percentile at the line.",
                width=8,
                thresholds=[(GREEN, None), (ORANGE, cfg.rules.queue_wait_seconds)],
                show_thresholds=True,
            ),
            Panel(
                "Database against Celery",
                "timeseries",
                "none",
                [
                    Target(
                        sel("pixcrawler_celery_reconcile_active_chunks"),
                        "{{instance}} active in the database",
                    ),
                    Target(
                        sel("pixcrawler_celery_chunks_unaccounted"),
                        "{{instance}} not held by a live worker",
                    ),
                    Target(
                        sel("pixcrawler_celery_chunks_stuck"),
                        "{{instance}} task ended, still active",
                    ),
                ],
                "The database's active chunks, those no queue or online worker holds, and "
                "those whose task already ended: PixCrawlerChunksUnaccounted fires when either "
                "stays above 0 longer than a chunk can take.",
                width=8,
            ),
            Panel(
                "Redis memory against maxmemory",
                "timeseries",
                "bytes",
                [
                    Target(sel("pixcrawler_redis_memory_used_bytes"), "{{instance}} used"),
                    Target(sel("pixcrawler_redis_memory_max_bytes"), "{{instance}} maxmemory"),
                ],
                "Memory the broker's Redis has allocated against its maxmemory (no line: no "
                "limit).",
                width=8,
            ),
            Panel(
                "Redis evicted keys",
                "timeseries",
                "none",
                [
                    Target(
                        f"increase({sel('pixcrawler_redis_evicted_keys_total')}[$__rate_interval])"
                    )
                ],
                "Keys evicted to stay under maxmemory: on a broker, lost messages or results.",
                width=8,
            ),
        ],
    )


def azure_row(cfg: Config) -> Row:
    """Azure Monitor's platform metrics and the exporter's requests."""
    return Row(
        "Azure",
        [
            Panel(
                "Azure Monitor metrics",
                "timeseries",
                "short",
                [
                    Target(
                        sel("pixcrawler_azure_metric"),
                        "{{instance}} {{resource}} {{azure_instance}} {{metric}} "
                        "{{aggregation}} ({{unit}})",
                    )
                ],
                "Platform metrics as Azure Monitor reports them, App Service metrics per "
                "instance; the unit label says each one's unit.",
                width=WIDTH,
            ),
            *azure_instance_panels(cfg),
            Panel(
                "Azure metric age",
                "timeseries",
                "s",
                [
                    Target(
                        sel("pixcrawler_azure_metric_age_seconds"),
                        "{{resource}} {{azure_instance}} {{metric}}",
                    )
                ],
                "How old each metric's latest value is; platform metrics arrive minutes late.",
                width=8,
            ),
            Panel(
                "Time since the last Azure success",
                "timeseries",
                "s",
                [Target(f"time() - {sel('pixcrawler_azure_last_success_timestamp_seconds')}")],
                "PixCrawlerAzureMetricsStale fires when this stays high.",
                width=8,
            ),
            Panel(
                "Azure Monitor requests",
                "timeseries",
                "reqps",
                [
                    Target(
                        f"rate({sel('pixcrawler_azure_requests_total')}[$__rate_interval])",
                        "{{instance}} {{outcome}}",
                    )
                ],
                "Requests to Azure Monitor per second by outcome.",
                width=8,
            ),
            azure_presets_panel(),
            Panel(
                "Azure reachable",
                "state-timeline",
                "none",
                [Target(sel("pixcrawler_azure_up"))],
                "Whether the last refresh from Azure Monitor worked.",
                width=WIDTH,
                mappings=UP_MAPPINGS,
                thresholds=[(RED, None), (GREEN, 1)],
            ),
        ],
    )


_PLAN_PERCENTAGES: tuple[tuple[str, str, Resource], ...] = (
    ("memory", "MemoryPercentage", "memory"),
    ("CPU", "CpuPercentage", "cpu"),
)


def azure_instance_panels(cfg: Config) -> list[Panel]:
    """The App Service plan's memory and CPU on each of its instances, against the thresholds:
    the memory and CPU statuses (and their alerts) follow the busiest one."""
    return [
        ratio_series(
            cfg,
            f"Plan {what} per instance",
            f"{sel('pixcrawler_azure_metric', metric=name)} / 100",
            resource,
            f"The App Service plan's {name} on each instance (Azure Monitor's Instance "
            f"dimension). In mode azure the {what} status is the busiest instance's, not "
            "their average.",
            "{{instance}} {{resource}} {{azure_instance}}",
        )
        for what, name, resource in _PLAN_PERCENTAGES
    ]


def azure_presets_panel() -> Panel:
    """Seed 002's App Insights telemetry, from the log presets that are turned on."""
    return Panel(
        "App Insights telemetry (last hour)",
        "timeseries",
        "short",
        [Target(sel(p.metric), f"{{{{instance}}}} {p.name}") for p in presets.LOG_PRESETS],
        "Seed 002's jobs completed, images processed, exceptions and failed Azure Blob calls "
        "in the last hour, counted by ItemCount so that sampling does not hide nine in ten; "
        "only the presets azure.log_presets turns on have data.",
        width=WIDTH,
    )


def health_row(cfg: Config) -> Row:
    """The exporter itself: collectors and Prometheus's scrapes."""
    return Row(
        "Exporter health",
        [
            Panel(
                "Collector success",
                "state-timeline",
                "none",
                [
                    Target(
                        sel("pixcrawler_exporter_collector_success"), "{{instance}} {{collector}}"
                    )
                ],
                "Whether each collector read its source in the scrape.",
                mappings=UP_MAPPINGS,
                thresholds=[(RED, None), (GREEN, 1)],
            ),
            Panel(
                "Collector duration",
                "timeseries",
                "s",
                [
                    Target(
                        sel("pixcrawler_exporter_collector_duration_seconds"),
                        "{{instance}} {{collector}}",
                    )
                ],
                "How long each collector took to read its source.",
            ),
            Panel(
                "Scrape target up",
                "state-timeline",
                "none",
                [Target(sel("up"))],
                "Prometheus's own record of each scrape of the exporter.",
                width=8,
                mappings=UP_MAPPINGS,
                thresholds=[(RED, None), (GREEN, 1)],
            ),
            Panel(
                "Scrape duration",
                "timeseries",
                "s",
                [Target(sel("scrape_duration_seconds"))],
                "How long Prometheus's scrapes of the exporter take; keep it below the scrape "
                "timeout.",
                width=8,
            ),
            Panel(
                "Exporter version",
                "stat",
                "none",
                [Target(sel("pixcrawler_exporter_build_info"), "{{instance}} {{version}}")],
                "The build each instance runs.",
                width=8,
                options={"textMode": "name", "colorMode": "none"},
            ),
        ],
    )


def rows(cfg: Config) -> list[Row]:
    return [
        overview_row(cfg),
        capacity_row(cfg),
        container_row(cfg),
        temp_storage_row(cfg),
        database_row(cfg),
        pipeline_row(cfg),
        azure_row(cfg),
        health_row(cfg),
    ]


def _thresholds(steps_: Iterable[tuple[str, float | None]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps_]}


def _panel(p: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": p.unit,
        "thresholds": _thresholds(p.thresholds),
        "mappings": list(p.mappings),
    }
    options: dict[str, Any]
    if p.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    elif p.kind == "state-timeline":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "showValue": "auto",
            "mergeValues": True,
            "alignValue": "left",
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single", "sort": "none"},
        }
    else:
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "dashed" if p.show_thresholds else "off"},
        }
        options = {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    options.update(p.options)
    return {
        "id": panel_id,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": list(p.overrides)},
        "options": options,
        "targets": [
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + i),
                "expr": t.expr,
                "legendFormat": t.legend,
                "range": True,
                "instant": False,
            }
            for i, t in enumerate(p.targets)
        ],
    }


def _variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change: instances come and go
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "hide": 0,
        "regex": "",
    }


def _layout(rows_: Iterable[Row]) -> list[dict[str, Any]]:
    """Each row's header across the grid, then its panels left to right, wrapping at WIDTH."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows_:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        line_height = 0
        for p in row.panels:
            if x + p.width > WIDTH:
                x, y = 0, y + line_height
                line_height = 0
            panels.append(_panel(p, len(panels) + 1, x, y))
            x += p.width
            line_height = max(line_height, p.height)
        y += line_height
    return panels


def _matchers(rules_cfg: Rules) -> tuple[list[str], list[str]]:
    """The selector's matchers other than on ``job`` (the job is picked by its variable), and
    the group label's variable matcher when there is one."""
    others = [m for name, m in split_matchers(rules_cfg.selector) if name != "job"]
    label = rules_cfg.group_label
    return others, [f'{label}=~"${label}"'] if label else []


def _scope(rules_cfg: Rules) -> str:
    others, group = _matchers(rules_cfg)
    return ", ".join(['job="$job"', *others, *group, 'instance=~"$instance"'])


def _scoped(node: Any, scope: str) -> Any:
    if isinstance(node, dict):
        return {k: _scoped(v, scope) for k, v in node.items()}
    if isinstance(node, list):
        return [_scoped(v, scope) for v in node]
    return node.replace(SCOPE, scope) if isinstance(node, str) else node


def _variables(rules_cfg: Rules) -> list[dict[str, Any]]:
    others, group = _matchers(rules_cfg)

    def values(label: str, *matchers: str) -> str:
        inside = ", ".join(matchers)
        return f"label_values(pixcrawler_exporter_build_info{{{inside}}}, {label})".replace(
            "{}", ""
        )

    label = rules_cfg.group_label
    variables = [
        _variable("job", "Job", values("job", *others, *group), multi=False),
        _variable(
            "instance", "Instance", values("instance", 'job="$job"', *others, *group), multi=True
        ),
    ]
    if label:
        title = label.replace("_", " ").capitalize()
        variables.insert(0, _variable(label, title, values(label, *others), multi=True))
    return variables


def dashboard(cfg: Config | None = None) -> dict[str, Any]:
    """The dashboard's JSON model, coloured by ``cfg``'s thresholds (the defaults if None) and
    scoped by its ``rules`` selector and group label."""
    cfg = cfg or Config()
    panels = _scoped(_layout(rows(cfg)), _scope(cfg.rules))
    return {
        "id": None,
        "uid": UID,
        "title": TITLE,
        "description": "pixcrawler-exporter: container-correct resources against their limits, "
        "temp storage, chunk capacity, the crawl database, the work pipeline and Azure Monitor.",
        "tags": ["pixcrawler", "prometheus"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "links": [
            {
                "title": "Runbook",
                "type": "link",
                "url": rules.RUNBOOK_URL,
                "targetBlank": True,
                "icon": "doc",
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "options": [],
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                *_variables(cfg.rules),
            ]
        },
        "panels": panels,
    }


def render(cfg: Config | None = None) -> str:
    return json.dumps(dashboard(cfg), indent=2) + "\n"


def main(argv: Sequence[str]) -> int:
    """``[--config FILE] [OUTPUT]``: the configuration's thresholds, selector and group label
    (environment and ``.env`` included, as ``pixcrawler-exporter rules`` reads them)."""
    p = argparse.ArgumentParser(prog="python3 -m grafana.dashboard")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("output", nargs="?", default=str(OUTPUT))
    args = p.parse_args(argv)
    cfg = load(os.environ, {}, args.config).config if args.config else None
    Path(args.output).write_text(render(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
