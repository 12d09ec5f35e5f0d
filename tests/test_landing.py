"""The landing page: the figures of /status for a browser, escaped, within the scrape deadline,
and rendered by headless Chromium with its screenshot kept in test-artifacts/ (ignored by git)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from pixcrawler_exporter import __version__, config
from pixcrawler_exporter.app import App
from pixcrawler_exporter.artifacts.links import DASHBOARD_URL, RUNBOOK_URL
from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.collect.contract import Collector, CollectorError, Source
from pixcrawler_exporter.collectors import cgroup
from pixcrawler_exporter.collectors.cpu import CpuReading
from pixcrawler_exporter.collectors.database.reading import DatabaseReading
from pixcrawler_exporter.collectors.disk import DiskReading, DiskUsage
from pixcrawler_exporter.collectors.memory import MemoryReading
from pixcrawler_exporter.collectors.temp_storage.reading import (
    DirectoryUsage,
    TempStorageReading,
)
from pixcrawler_exporter.derive.capacity import MIB
from pixcrawler_exporter.web import server
from tests.conftest import REPO, Exporter, free_port, http_get, need_tool

ARTIFACTS = REPO / "test-artifacts"
GIB = 1024 * MIB
HOSTILE = '<script>alert("x")</script> & <b>bold</b> at postgresql://crawler:<redacted>@db/x'


class Fixed(Collector[object]):
    """A collector that returns what ``make`` builds, after ``gate`` opens."""

    name = "fixed"
    descs = ()

    def __init__(self, make: Callable[[], object], gate: threading.Event) -> None:
        self.make = make
        self.gate = gate

    def read(self) -> object:
        self.gate.wait(30)
        return self.make()

    def metrics(self, reading: object) -> Iterable[Metric]:
        return ()


def fixed(name: str, make: Callable[[], object], gate: threading.Event) -> Source:
    return type(f"Fixed_{name}", (Fixed,), {"name": name})(make, gate)  # type: ignore[no-any-return]


def broken() -> object:
    raise CollectorError(HOSTILE)


@dataclass
class Served:
    url: str
    gate: threading.Event

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        status, _, body = http_get(self.url + path, headers)
        return status, body.decode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The exporter's own App and routes, in process, over sources the test decides: memory
    WARNING, disk ALERT, the rest OK, and one collector failing with a hostile message."""
    gate = threading.Event()
    gate.set()
    cpu_reads = iter(range(1, 10**6))
    readings: dict[str, Callable[[], object]] = {
        "memory": lambda: MemoryReading(
            2 * GIB, True, 0, int(0.852 * 2 * GIB), 32 * GIB, 0, 0, int(0.852 * 2 * GIB), {}, None
        ),
        "cpu": lambda: CpuReading(2.0, True, 0.6 * next(cpu_reads), None, None),
        "disk": lambda: DiskReading({"/data": DiskUsage(100 * GIB, 7 * GIB)}, {}),
        "temp_storage": lambda: TempStorageReading(
            {"/tmp/crawl": DirectoryUsage(int(812.4 * MIB), 1625)}, {}, 0.1, 0, 0
        ),
        "database": lambda: DatabaseReading(True, 12, {}, {}),
        "azure": broken,
    }
    loaded = config.load({"PIXCRAWLER_ENVIRONMENT": "azure"}, dotenv_path=tmp_path / ".env")
    layout = cgroup.CgroupLayout("v2", None, None, None, None, None)
    collectors = [fixed(n, make, gate) for n, make in readings.items()]
    app = App(loaded, registry.Built(collectors, layout, loaded.config))
    httpd = server.serve("127.0.0.1:0", app.routes())
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Served(f"http://127.0.0.1:{httpd.server_address[1]}", gate)
    gate.set()
    httpd.shutdown()
    httpd.server_close()
    app.close()


def by_id(page: str, ident: str) -> str:
    """The text inside the element with id ``ident`` (no nested markup but the badge's)."""
    found = re.search(rf'id="{re.escape(ident)}"[^>]*>(.*?)</(?:td|dd|span|time)>', page, re.S)
    assert found is not None, f"no element {ident!r} on the page"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def number(text: str, unit: str) -> float:
    assert text.endswith(unit), text
    return float(text.removesuffix(unit))


