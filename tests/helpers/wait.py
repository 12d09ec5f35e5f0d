"""Polling for something a real process will do soon."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    what: str, check: Callable[[], Any], timeout: float, detail: Callable[[], str] = lambda: ""
) -> Any:
    """``check()``'s first truthy answer, polled every 0.2 s; AssertionError after ``timeout``
    seconds, with ``detail()`` to say what was going on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s\n{detail()}")
