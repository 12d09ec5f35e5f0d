"""Log a state once when it changes, not on every scrape, scan or refresh that finds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
S = TypeVar("S")


@dataclass(frozen=True)
class Change(Generic[S]):
    before: S
    now: S


class Changes(Generic[K, S]):
    """The last state seen per key (a collector, a path, a resource).

    :meth:`update` records a state and hands back the change when there is one, so the caller
    logs the transition in its own words, with its own level and ``extra``. A key never seen
    before starts at ``initial``. Not locked: callers update from one thread at a time.
    """

    def __init__(self, initial: S) -> None:
        self.initial = initial
        self._states: dict[K, S] = {}

    def update(self, key: K, state: S) -> Change[S] | None:
        before = self._states.get(key, self.initial)
        self._states[key] = state
        return Change(before, state) if before != state else None

    def copy(self) -> Changes[K, S]:
        """The same states, for a successor that must not log again what this one logged (the
        status tracker of a reloaded configuration)."""
        new: Changes[K, S] = Changes(self.initial)
        new._states = dict(self._states)
        return new
