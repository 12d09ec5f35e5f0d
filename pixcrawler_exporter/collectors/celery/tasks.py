"""Task events turned into counts per task name and outcome, and two histograms.

Only ``task-sent`` and ``task-received`` name the task; the later events of a task carry its id
alone, so names are remembered by id, in a bounded table (the oldest ids go first). Time waiting
in the queue runs from ``task-sent`` (which the producer sends only with
``task_send_sent_event=True``) to ``task-started``; both times come from the hosts' own clocks.
Run time is the worker's own ``runtime`` field of ``task-succeeded``, else the time since
``task-started``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pixcrawler_exporter.collectors.celery.reading import Histogram, TaskCount, TaskFigures

OUTCOMES = {
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}
# A chunk of 500 images takes minutes; short helper tasks take milliseconds.
RUNTIME_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600)
OTHER = "other"  # a task name not on the allowlist, or past the first ones seen
UNKNOWN = "unknown"  # a task first heard of after it was sent and received
MAX_NAMES_SEEN = 50
MAX_TASKS_TRACKED = 10_000


@dataclass
class _Histogram:
    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def frozen(self) -> Histogram:
        running, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((float(bound), running))
        return Histogram(tuple(buckets), self.total)


@dataclass
class _Task:
    name: str
    sent: float | None = None
    started: float | None = None


class TaskBook:
    """Not locked: the listener thread writes, and :meth:`figures` is called under its lock."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = frozenset(allowed)
        self._seen: set[str] = set()
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._counts: dict[tuple[str, str], int] = {}
        # Every name heard of gets every outcome from 0: rate() and increase() count nothing for
        # a series that first appears at 1, so a task's first failure would otherwise be lost.
        self._names: set[str] = set()
        self._runtime: dict[str, _Histogram] = {}
        self._wait: dict[str, _Histogram] = {}
        # Every scrape asks for the figures and few events change them: they are made once per
        # change (the scrape's families are then kept too, as equal to the last ones).
        self._figures: TaskFigures | None = None

    def heard(self, event: Mapping[str, object]) -> None:
        kind, uuid = event.get("type"), event.get("uuid")
        if not isinstance(kind, str) or not isinstance(uuid, str):
            return
        stamp = _number(event.get("timestamp"))
        task = self._task(uuid, event.get("name"))
        if task.name not in self._names:
            self._names.add(task.name)
            self._figures = None
        if kind == "task-sent":
            task.sent = stamp
        elif kind == "task-started":
            task.started = stamp
            if stamp is not None and task.sent is not None:
                self._observe(self._wait, WAIT_BUCKETS, task.name, max(0.0, stamp - task.sent))
        elif (outcome := OUTCOMES.get(kind)) is not None:
            key = (task.name, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._figures = None
            if outcome == "succeeded" or outcome == "failed":
                runtime = _number(event.get("runtime"))
                if runtime is None and stamp is not None and task.started is not None:
                    runtime = max(0.0, stamp - task.started)
                if runtime is not None:
                    self._observe(self._runtime, RUNTIME_BUCKETS, task.name, runtime)
            if outcome != "retried":  # a retried task runs again under the same id
                self._tasks.pop(uuid, None)

    def figures(self) -> TaskFigures:
        if self._figures is not None:
            return self._figures
        every = {(t, o): 0 for t in self._names for o in OUTCOMES.values()} | self._counts
        counts = tuple(TaskCount(t, o, n) for (t, o), n in sorted(every.items()))
        self._figures = TaskFigures(
            counts,
            {name: h.frozen() for name, h in sorted(self._runtime.items())},
            {name: h.frozen() for name, h in sorted(self._wait.items())},
        )
        return self._figures

    def _task(self, uuid: str, name: object) -> _Task:
        task = self._tasks.get(uuid)
        if task is None:
            task = self._tasks[uuid] = _Task(self._label(name) if name is not None else UNKNOWN)
            if len(self._tasks) > MAX_TASKS_TRACKED:
                self._tasks.popitem(last=False)
        elif task.name == UNKNOWN and name is not None:
            task.name = self._label(name)
        return task

    def _label(self, name: object) -> str:
        """The task's own name where it may have a series, else 'other'."""
        if not isinstance(name, str) or not name:
            return UNKNOWN
        if self.allowed:
            return name if name in self.allowed else OTHER
        if name in self._seen or len(self._seen) < MAX_NAMES_SEEN:
            self._seen.add(name)
            return name
        return OTHER

    def _observe(
        self, book: dict[str, _Histogram], bounds: Sequence[float], name: str, value: float
    ) -> None:
        book.setdefault(name, _Histogram(bounds)).observe(value)
        self._figures = None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
