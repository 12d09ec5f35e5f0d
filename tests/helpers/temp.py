"""Temp trees for the temp-storage tests: image files of a given size, and waiting for a figure."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

IMAGES = ("*.jpg", "*.png")


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
