"""Which process answered: a token the server sends and the health check recomputes.

The token hashes the process's PID and start time (clock ticks since boot, from
``/proc/PID/stat``). A health check that sees the exporter's process in ``/proc`` computes the
same token, so another exporter, or any other server, answering at the probed address is told
apart: its PID or start time differs. It reveals neither, and means nothing outside the host.
"""

from __future__ import annotations

import hashlib
import os

HEADER = "X-Pixcrawler-Exporter-Instance"


def start_ticks(pid: int | str = "self", proc: str = "/proc") -> str:
    """Field 22 of /proc/PID/stat; empty when it cannot be read. Raises nothing."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def token(pid: int, start: str) -> str:
    return hashlib.sha256(f"pixcrawler-exporter {pid} {start}".encode()).hexdigest()[:32]


def own_token() -> str:
    return token(os.getpid(), start_ticks())