def one_collection(served: Served) -> tuple[str, dict[str, object]]:
    """``/`` and ``/status`` answered from one collection: both arrive while it is held."""
    served.get("/status")  # the CPU rate needs a first sample...
    time.sleep(1.1)  # ...at least a second before the one both answers use
    served.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        page = pool.submit(served.get, "/")
        status = pool.submit(served.get, "/status")
        time.sleep(0.5)
        served.gate.set()
        (page_code, body), (status_code, doc) = page.result(), status.result()
    assert page_code == 200 and status_code == 200
    return body, json.loads(doc)


def test_the_page_shows_the_figures_of_status(served: Served) -> None:
    page, doc = one_collection(served)
    metrics, statuses, cap = doc["metrics"], doc["statuses"], doc["capacity"]
    assert isinstance(metrics, dict) and isinstance(statuses, dict) and isinstance(cap, dict)
    # The same collection, so any difference below is a second figure for one resource.
    assert by_id(page, "read-at") and f'datetime="{doc["last_updated"]}"' in page
    for resource in ("disk", "memory", "cpu"):
        shown = number(by_id(page, f"value-{resource}"), "%")
        assert shown == metrics[f"{resource}_pct"], resource
    assert number(by_id(page, "temp-mb"), "") == metrics["temp_storage_mb"] == 812.4
    assert by_id(page, "value-chunks") == f"{metrics['active_chunks']} chunks" == "12 chunks"
    for name, word in statuses.items():
        assert by_id(page, f"status-{name}").endswith(f" {word}"), name
    assert statuses == {
        "disk": "ALERT",
        "memory": "WARNING",
        "cpu": "OK",
        "temp_storage": "OK",
        "chunks": "OK",
        "overall": "ALERT",
    }
    assert by_id(page, "can-start").endswith("YES") and cap["can_start_chunk"] is True
    assert by_id(page, "cap-active") == str(cap["active_chunks"])
    assert by_id(page, "cap-max").startswith(f"{cap['max_chunks']} (configured 35")
    assert by_id(page, "cap-available") == str(cap["available"]) == "20"
    utilization = cap["utilization"]
    assert isinstance(utilization, float)
    assert number(by_id(page, "cap-utilization"), "%") == pytest.approx(utilization)  # percent


