"""Recording rules shared by the alerts and the Grafana dashboard (grafana/dashboard.py uses the
names), each recorded in the group of the alerts that read it."""

from __future__ import annotations

from collections.abc import Mapping

from pixcrawler_exporter.config import Config

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


def expression(name: str, cfg: Config) -> str:
    """The recording rule's expression; the fleet's sums by ``rules.group_label`` when set."""
    expr = RECORDING_RULES[name]
    label = cfg.rules.group_label
    if name in FLEET_RULES and label:
        expr = expr.replace("sum(", f"sum by ({label}) (", 1)
    return expr
