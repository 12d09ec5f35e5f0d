"""Alerts for the work pipeline (the celery collector): the broker, the workers, the queue, the
database against Celery, and Redis's memory. Durations and thresholds that depend on the crawler
come from ``rules.*``.

Every expression is silent where the collector is off (its series are absent), and the ones on
worker figures are silent while the broker is down: the collector leaves those figures out then,
and PixCrawlerRedisDown speaks instead. Series of one exporter share their labels, so expressions
match on all of them (a cluster label included) and drop only the ones they aggregate away.
"""

from __future__ import annotations

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
from pixcrawler_exporter.config import Config

# The backlog's trend: a least-squares slope over this window, for as long again. A job's chunks
# land at once and then drain, which gives a positive slope for less than one window; only
# arrivals outpacing the workers keep it positive for a whole window after a whole window.
BACKLOG_WINDOW = "30m"
BACKLOG_FOR_SECONDS = 1800
QUEUE_WAIT_WINDOW = "10m"
QUEUE_WAIT_QUANTILE = 0.9  # robust to a few tasks held back by a countdown or an ETA
FAILURE_WINDOW = "15m"
# Below this many ended runs in the window a ratio says little (one failure of one run is 100%).
FAILURE_MIN_RUNS = 10
EVICTION_WINDOW = "5m"


def groups(cfg: Config) -> list[Group]:
    return [_broker(cfg), _work(cfg)]


def _broker(cfg: Config) -> Group:
    """The broker's Redis: down, near its memory limit, evicting; the event stream lost."""
    memory = cfg.rules.redis_memory_ratio
    return Group(
        "pixcrawler-exporter.broker",
        [
            alert(
                "PixCrawlerRedisDown",
                # The second arm is a celery collector that failed without any reading, so
                # without redis_up: nothing else would fire (PixCrawlerCollectorFailing leaves
                # the celery collector to this alert, as the database's to DatabaseDown).
                "pixcrawler_redis_up == 0 or (min without (collector) "
                '(pixcrawler_exporter_collector_success{collector="celery"}) == 0 '
                "unless pixcrawler_redis_up)",
                120,
                "critical",
                f"{INSTANCE} cannot read the Celery broker",
                f"The broker's Redis has not answered {INSTANCE} for {FOR} (redis_up "
                "{{ $value }}): chunks can be neither queued nor taken, and the worker, queue "
                "and task figures are absent, so the pipeline's other alerts cannot fire.",
            ),
            alert(
                "PixCrawlerCeleryEventsDown",
                "pixcrawler_celery_events_up == 0 and pixcrawler_redis_up == 1",
                300,
                "warning",
                f"{INSTANCE} cannot follow the Celery workers' events",
                f"The broker answers {INSTANCE} but its event stream has not been followed for "
                f"{FOR} (events_up {{{{ $value }}}}): workers online, tasks running and task "
                "outcomes are absent, so PixCrawlerCeleryNoWorkers cannot fire.",
            ),
            alert(
                "PixCrawlerRedisMemoryHigh",
                # No maxmemory: the limit's series is absent and the division yields nothing.
                "pixcrawler_redis_memory_used_bytes / pixcrawler_redis_memory_max_bytes "
                f">= {number(memory)}",
                300,
                "warning",
                f"The broker's Redis on {INSTANCE} uses {PERCENT} of its maxmemory",
                f"The broker's Redis read by {INSTANCE} has used {PERCENT} of its maxmemory, at "
                f"least {memory * 100:g}%, for {FOR}: at the limit it refuses new messages "
                "(noeviction) or evicts keys, queued chunks among them.",
            ),
            alert(
                "PixCrawlerRedisEvictingKeys",
                f"increase(pixcrawler_redis_evicted_keys_total[{EVICTION_WINDOW}]) > 0",
                0,
                # A broker that evicts drops queued chunks and results without a trace.
                "critical",
                f"The broker's Redis on {INSTANCE} evicts keys",
                f"The broker's Redis read by {INSTANCE} evicted {{{{ $value | humanize }}}} "
                f"keys in the last {EVICTION_WINDOW} to stay under its maxmemory: queued "
                "chunks, unacknowledged messages or task results may be gone.",
            ),
        ],
    )


