"""The celery collector's pure parts: its settings, the worker book and the task book."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pixcrawler_exporter import config
from pixcrawler_exporter.collectors.celery.reading import Histogram, Moment
from pixcrawler_exporter.collectors.celery.settings import CelerySettings, password_of, redact
from pixcrawler_exporter.collectors.celery.tasks import MAX_NAMES_SEEN, OUTCOMES, TaskBook
from pixcrawler_exporter.collectors.celery.workers import WorkerBook
from tests.conftest import test_env as clean_env

ODD = "p @:/%?#'\" é\t"


def load(tmp_path: Path, **env: str) -> CelerySettings:
    return config.load(env, dotenv_path=tmp_path / ".env").config.source(CelerySettings)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://guest@rabbit//", "(amqp:// is not Redis)"),
        ("redis://redis:54x2/0", "its port must be a number from 1 to 65535"),
        ("redis://redis:0/0", "its port must be a number from 1 to 65535"),
        ("redis:///0", "it names no host"),
        ("redis://redis:6379/celery", "the path is the database number, not 'celery'"),
        ("redis.example:6379", "a Redis URL such as redis://:password@redis:6379/0"),
    ],
)
def test_a_broker_url_that_cannot_work_is_refused_at_start(
    tmp_path: Path, url: str, message: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, PIXCRAWLER_CELERY_BROKER_URL=url)
    assert str(err.value).startswith("environment variable PIXCRAWLER_CELERY_BROKER_URL: ")
    assert message in str(err.value)


def test_a_broker_url_is_shown_without_its_password_only(tmp_path: Path) -> None:
    from urllib.parse import quote

    url = f"redis://:{quote(ODD, safe='')}@redis:6379/0"
    assert password_of(url) == ODD
    assert redact(url) == "redis://:<redacted>@redis:6379/0"
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"  # nothing to hide
    assert redact("rediss://app:secret@redis:6380/1") == "rediss://app:<redacted>@redis:6380/1"
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, PIXCRAWLER_CELERY_BROKER_URL=url.replace("6379", "63x9"))
    assert quote(ODD, safe="") not in str(err.value) and ODD not in str(err.value)


def test_the_password_file_fills_the_broker_and_the_default_result_backend(
    tmp_path: Path,
) -> None:
    (tmp_path / "pw").write_text(ODD + "\n")
    env = {
        "PIXCRAWLER_CELERY_BROKER_URL": "redis://redis:6379/0",
        "PIXCRAWLER_CELERY_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    cfg = load(tmp_path, **env)
    assert cfg.broker_url is not None and password_of(cfg.broker_url) == ODD
    assert cfg.backend_url == cfg.broker_url
    with pytest.raises(config.ConfigError, match="already holds a password"):
        load(tmp_path, **{**env, "PIXCRAWLER_CELERY_BROKER_URL": "redis://:x@redis:6379/0"})
    printed = config.render(config.load(env, dotenv_path=tmp_path / ".env"))
    assert ODD.strip() not in printed and "broker_url: <redacted>" in printed


def test_queues_and_task_names_are_lists_in_a_variable(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        PIXCRAWLER_CELERY_QUEUES="chunks, celery,chunks",
        PIXCRAWLER_CELERY_TASK_NAMES="builder.download_google",
    )
    assert cfg.queues == ("chunks", "celery")
    assert cfg.task_names == ("builder.download_google",)
    with pytest.raises(config.ConfigError, match="at least one queue name"):
        load(tmp_path, PIXCRAWLER_CELERY_QUEUES=" , ")


def beat(hostname: str, kind: str = "worker-heartbeat", **fields: object) -> dict[str, object]:
    return {"type": kind, "hostname": hostname, "freq": 2.0, "active": 1, "processed": 3, **fields}


def test_a_worker_is_online_for_two_heartbeat_intervals_as_celery_says() -> None:
    book = WorkerBook(max_workers=10, forget_after=300)
    book.heard(beat("w1@host"), at=Moment(100.0, 1_700_000_100.0))
    assert book.view(103.9)[1:] == (1, 1)
    views, online, running = book.view(104.0)
    assert (online, running) == (0, 0)
    assert views[0].hostname == "w1@host" and not views[0].online
    assert views[0].heard == 1_700_000_100.0  # the wall clock's, as received


def test_a_view_is_kept_until_a_heartbeat_or_the_clock_changes_it() -> None:
    book = WorkerBook(max_workers=10, forget_after=300)
    book.heard(beat("w1@host"), at=Moment(100.0, 100.0))
    first = book.view(100.5)
    assert book.view(103.9) is first  # nothing new: the scrape takes the last view
    assert book.view(104.0)[1] == 0  # its deadline passed: made again, by the rule
    assert book.view(101.0)[1] == 1  # a clock set back is not taken for later
    book.heard(beat("w1@host", active=3), at=Moment(104.5, 104.5))
    assert book.view(104.6)[1:] == (1, 3)
    assert book.view(404.5)[0] == ()  # forgotten on time


def test_a_worker_that_says_goodbye_is_offline_at_once_and_forgotten_later() -> None:
    book = WorkerBook(max_workers=10, forget_after=60)
    book.heard(beat("w1@host"), at=Moment(0.0, 0.0))
    book.heard(beat("w1@host", "worker-offline"), at=Moment(1.0, 1.0))
    assert book.view(1.0)[1] == 0
    assert [v.hostname for v in book.view(60.9)[0]] == ["w1@host"]
    assert book.view(61.0)[0] == ()


def test_ten_thousand_worker_names_keep_the_cap_and_are_still_counted() -> None:
    book = WorkerBook(max_workers=100, forget_after=300)
    for i in range(10_000):
        book.heard(beat(f"pod-{i}@host"), at=Moment(float(i) / 10_000, float(i) / 10_000))
    views, online, running = book.view(1.5)
    assert len(views) == 100
    # The named ones and ten times the cap more are counted online; beyond, only the counter.
    assert online == 1_100 and running == 1_100
    assert book.unnamed_total == 9_900


def test_a_malformed_event_changes_nothing() -> None:
    book = WorkerBook(max_workers=10, forget_after=300)
    for event in ({}, {"hostname": 3}, {"hostname": ""}, {"type": "worker-heartbeat"}):
        book.heard(event, at=Moment(0.0, 0.0))
    assert book.view(0.0) == ((), 0, 0)


def event(kind: str, uuid: str, **fields: object) -> dict[str, object]:
    return {"type": kind, "uuid": uuid, **fields}


def test_task_outcomes_are_counted_by_the_name_learnt_from_sent_or_received() -> None:
    book = TaskBook(())
    book.heard(event("task-sent", "a", name="chunk", timestamp=10.0))
    book.heard(event("task-started", "a", timestamp=12.5))
    book.heard(event("task-retried", "a", timestamp=13.0))
    book.heard(event("task-started", "a", timestamp=14.0))
    book.heard(event("task-succeeded", "a", runtime=3.0, timestamp=17.0))
    book.heard(event("task-received", "b", name="chunk", timestamp=20.0))
    book.heard(event("task-started", "b", timestamp=20.0))
    book.heard(event("task-failed", "b", timestamp=21.5))
    book.heard(event("task-rejected", "c"))  # heard of too late to know its name
    figures = book.figures()
    counted = {(c.task, c.outcome): c.count for c in figures.counts if c.count}
    assert counted == {
        ("chunk", "succeeded"): 1,
        ("chunk", "retried"): 1,
        ("chunk", "failed"): 1,
        ("unknown", "rejected"): 1,
    }
    runtime = figures.runtime["chunk"]
    assert runtime.total == pytest.approx(3.0 + 1.5)
    assert dict(runtime.buckets)[2.5] == 1 and dict(runtime.buckets)[float("inf")] == 2
    # Waiting in the queue runs from task-sent: only task a has one, started twice.
    wait = figures.queue_wait["chunk"]
    assert wait.total == pytest.approx(2.5 + 4.0)
    assert wait.buckets[-1] == (float("inf"), 2)


def test_every_outcome_of_a_task_name_is_counted_from_0_once_the_name_is_heard() -> None:
    """rate() and increase() count nothing for a series that appears already at 1: a task's
    first failure would be lost to the failure-ratio alert without its 0 before it."""
    book = TaskBook(())
    book.heard(event("task-sent", "a", name="chunk", timestamp=10.0))
    assert {(c.task, c.outcome): c.count for c in book.figures().counts} == {
        ("chunk", o): 0 for o in OUTCOMES.values()
    }
    book.heard(event("task-failed", "a", timestamp=11.0))
    counts = {(c.task, c.outcome): c.count for c in book.figures().counts}
    assert counts[("chunk", "failed")] == 1
    assert sum(counts.values()) == 1


def test_task_names_off_the_allowlist_or_past_the_first_ones_are_other() -> None:
    listed = TaskBook(("chunk",))
    listed.heard(event("task-received", "a", name="mail"))
    listed.heard(event("task-succeeded", "a"))
    assert {c.task for c in listed.figures().counts} == {"other"}
    seen = TaskBook(())
    for i in range(MAX_NAMES_SEEN + 5):
        seen.heard(event("task-received", str(i), name=f"task{i}"))
        seen.heard(event("task-succeeded", str(i)))
    names = {c.task for c in seen.figures().counts}
    assert len(names) == MAX_NAMES_SEEN + 1 and "other" in names


def test_histograms_are_cumulative_and_end_with_inf() -> None:
    book = TaskBook(())
    for runtime in (0.05, 0.2, 7.0, 5000.0):
        book.heard(event("task-received", str(runtime), name="t"))
        book.heard(event("task-succeeded", str(runtime), runtime=runtime))
    h: Histogram = book.figures().runtime["t"]
    counts = [n for _, n in h.buckets]
    assert counts == sorted(counts) and counts[-1] == 4
    assert dict(h.buckets)[0.1] == 1 and dict(h.buckets)[3600.0] == 3


def test_a_broker_url_without_the_celery_extra_says_what_to_install(tmp_path: Path) -> None:
    # kombu and redis-py hidden as if the extra were not installed.
    program = (
        "import sys; sys.modules['kombu'] = sys.modules['redis'] = None; "
        "from pixcrawler_exporter.cli import main; sys.exit(main())"
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        env=clean_env({"PIXCRAWLER_CELERY_BROKER_URL": "redis://redis:6379/0"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "pip install 'pixcrawler-exporter[celery]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_configuration_loads_again_once_the_clients_are_imported(tmp_path: Path) -> None:
    """A reload checks the clients are installed after the collector imported them; kombu's
    module in sys.modules has no __spec__, and find_spec() raised ValueError on it, so every
    reload with the collector on was refused."""
    import kombu.connection  # what building the collector imports

    assert kombu.connection
    url = "redis://redis:6379/0"
    assert load(tmp_path, PIXCRAWLER_CELERY_BROKER_URL=url).broker_url == url
