"""A load of Celery tasks, or of their events, sent at a fixed rate: bench/pipeline.py's producer.

    PYTHONPATH=. python bench/celery_load.py tasks  --broker URL --rate 100 --seconds 20
    PYTHONPATH=. python bench/celery_load.py replay --broker URL --rate 500 --seconds 20 \\
        --templates events.json

``tasks`` sends the miniature PixCrawler's chunk task (tests/minicrawler) with no images, so each
one is a few milliseconds of work: the producer's ``task-sent`` event, then the worker's
``task-received``, ``task-started`` and ``task-succeeded``, 4 task events a task.

``replay`` sends no task: it publishes the 4 events of a task as a worker and a producer would,
with Celery's own ``EventDispatcher``: ``task-sent`` one message at a time as the producer does,
the other three from a worker named ``replay@<host>`` in ``task.multi`` batches of up to 24 (the
worker's ``buffer_limit``), flushed at least every 10 ms. ``--templates`` holds the fields of one
real task's events (recorded by bench/pipeline.py from a minicrawler worker); each replayed task
gets a new id and fresh timestamps. It is the same stream, at a rate the machine's workers
could not run the tasks at.

Task ``i`` goes out at ``start + i / rate``; a producer that falls behind catches up as fast as it
can. Prints ``go`` half a second before the first task (the bench reads its counters then),
and one JSON line at the end: tasks sent, seconds taken, the rate achieved, the largest
lateness.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.minicrawler import TASK_NAME, make_app  # noqa: E402

TASK_EVENTS = ("task-sent", "task-received", "task-started", "task-succeeded")
# Fields EventDispatcher.send sets itself.
OWN_FIELDS = {"type", "hostname", "utcoffset", "pid", "clock", "timestamp", "local_received"}
FLUSH_EVERY = 0.01  # seconds: a worker's event loop flushes its buffer about as often
BUFFER_LIMIT = 24  # celery.events.EventDispatcher's default, which workers use
LOOK = 0.5  # seconds between saying "go" and sending the first task


def paced(rate: float, seconds: float, send: Callable[[int], None]) -> dict[str, float]:
    """Call ``send(i)`` for i in 0 .. rate*seconds-1, each at its time; what it achieved."""
    total = round(rate * seconds)
    print("go", flush=True)
    time.sleep(LOOK)  # for the bench's first look, taken before the first task and not after
    began = time.monotonic()
    worst = 0.0
    for i in range(total):
        due = began + i / rate
        late = time.monotonic() - due
        if late < 0:
            time.sleep(-late)
        else:
            worst = max(worst, late)
        send(i)
    took = time.monotonic() - began
    return {"sent": total, "seconds": took, "rate": total / took, "late_max": worst}


def send_tasks(broker: str, rate: float, seconds: float) -> dict[str, float]:
    app = make_app(broker)
    task = app.tasks[TASK_NAME]
    try:
        return paced(rate, seconds, lambda _i: task.apply_async((0, 0, 0)))
    finally:
        app.close()


def template_fields(events: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One task's events by type, less what the dispatcher fills in: the replay's templates."""
    found = {
        str(e["type"]): {k: v for k, v in e.items() if k not in OWN_FIELDS and k[0] != "_"}
        for e in events
        if e.get("type") in TASK_EVENTS
    }
    missing = [t for t in TASK_EVENTS if t not in found]
    if missing:
        raise ValueError(f"no {', '.join(missing)} among the recorded events")
    return found


def replay(
    broker: str, rate: float, seconds: float, templates: Mapping[str, Mapping[str, Any]]
) -> dict[str, float]:
    app = make_app(broker)
    host = socket.gethostname()
    with app.connection_for_write() as conn:
        producer = app.events.Dispatcher(conn, hostname=f"replay-producer@{host}")
        worker = app.events.Dispatcher(
            conn,
            hostname=f"replay@{host}",
            buffer_group=["task"],
            buffer_limit=BUFFER_LIMIT,
        )
        flushed = time.monotonic()

        def send(_i: int) -> None:
            nonlocal flushed
            task_id = str(uuid.uuid4())
            ids = {"uuid": task_id, "root_id": task_id}
            producer.send("task-sent", **{**templates["task-sent"], **ids})
            for kind in TASK_EVENTS[1:]:
                worker.send(kind, **{**templates[kind], **ids})
            if time.monotonic() - flushed >= FLUSH_EVERY:
                worker.flush()
                flushed = time.monotonic()

        try:
            return paced(rate, seconds, send)
        finally:
            worker.flush()
            producer.close()
            worker.close()
            app.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("tasks", "replay"))
    parser.add_argument("--broker", required=True)
    parser.add_argument("--rate", type=float, required=True, help="tasks a second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--templates", type=Path, help="replay: one task's events, JSON")
    args = parser.parse_args(argv)
    if args.what == "tasks":
        done = send_tasks(args.broker, args.rate, args.seconds)
    else:
        if args.templates is None:
            parser.error("replay needs --templates")
        templates = json.loads(args.templates.read_text())
        done = replay(args.broker, args.rate, args.seconds, templates)
    print(json.dumps({**done, "pid": os.getpid()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