def _work(cfg: Config) -> Group:
    """The workers, the queue, the tasks, and the database against Celery."""
    a = cfg.rules
    wait = duration(a.queue_wait_seconds)
    failure = a.task_failure_ratio
    runs = '{outcome!="retried"}'  # a retried task runs again under the same id: not an end
    return Group(
        "pixcrawler-exporter.pipeline",
        [
            alert(
                "PixCrawlerCeleryNoWorkers",
                # redis_up == 1 only says in the rule what the collector already does: worker
                # figures are absent while the broker is down.
                "pixcrawler_celery_workers_online == 0 and pixcrawler_redis_up == 1 and "
                "(sum without (queue) (pixcrawler_celery_queue_messages) > 0 "
                "or pixcrawler_chunks_active > 0)",
                300,
                "critical",
                f"No Celery worker is online for the chunks on {INSTANCE}",
                f"{{{{ $value }}}} Celery workers have been online for {FOR} while chunks wait "
                f"in the queues {INSTANCE} watches or the database counts chunks active: no "
                "chunk moves.",
            ),
            alert(
                "PixCrawlerCeleryBacklogGrowing",
                f"deriv(pixcrawler_celery_queue_messages[{BACKLOG_WINDOW}]) * 3600 > 0 "
                "and pixcrawler_celery_queue_messages > 0 "
                "and ignoring (queue) pixcrawler_celery_workers_online > 0",
                BACKLOG_FOR_SECONDS,
                "warning",
                f"Queue {{{{ $labels.queue }}}} on {INSTANCE} grows faster than the workers "
                "drain it",
                f"Queue {{{{ $labels.queue }}}} read by {INSTANCE} has grown by "
                f"{{{{ $value | humanize }}}} messages an hour over the last {BACKLOG_WINDOW}, "
                f"for {FOR}, with workers online: chunks arrive faster than they are done.",
            ),
            alert(
                "PixCrawlerCeleryQueueWaitHigh",
                # Per series: the buckets of one task name on one exporter.
                f"histogram_quantile({QUEUE_WAIT_QUANTILE}, "
                "rate(pixcrawler_celery_task_queue_wait_seconds_bucket"
                f"[{QUEUE_WAIT_WINDOW}])) >= {a.queue_wait_seconds}",
                900,
                "warning",
                f"{{{{ $labels.task }}}} tasks on {INSTANCE} wait {AGE} in the queue",
                f"One in ten {{{{ $labels.task }}}} tasks that started in the last "
                f"{QUEUE_WAIT_WINDOW}, as {INSTANCE} hears them, had waited {AGE} or more in the "
                f"queue (at least {wait}) for {FOR}: the workers are too few for the work.",
            ),
            alert(
                "PixCrawlerChunksUnaccounted",
                "pixcrawler_celery_chunks_unaccounted > 0 or pixcrawler_celery_chunks_stuck > 0",
                a.chunk_duration_seconds,
                "warning",
                f"{{{{ $value }}}} active chunks on {INSTANCE} are not running in Celery",
                f"The database {INSTANCE} reads has counted {{{{ $value }}}} more active chunks "
                "than Celery holds for a live worker (or chunks whose task already ended) for "
                f"{FOR}, longer than a chunk can take: a worker died mid-chunk or a chunk ended "
                "without its completion callback. They hold capacity and their jobs never "
                "complete.",
            ),
            alert(
                "PixCrawlerCeleryUnackedPastVisibilityTimeout",
                "pixcrawler_celery_unacked_oldest_age_seconds "
                "> pixcrawler_celery_visibility_timeout_seconds",
                300,
                "warning",
                f"A message on {INSTANCE} has been unacknowledged for {AGE}",
                f"The oldest message taken from the broker {INSTANCE} reads has not been "
                f"acknowledged for {AGE}, longer than the visibility timeout, for {FOR}: its "
                "worker died and no live worker gives it back, or a task outlives the timeout "
                "and runs twice.",
            ),
            alert(
                "PixCrawlerCeleryTaskFailures",
                f"sum without (outcome) (rate(pixcrawler_celery_tasks_total"
                f'{{outcome="failed"}}[{FAILURE_WINDOW}])) '
                f"/ sum without (outcome) (rate(pixcrawler_celery_tasks_total{runs}"
                f"[{FAILURE_WINDOW}])) >= {number(failure)} "
                f"and sum without (outcome) (increase(pixcrawler_celery_tasks_total{runs}"
                f"[{FAILURE_WINDOW}])) >= {FAILURE_MIN_RUNS}",
                900,
                "warning",
                f"{PERCENT} of {{{{ $labels.task }}}} tasks on {INSTANCE} fail",
                f"{PERCENT} of the {{{{ $labels.task }}}} runs that ended in the last "
                f"{FAILURE_WINDOW}, as {INSTANCE} hears them, failed (at least "
                f"{failure * 100:g}%), for {FOR}.",
            ),
        ],
    )
