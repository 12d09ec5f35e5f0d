"""Reloads do not grow the exporter's memory: many reloads of an unchanged configuration, the
exporter's RSS before and after."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Exporter

RELOADS = 200
# Measured on the fix: about 1 MB over the first 200 reloads (the allocator settling, flat
# after a few thousand). Before, the first reload alone imported psycopg for the database
# collector that was off, about 13 MB.
MAX_GROWTH_KB = 6 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def reload(exporter: Exporter) -> int:
    request = urllib.request.Request(exporter.url + "/-/reload", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_many_reloads_of_an_unchanged_config_do_not_grow_memory(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    # No database URL: the database collector is left out, as most of its library should be.
    exporter = exporter_factory(
        "--web.enable-lifecycle",
        env={"PIXCRAWLER_TEMP_DIRS": str(temp), "PIXCRAWLER_DISK_PATHS": str(temp)},
    )
    pid = exporter.proc.pid
    for _ in range(3):
        exporter.scrape()
    before = rss_kb(pid)
    for done in range(RELOADS):
        assert reload(exporter) == 200
        if done % 10 == 0:
            exporter.scrape()
    exporter.scrape()
    grown = rss_kb(pid) - before
    assert grown < MAX_GROWTH_KB, f"RSS grew {grown} kB over {RELOADS} reloads"
    assert "psycopg" not in Path(f"/proc/{pid}/maps").read_text()
    assert exporter.log().count("configuration reloaded") == RELOADS
