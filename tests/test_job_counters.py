"""Seed 003's "job never completes: chunk counters out of sync", on the real parts (issue 19,
item 4).

The miniature PixCrawler (tests/minicrawler) runs its chunks on real Celery workers and keeps
seed 003's counters in a real ``crawl_jobs`` table; the exporter reads that table with its
default preset and is scraped over HTTP. A worker's pool is killed mid-chunk (as the OOM killer
does), so the job's row keeps counting the chunks active; a clean-up then frees their slots by
lowering ``active_chunks`` without counting them ended, which is how the counters of a real job
go out of sync; seed 003's reconcile puts them right.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import Exporter, sample
from tests.helpers.celery_workers import MiniCrawlerFactory
from tests.helpers.wait import wait_until

if TYPE_CHECKING:
    from tests.pg import PostgresServer

pytest_plugins = ["tests.helpers.celery_workers"]


def figures(exp: Exporter) -> tuple[float | None, ...]:
    """Active chunks, running jobs out of sync, running jobs stalled: one scrape over HTTP."""
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_database_up") == 1
    return (
        sample(samples, "pixcrawler_chunks_active"),
        sample(samples, "pixcrawler_jobs_counters_out_of_sync"),
        sample(samples, "pixcrawler_jobs_stalled"),
    )


def test_a_job_whose_counters_go_out_of_sync_is_counted_until_reconciled(
    crawl_jobs: PostgresServer,
    minicrawler_factory: MiniCrawlerFactory,
    exporter_factory: Callable[..., Exporter],
    tmp_path: Path,
) -> None:
    crawler = minicrawler_factory(database=crawl_jobs)
    exp = exporter_factory(
        env={"PIXCRAWLER_DB_URL": crawl_jobs.url, "PIXCRAWLER_TEMP_DIRS": str(tmp_path)}
    )
    (worker,) = crawler.start_workers(1, concurrency=3)
    # Job A: two chunks that run long. Job B: one that ends at once, beside them.
    job, tasks = crawler.start_job(2, chunk_size=1, sleep=120)
    for task in tasks:
        crawler.worker_running(task)
    done, (quick,) = crawler.start_job(1, chunk_size=1)
    wait_until("job B completes", lambda: crawler.read_job(done).status == "completed", 30)
    assert figures(exp) == (2, 0, 0)

    # The pool's children die mid-chunk: Celery records the chunks failed, the row is never
    # told and still counts them active. Its counters add up: only Celery knows (the celery
    # collector's PixCrawlerChunksUnaccounted), and these figures stay 0.
    worker.kill_pool()
    wait_until("both chunks FAILURE", lambda: all(crawler.state(t) == "FAILURE" for t in tasks), 30)
    row = crawler.read_job(job)
    assert (row.status, row.total_chunks, row.active_chunks) == ("running", 2, 2)
    assert figures(exp) == (2, 0, 0)

    # A clean-up frees the two slots (capacity counts active chunks) without counting the
    # chunks ended: 2 chunks left, none active, and 0 + 0 + 0 is not 2.
    crawl_jobs.execute(f"UPDATE crawl_jobs SET active_chunks = 0 WHERE id = {job}")
    assert figures(exp) == (0, 1, 1)

    # Seed 003's reconcile: completed and failed from Celery, active the rest.
    states = [crawler.state(task) for task in tasks]
    completed, failed = states.count("SUCCESS"), states.count("FAILURE")
    crawl_jobs.execute(
        f"UPDATE crawl_jobs SET completed_chunks = {completed}, failed_chunks = {failed}, "
        f"active_chunks = total_chunks - {completed} - {failed} WHERE id = {job}"
    )
    assert (completed, failed) == (0, 2)
    assert figures(exp) == (0, 0, 0)
    assert crawler.state(quick) == "SUCCESS"
