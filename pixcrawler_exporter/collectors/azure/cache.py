"""What the refresher last learnt from Azure, behind one lock: it writes, a scrape copies."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from pixcrawler_exporter.collectors.azure.model import LogQuery
from pixcrawler_exporter.collectors.azure.parse import OUTCOMES
from pixcrawler_exporter.collectors.azure.plan import Batch, Plan
from pixcrawler_exporter.collectors.azure.presets import LogPreset
from pixcrawler_exporter.collectors.azure.reading import AzureReading, AzureValue, LogValue

_QUERY, _PRESET = "query", "preset"


class Cache:
    def __init__(self, plan: Plan, max_age: float) -> None:
        self.max_age = max_age
        self._order = plan.order
        self._queries: Sequence[LogQuery] = plan.queries
        self._presets: Sequence[LogPreset] = plan.presets
        self._lock = threading.Lock()
        # (resource id, metric name), lower-cased -> its value of each instance (one value for
        # a metric not split by instance).
        self._values: dict[tuple[str, str], tuple[AzureValue, ...]] = {}
        # ("query" or "preset", its name) -> (Unix time stored, its rows): a configured query
        # may share a preset's name.
        self._logs: dict[tuple[str, str], tuple[float, tuple[LogValue, ...]]] = {}
        self._up = False
        self._last_success: float | None = None
        self._error: str | None = None
        self._requests = dict.fromkeys(OUTCOMES, 0)
        self._ratelimit: dict[str, float] = {}
        self.refreshes = 0

    def replan(self, plan: Plan) -> None:
        """Resource Manager filled in regions or added a web app's plan: the new order."""
        with self._lock:
            self._order = plan.order
            self._queries = plan.queries
            self._presets = plan.presets

    def reading(self) -> AzureReading:
        """The cache now, without the values older than ``max_age``."""
        now = time.time()
        oldest = now - self.max_age
        with self._lock:
            values = sorted(
                (v for vs in self._values.values() for v in vs if v.fetched >= oldest),
                key=lambda v: (self._order.get(v.resource.lower(), 0), v.metric, v.instance),
            )
            return AzureReading(
                values=tuple(values),
                log_values=self._fresh_logs(_QUERY, [q.name for q in self._queries], oldest),
                preset_values=self._fresh_logs(_PRESET, [p.name for p in self._presets], oldest),
                up=self._up,
                last_success=self._last_success,
                requests=dict(self._requests),
                ratelimit_remaining=dict(self._ratelimit),
                error=self._error,
                time=now,
            )

    def _fresh_logs(self, kind: str, names: Sequence[str], oldest: float) -> tuple[LogValue, ...]:
        """The rows of each named query stored since ``oldest``, in configuration order."""
        return tuple(
            lv
            for name in names
            if (entry := self._logs.get((kind, name))) is not None and entry[0] >= oldest
            for lv in entry[1]
        )

    def count(self, outcome: str) -> None:
        with self._lock:
            self._requests[outcome] += 1

    def note_ratelimit(self, remaining: Mapping[str, float]) -> None:
        if remaining:
            with self._lock:
                self._ratelimit.update(remaining)

    def store_batch(self, batch: Batch, found: Sequence[AzureValue]) -> None:
        """A batch's answer replaces what the batch asked for, whether Azure had a point or not:
        an instance that is gone (recycled, scaled in) goes with it."""
        fetched: dict[tuple[str, str], tuple[AzureValue, ...]] = {}
        for v in found:
            key = (v.resource.lower(), v.metric.lower())
            fetched[key] = (*fetched.get(key, ()), v)
        asked = {n.lower() for n in batch.metric_names}
        with self._lock:
            for res in batch.resources:
                for m in res.metrics:
                    if m.name.lower() not in asked:
                        continue
                    key = (res.id.lower(), m.name.lower())
                    if key in fetched:
                        self._values[key] = fetched[key]
                    else:
                        # No point in the whole lookback window: Azure has nothing to say.
                        self._values.pop(key, None)

    def store_logs(self, query: str, rows: tuple[LogValue, ...]) -> None:
        with self._lock:
            self._logs[(_QUERY, query)] = (time.time(), rows)

    def store_preset(self, preset: str, rows: tuple[LogValue, ...]) -> None:
        with self._lock:
            self._logs[(_PRESET, preset)] = (time.time(), rows)

    def finish(self, error: str | None) -> None:
        """A refresh ended; ``error`` is None when every call succeeded."""
        with self._lock:
            self.refreshes += 1
            self._up = error is None
            self._error = error
            if error is None:
                self._last_success = time.time()

    def fail(self, error: str) -> None:
        """The refresh itself broke (a bug): up 0, without counting it as a refresh."""
        with self._lock:
            self._up = False
            self._error = error
