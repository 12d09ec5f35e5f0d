"""The Prometheus rules file (recording and alerting rules), rendered from the configuration.

The thresholds the exporter logs and colours its statuses by are the thresholds Prometheus alerts
on: ``pixcrawler-exporter rules [--config FILE]`` renders this file from the same configuration
(flags aside, with the same precedence: environment, YAML file, ``.env``, defaults). The shipped
``rules/pixcrawler-exporter.rules.yml`` is the render of the defaults; a test fails when it
differs from what this module renders.

Thresholds are rendered into the expressions as constants rather than joined with the exporter's
``pixcrawler_threshold`` gauge: the rule then says by itself when it fires, promtool can test it
without the gauge, and an exporter that is down or misconfigured cannot move it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pixcrawler_exporter import config as config_module
from pixcrawler_exporter.artifacts import mixin, pipeline, watch
from pixcrawler_exporter.artifacts.alerting import (
    FOR,
    INSTANCE,
    PERCENT,
    Alert,
    Group,
    duration,
)
from pixcrawler_exporter.artifacts.alerting import alert as _alert
from pixcrawler_exporter.artifacts.alerting import number as _number
from pixcrawler_exporter.artifacts.alerting import quote as _quote
from pixcrawler_exporter.artifacts.links import RUNBOOK_URL as RUNBOOK_URL
from pixcrawler_exporter.collectors.azure.settings import AzureSettings
from pixcrawler_exporter.config import Config
from pixcrawler_exporter.derive.resources import Resource

DEFAULT_JOB = "pixcrawler"

# Recording rules shared by alerts and the Grafana dashboard (grafana/dashboard.py uses the names),
# each recorded in the group of the alerts that read it.
CPU_USAGE_RATIO = "pixcrawler:cpu_usage:ratio_rate5m"
CPU_THROTTLED = "pixcrawler:cpu_throttled_seconds:rate5m"
FAILED_CHUNKS_10M = "pixcrawler:job_chunks_failed:delta10m"
OOM_KILLS_10M = "pixcrawler:memory_oom_kills:increase10m"
CHUNKS_AVAILABLE_FLEET = "pixcrawler:chunks_available:sum"
CAN_START_FLEET = "pixcrawler:can_start_chunk:sum"
RECORDING_RULES: Mapping[str, str] = {
    # CPU seconds used per second over the cores the cgroup may use: the share of the limit, the
    # figure CFS throttles at (a host's CPU figure says nothing about a container's quota).
    CPU_USAGE_RATIO: "rate(pixcrawler_cpu_usage_seconds_total[5m]) / pixcrawler_cpu_limit_cores",
    CPU_THROTTLED: "rate(pixcrawler_cpu_throttled_seconds_total[5m])",
    OOM_KILLS_10M: "increase(pixcrawler_memory_oom_kills_total[10m])",
    # pixcrawler_job_chunks is a gauge summed over the jobs table, not a counter: increase() would
    # read jobs being deleted as a counter reset and count their failed chunks again as new ones.
    # The difference to ten minutes ago is exact and goes negative instead.
    FAILED_CHUNKS_10M: (
        'pixcrawler_job_chunks{state="failed"} - pixcrawler_job_chunks{state="failed"} offset 10m'
    ),
    # The fleet's capacity answer, so a scheduler asks Prometheus one question: how many chunks
    # can start across all workers, and on how many workers one can start now. Summed by
    # rules.group_label (a cluster) when it is set.
    CHUNKS_AVAILABLE_FLEET: "sum(pixcrawler_chunks_available)",
    CAN_START_FLEET: "sum(pixcrawler_can_start_chunk)",
}
FLEET_RULES = (CHUNKS_AVAILABLE_FLEET, CAN_START_FLEET)

# Thresholds that are not exporter settings (the exporter has no status for them).
FAILED_CHUNKS_PER_10M = 5
# Azure Monitor publishes platform metrics minutes late, so staleness is not judged in less time.
AZURE_MIN_STALE_SECONDS = 600


def groups(cfg: Config) -> list[Group]:
    """Every alert, grouped by what it watches, with thresholds and durations at full scale."""
    return [
        _exporter_group(),
        _resources_group(cfg),
        _capacity_group(cfg),
        _database_group(),
        _azure_group(cfg),
        *watch.groups(cfg),
        *pipeline.groups(cfg),
        Group("pixcrawler-exporter.fleet", [], records=tuple(FLEET_RULES)),
    ]


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
            _alert(
                f"PixCrawler{name}{suffix}",
                f"{metric} >= {_number(threshold)}",
                for_s,
                severity,
                f"{what} on {INSTANCE} is {value}",
                description.replace("<severity>", severity).replace("<threshold>", shown),
                {"resource": resource},
            )
        )
    return out


def _exporter_group() -> Group:
    """The exporter itself: down, a collector failing, or a configuration refused."""
    up = "up"  # scoped by the selector like every other series
    return Group(
        "pixcrawler-exporter.exporter",
        [
            _alert(
                "PixCrawlerExporterDown",
                # absent(): a job gone from service discovery would otherwise leave every
                # PixCrawler alert silent instead of firing.
                f"{up} == 0 or absent({up})",
                120,
                "critical",
                "PixCrawler exporter {{ with $labels.instance }}{{ . }}{{ else }}"
                "of job {{ $labels.job }}{{ end }} is down",
                "{{ if $labels.instance }}Prometheus could not scrape "
                f"{INSTANCE} (job {{{{ $labels.job }}}}) for {FOR}: up is {{{{ $value }}}}."
                "{{ else }}Prometheus has had no target of job {{ $labels.job }} for "
                f"{FOR}.{{{{ end }}}} No other PixCrawler alert can fire without its metrics.",
            ),
            _alert(
                "PixCrawlerCollectorFailing",
                # The database collector fails whenever the database does, and
                # PixCrawlerDatabaseDown says so with the cause beside it; the celery collector
                # whenever its broker does, and PixCrawlerRedisDown says so.
                'pixcrawler_exporter_collector_success{collector!~"database|celery"} == 0',
                300,
                "warning",
                f"Collector {{{{ $labels.collector }}}} on {INSTANCE} is failing",
                f"The {{{{ $labels.collector }}}} collector on {INSTANCE} failed every scrape "
                f"for {FOR} (success {{{{ $value }}}}): its metrics are missing, so alerts on "
                "them cannot fire.",
            ),
            _alert(
                "PixCrawlerExporterConfigReloadFailed",
                "pixcrawler_exporter_config_last_reload_successful == 0",
                300,
                "warning",
                f"The exporter on {INSTANCE} refused its new configuration",
                f"The last configuration reload of {INSTANCE} failed and has not succeeded for "
                f"{FOR} (successful {{{{ $value }}}}): it still runs the previous configuration, "
                "and the next restart will fail on the new one.",
            ),
        ],
    )


def _resources_group(cfg: Config) -> Group:
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
            _alert(
                "PixCrawlerCPUThrottlingHigh",
                f"{CPU_THROTTLED} > {_number(throttled)}",
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
            _alert(
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


def _capacity_group(cfg: Config) -> Group:
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
            _alert(
                "PixCrawlerCapacityExhausted",
                "pixcrawler_can_start_chunk == 0",
                900,
                "warning",
                f"No chunk can start on {INSTANCE}",
                f"{INSTANCE} has had no free chunk slot, or no temp storage room for one more "
                f"chunk, for {FOR} (can_start_chunk {{{{ $value }}}}): new chunks wait.",
            ),
            _alert(
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
            _alert(
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


def _database_group() -> Group:
    """The crawl database, unreachable."""
    return Group(
        "pixcrawler-exporter.database",
        [
            _alert(
                "PixCrawlerDatabaseDown",
                # The second arm is a database collector that failed without any reading: an
                # exporter from before database_up was always present left it out when the
                # database hung, and nothing else would fire.
                "pixcrawler_database_up == 0 or (min without (collector) "
                '(pixcrawler_exporter_collector_success{collector="database"}) == 0 '
                "unless pixcrawler_database_up)",
                300,
                "critical",
                f"{INSTANCE} cannot read the PixCrawler database",
                f"Every collection from PostgreSQL by {INSTANCE} failed or went unanswered for "
                f"{FOR} (database_up {{{{ $value }}}}): active chunks are unknown, and so is "
                "capacity. pixcrawler_database_errors_total says why.",
            ),
        ],
    )


def _azure_group(cfg: Config) -> Group:
    """Azure Monitor metrics that stopped arriving."""
    stale_after = max(
        AZURE_MIN_STALE_SECONDS, math.ceil(3 * cfg.source(AzureSettings).refresh_interval_seconds)
    )
    return Group(
        "pixcrawler-exporter.azure",
        [
            _alert(
                "PixCrawlerAzureMetricsStale",
                # The second arm is an exporter that never read Azure Monitor and so has no
                # timestamp yet: +Inf is the honest age of metrics never read.
                f"time() - pixcrawler_azure_last_success_timestamp_seconds > {stale_after}"
                " or (pixcrawler_azure_up == 0 unless on (job, instance)"
                " pixcrawler_azure_last_success_timestamp_seconds) + Inf",
                300,
                "warning",
                f"Azure Monitor metrics on {INSTANCE} are stale",
                f"The last successful read of Azure Monitor by {INSTANCE} is "
                "{{ $value | humanizeDuration }} old (+Inf: none since it started), more than "
                f"{duration(stale_after)}, for {FOR}.",
            ),
        ],
    )


def usage(resource: str) -> str:
    """The figure the exporter evaluates the resource's status from, in every mode: alerts on it
    cannot disagree with /status or the RESOURCE log lines."""
    return f"pixcrawler_resource_usage_ratio{{resource={_quote(resource)}}}"


def _recording(name: str, cfg: Config) -> str:
    expr = RECORDING_RULES[name]
    label = cfg.rules.group_label
    if name in FLEET_RULES and label:
        expr = expr.replace("sum(", f"sum by ({label}) (", 1)
    return expr


def alerts(cfg: Config) -> list[Alert]:
    return [a for g in groups(cfg) for a in g.alerts]


def _scaled(seconds: int, for_scale: float) -> int:
    if seconds == 0:
        return 0
    return max(1, round(seconds * for_scale))


def document(
    cfg: Config,
    *,
    job: str | None = None,
    runbook_url: str = RUNBOOK_URL,
    for_scale: float = 1.0,
) -> dict[str, Any]:
    """The rules file as data. ``for_scale`` multiplies every ``for:`` and nothing else (not the
    windows of rate() and the like, nor the durations the descriptions quote): the end-to-end
    test renders with a small one so that alerts fire in seconds. ``job`` is a shorthand for
    the selector ``job="JOB"``."""
    if not for_scale > 0:
        raise ValueError("for_scale must be above 0")
    mixin.check_overrides(cfg.rules.alerts, {a.name for a in alerts(cfg)})
    selector = f"job={_quote(job)}" if job is not None else cfg.rules.selector
    out: list[dict[str, Any]] = []
    for group in groups(cfg):
        rules: list[dict[str, Any]] = [
            {"record": name, "expr": mixin.scoped(_recording(name, cfg), selector)}
            for name in group.records
        ]
        for a in mixin.overridden(group.alerts, cfg.rules.alerts or {}):
            rule: dict[str, Any] = {"alert": a.name, "expr": mixin.scoped(a.expr, selector)}
            if a.for_seconds:
                rule["for"] = duration(_scaled(a.for_seconds, for_scale))
            rule["labels"] = {"severity": a.severity, **a.labels}
            rule["annotations"] = {
                "summary": a.summary,
                "description": a.description,
                "runbook_url": f"{runbook_url}#{a.anchor}",
            }
            rules.append(rule)
        out.append({"name": group.name, "rules": rules})
    return {"groups": out}


HEADER = """\
# Prometheus recording and alerting rules for pixcrawler-exporter.
# Generated by `pixcrawler-exporter rules` from the configured thresholds: regenerate rather than
# edit, so that Prometheus alerts at the thresholds the exporter reports.
"""


def render(
    cfg: Config,
    *,
    job: str | None = None,
    runbook_url: str = RUNBOOK_URL,
    for_scale: float = 1.0,
) -> str:
    """The rules file as YAML text, ready for Prometheus's ``rule_files``."""
    doc = document(cfg, job=job, runbook_url=runbook_url, for_scale=for_scale)
    body = yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pixcrawler-exporter rules",
        description="Print the Prometheus rules file (recording and alerting rules) rendered "
        "from the configured thresholds.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML configuration file.")
    p.add_argument(
        "--job",
        help="Prometheus job name scraping the exporter: a shorthand for the selector "
        f'job="JOB" (default: rules.selector, itself job="{DEFAULT_JOB}" by default).',
    )
    p.add_argument(
        "--runbook-url",
        default=RUNBOOK_URL,
        help="Base URL of the runbook the alerts link to (default: the project's docs/runbook.md).",
    )
    return p


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    args = parser().parse_args(argv)
    try:
        loaded = config_module.load(environ, {}, args.config)
    except config_module.ConfigError as exc:
        print(f"pixcrawler-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        text = render(loaded.config, job=args.job, runbook_url=args.runbook_url)
    except config_module.ConfigError as exc:
        print(f"pixcrawler-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
