"""The landing page: statuses, capacity and collectors' health in one self-contained document,
loaded from a real exporter by headless Chromium, with its screenshot kept for a person to look
at in test-artifacts/ (ignored by git)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, Exporter, need_tool, start_exporter, stop_process

ARTIFACTS = REPO / "test-artifacts"
MIB = 1024 * 1024


@pytest.fixture
def exporter(tmp_path: Path) -> Exporter:
    temp = tmp_path / "crawl-tmp"
    temp.mkdir()
    (temp / "big.jpg").write_bytes(b"x" * 2 * MIB)  # twice the quota below: temp storage ALERT
    env = {
        "PIXCRAWLER_TEMP_DIRS": str(temp),
        "PIXCRAWLER_MAX_TEMP_STORAGE_MB": "1",
        "PIXCRAWLER_DISK_PATHS": str(tmp_path),
    }
    return start_exporter(tmp_path, (), env)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            need_tool("chromium"),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--window-size=1280,720",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_page_is_self_contained_and_says_what_matters(exporter: Exporter) -> None:
    try:
        status, headers, body = exporter.get("/")
    finally:
        stop_process(exporter.proc)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    # Nothing fetched from anywhere: no script at all, no URL with a host, no @import.
    assert "<script" not in page.lower() and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    for section in ("capacity", "statuses", "collectors"):
        assert f'id="{section}"' in page
    statuses = page.split('id="statuses"', 1)[1].split("</section>", 1)[0]
    assert re.search(r"temp storage</td><td>200\.0%</td><td><span[^>]*>ALERT<", statuses)
    for link in ("/metrics", "/status", "/health"):
        assert f'href="{link}"' in page


def test_chromium_renders_the_page_and_a_screenshot_is_kept(
    exporter: Exporter, tmp_path: Path
) -> None:
    try:
        dom = chromium(tmp_path, "--dump-dom", exporter.url + "/")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "landing-page.png"
        shot.unlink(missing_ok=True)
        taken = chromium(tmp_path, f"--screenshot={shot}", exporter.url + "/")
    finally:
        stop_process(exporter.proc)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The DOM as Chromium built it from the exporter's answer, not the bytes we sent.
    assert "<h2>Can a chunk start?</h2>" in dom.stdout
    assert re.search(r"<td>temp_storage</td>.*?>OK<", dom.stdout, re.S)
    assert taken.returncode == 0, taken.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 720)
    assert len(png) > 20_000  # a blank page compresses to a few kB