def test_thresholds_units_and_status_words(served: Served) -> None:
    _, page = served.get("/")
    memory = page.split('id="resource-memory"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">80%</td><td class="num">90%</td>' in memory
    chunks = page.split('id="resource-chunks"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">35 chunks</td><td class="num">40 chunks</td>' in chunks
    # Colour and word together: the class colours the badge, the text says it.
    assert '<span id="status-disk" class="badge alert">\u2716 ALERT</span>' in page
    assert '<span id="status-memory" class="badge warning">\u25b2 WARNING</span>' in page
    assert '<span id="status-cpu" class="badge unknown">? UNKNOWN</span>' in page  # one sample


def test_collectors_health_escaped_and_nothing_external(served: Served) -> None:
    status, headers, body = http_get(served.url + "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'sha256-")
    azure = page.split('id="collector-azure"', 1)[1].split("</tr>", 1)[0]
    assert "\u2716 FAILED" in azure
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt; at "
        "postgresql://crawler:&lt;redacted&gt;@db/x" in azure
    )
    assert "<script" not in page and "<b>" not in page
    database = page.split('id="collector-database"', 1)[1].split("</tr>", 1)[0]
    assert "\u2714 OK" in database and "read fine" in database
    assert re.search(r'<td class="num">\d+\.\d ms</td>', database)
    # Nothing is fetched from elsewhere; the only links out are the runbook and the dashboard,
    # followed by a reader's click.
    assert not re.search(r"""src\s*=\s*["']?\s*(https?:)?//|@import|url\(|<link""", page, re.I)
    outside = re.findall(r"""<a href="((?:https?:)?//[^"]*)\"""", page)
    assert outside == [RUNBOOK_URL, DASHBOARD_URL]
    for path in ("/metrics", "/status", "/health", "/-/healthy"):
        assert f'<a href="{path}">{path}</a>' in page
    assert f"version {__version__}" in page
    assert 'http-equiv="refresh"' not in page


def test_the_page_keeps_the_scrape_deadline(served: Served) -> None:
    served.gate.clear()
    start = time.monotonic()
    status, page = served.get("/", {server.SCRAPE_TIMEOUT_HEADER: "1"})
    elapsed = time.monotonic() - start
    served.gate.set()
    assert status == 200 and elapsed < 1.5
    memory = page.split('id="collector-memory"', 1)[1].split("</tr>", 1)[0]
    assert "FAILED" in memory and "did not finish within the scrape deadline" in memory
    assert by_id(page, "status-memory") == "? UNKNOWN"
    assert by_id(page, "value-memory") == "unknown"


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
            "--window-size=1280,900",
            # The page's console on stderr: where a Content-Security-Policy violation shows.
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_chromium_renders_a_real_exporter_and_a_screenshot_is_kept(
    tmp_path: Path, exporter_factory: Callable[..., Exporter]
) -> None:
    need_tool("chromium")
    temp = tmp_path / "crawl-tmp"
    temp.mkdir()
    (temp / "big.jpg").write_bytes(b"x" * 2 * MIB)  # twice the 1 MB quota: temp storage ALERT
    password = "landing-secret-pw"  # the test's own, to prove it is never shown
    exporter = exporter_factory(
        env={
            "PIXCRAWLER_TEMP_DIRS": str(temp),
            "PIXCRAWLER_MAX_TEMP_STORAGE_MB": "1",
            "PIXCRAWLER_DISK_PATHS": str(tmp_path),
            "PIXCRAWLER_MEMORY_THRESHOLD_WARN": "0",  # percent: memory WARNING
            "PIXCRAWLER_POLL_INTERVAL_SECONDS": "1",
            # Nothing listens there: the database collector fails, its message is redacted.
            "PIXCRAWLER_DB_URL": f"postgresql://crawler:{password}@127.0.0.1:{free_port()}/x",
        }
    )
    deadline = time.monotonic() + 10  # the CPU rate needs two polls a second apart
    while json.loads(exporter.get("/status")[2])["metrics"]["cpu_pct"] is None:
        assert time.monotonic() < deadline, "no CPU figure after 10 s"
        time.sleep(0.2)

    dom = chromium(tmp_path, "--dump-dom", exporter.url + "/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Its own policy let the inline style apply: a wrong hash would log a violation here.
    assert "Content Security Policy" not in dom.stderr, dom.stderr[-2000:]
    # The DOM Chromium built from the answer, not the bytes the exporter sent.
    text = dom.stdout
    assert "<h2>Can a chunk start?</h2>" in text and "? UNKNOWN" in by_id(text, "can-start")
    assert by_id(text, "status-memory") == "\u25b2 WARNING"
    assert by_id(text, "status-temp_storage") == "\u2716 ALERT"
    assert by_id(text, "value-temp_storage") == "200%"
    database = text.split('id="collector-database"', 1)[1].split("</tr>", 1)[0]
    assert "FAILED" in database and "&lt;redacted&gt;" in database
    assert password not in text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "landing-page.png"
    shot.unlink(missing_ok=True)
    taken = chromium(tmp_path, f"--screenshot={shot}", exporter.url + "/")
    assert taken.returncode == 0, taken.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1280, 900)
    assert len(png) > 30_000  # a blank page compresses to a few kB
    print(f"landing page screenshot: {shot}")


def test_labels_say_what_the_figure_is_and_unknown_is_never_ok(
    exporter_factory: Callable[..., Exporter], tmp_path: Path
) -> None:
    # No database: active chunks are unknown, so the page cannot say all is well.
    exp = exporter_factory(env={"PIXCRAWLER_TEMP_DIRS": str(tmp_path)})
    page = exp.get("/")[2].decode()
    memory = page.split('id="resource-memory"', 1)[1].split("</tr>", 1)[0]
    assert "cannot reclaim" in memory and "working set" not in memory
    assert '<span id="status-overall" class="badge unknown">? UNKNOWN</span>' in page
    assert "<title>UNKNOWN" in page
    # Each collector that is off, with what turns it on.
    database = page.split('id="off-database"', 1)[1].split("</tr>", 1)[0]
    assert "needs a setting: database.url (PIXCRAWLER_DB_URL) is not set" in database
    azure = page.split('id="off-azure"', 1)[1].split("</tr>", 1)[0]
    assert "mode is not azure (PIXCRAWLER_MODE=azure)" in azure
    assert 'id="off-celery"' in page and 'id="off-memory"' not in page
    off = exporter_factory("--no-collector.network", env={"PIXCRAWLER_TEMP_DIRS": str(tmp_path)})
    network = off.get("/")[2].decode().split('id="off-network"', 1)[1].split("</tr>", 1)[0]
    assert "<code>--collector.network</code>" in network
    assert "<code>PIXCRAWLER_COLLECTOR_NETWORK=true</code>" in network
    assert f'<a href="{RUNBOOK_URL}">Runbook</a>' in page
    assert f'<a href="{DASHBOARD_URL}">Grafana dashboard</a>' in page
