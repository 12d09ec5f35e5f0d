"""heap.trim: what start-up freed in glibc's heap goes back to the system."""

from __future__ import annotations

import platform

from pixcrawler_exporter import heap
from tests.conftest import need


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_blocks_between_live_ones_are_returned() -> None:
    need(platform.libc_ver()[0] == "glibc", "malloc_trim is glibc's")
    # 40 MB of 4 KiB blocks from malloc (above Python's small-object allocator), every 64th
    # kept: the rest is free but below live blocks, where glibc does not give it back itself.
    blocks = [bytes(4000 + i % 7) for i in range(10_000)]
    kept = blocks[::64]
    del blocks
    before = _rss_kb()
    heap.trim()
    assert before - _rss_kb() > 20_000, (before, _rss_kb())
    assert len(kept) == 157
