"""Temp storage followed by events: freshness, exactness and CPU on a 200k-file tree with a writer.

    PYTHONPATH=. python bench/temp_watch.py [--tree /var/tmp/pixcrawler-bench] [--seconds 60]
        [--probes 100] [--rate 250]

Builds (or reuses) bench/temp_scan.py's tree of 200,000 files in 800 directories and starts our
exporter with only the temp storage collector on, over that tree, on its defaults (a full scan
every 30 s to reconcile). A writer in the bench process then churns the tree as a crawler does:
it creates chunk directories below the job directories, fills each with 500 images of 1-4 KiB at
``--rate`` files a second, and deletes the oldest chunk it made once four are complete, so the
tree stays near its size. Three phases:

1. CPU: ``--seconds`` of churn, scraped every 15 s as Prometheus would. The exporter's utime +
   stime over the window (``/proc/PID/stat``) is set against what back-to-back full scans would
   cost in the same time: the CPU seconds per wall second of ``scan()`` on the same tree, run in
   the bench process beforehand, times the window.
2. Freshness, with the churn going on: ``--probes`` times, a 64 MiB sparse ``.jpg`` is created
   (and later removed) in a random chunk directory, and ``/metrics`` is scraped every 20 ms
   until ``pixcrawler_temp_storage_bytes`` shows it. Prints p50, p99 and max from the file's
   close to the first scrape that shows it (creation and removal alike).
3. Exactness: the churn stops; 2 s later the exporter's bytes and files must equal a full
   ``scan()`` of the tree, exactly.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import HOST, Process, started  # noqa: E402
from bench.temp_scan import PATTERNS, build  # noqa: E402
from pixcrawler_exporter.collectors.temp_storage.scan import scan  # noqa: E402
from tests.conftest import free_port, parse_samples, sample  # noqa: E402

PROBE_BYTES = 64 * 1024 * 1024
CHUNK_FILES = 500


class Writer(threading.Thread):
    """Churns the tree as a crawler does, until stopped."""

    def __init__(self, tree: Path, rate: float) -> None:
        super().__init__(name="writer", daemon=True)
        self.tree, self.rate = tree, rate
        self.stop = threading.Event()
        self.created = self.deleted = 0
        self.jobs = sorted(p for p in tree.iterdir() if p.is_dir())

    def run(self) -> None:
        rng = random.Random(3)  # noqa: S311 - a reproducible workload
        blob = rng.randbytes(4096)
        done: list[Path] = []
        n = 0
        started_at = time.monotonic()
        while not self.stop.is_set():
            chunk = rng.choice(self.jobs) / f"live-{n:05d}"
            chunk.mkdir()
            for i in range(CHUNK_FILES):
                if self.stop.is_set():
                    return
                (chunk / f"img-{i:04d}.jpg").write_bytes(blob[: rng.randint(1024, 4096)])
                self.created += 1
                # Keep to the rate: sleep off any lead over the schedule.
                lead = self.created / self.rate - (time.monotonic() - started_at)
                if lead > 0:
                    time.sleep(lead)
            done.append(chunk)
            n += 1
            if len(done) > 4:
                old = done.pop(0)
                self.deleted += sum(1 for _ in old.iterdir())
                shutil.rmtree(old)


class Scraper:
    def __init__(self, process: Process, tree: Path) -> None:
        port = int(process.url.split(":")[2].split("/")[0])
        self.conn = http.client.HTTPConnection(HOST, port, timeout=15)
        self.tree = str(tree)

    def figures(self) -> tuple[float, float, dict[str, float]]:
        self.conn.request("GET", "/metrics")
        resp = self.conn.getresponse()
        samples = parse_samples(resp.read().decode())
        size = sample(samples, "pixcrawler_temp_storage_bytes", directory=self.tree)
        files = sample(samples, "pixcrawler_temp_storage_files", directory=self.tree)
        assert size is not None and files is not None
        extra = {
            mode: sample(samples, "pixcrawler_temp_storage_mode", directory=self.tree, mode=mode)
            or 0.0
            for mode in ("events", "scan")
        }
        extra["watches"] = sample(samples, "pixcrawler_temp_storage_watches") or 0.0
        return size, files, extra


def scan_cost(tree: Path, runs: int = 5) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one full scan in this process: the median CPU, and the
    shortest wall time, the one least stretched by other processes waiting for the CPU."""
    cpu, wall = [], []
    for _ in range(runs):
        c, w = time.process_time(), time.perf_counter()
        scan(str(tree), PATTERNS, True)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), min(wall)


def probe(scraper: Scraper, directory: Path, n: int) -> tuple[float, float]:
    """Seconds until a new 64 MiB file shows, and until its removal shows."""
    path = directory / f"probe-{n:04d}.jpg"
    before, _, _ = scraper.figures()
    with path.open("wb") as f:
        f.truncate(PROBE_BYTES)
    created = time.monotonic()
    while scraper.figures()[0] < before + PROBE_BYTES / 2:
        time.sleep(0.02)
    shown = time.monotonic() - created
    before, _, _ = scraper.figures()
    path.unlink()
    removed = time.monotonic()
    while scraper.figures()[0] > before - PROBE_BYTES / 2:
        time.sleep(0.02)
    return shown, time.monotonic() - removed


@contextmanager
def exporter(tree: Path) -> Iterator[Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXCRAWLER_")}
    env.update(PYTHONPATH=str(REPO), PIXCRAWLER_LOG_LEVEL="warning")
    env["PIXCRAWLER_TEMP_DIRS"] = str(tree)
    for name in ("MEMORY", "CPU", "PRESSURE", "DISK", "NETWORK", "DATABASE", "AZURE"):
        env[f"PIXCRAWLER_COLLECTOR_{name}"] = "false"
    port = free_port()
    cmd = [sys.executable, "-m", "pixcrawler_exporter", "--listen", f"{HOST}:{port}"]
    with started("pixcrawler-exporter", cmd, env, port) as process:
        yield process


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path("/var/tmp/pixcrawler-bench"))
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=250, help="files the writer creates a second")
    args = parser.parse_args()

    tree = args.tree / "files-200000"
    print(f"# building or reusing {tree} ...", flush=True)
    build(tree, 200_000, 800, seed=1)
    for leftover in tree.glob("job-*/live-*"):
        shutil.rmtree(leftover)  # an earlier run's churn
    for leftover in tree.glob("job-*/*/probe-*.jpg"):
        leftover.unlink()
    scan_cpu, scan_wall = scan_cost(tree)
    print(f"# load average before: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(
        f"# one full scan in the bench process: {scan_cpu:.3f} s CPU (median), "
        f"{scan_wall:.3f} s wall (shortest of 5)"
    )

    with exporter(tree) as process:
        scraper = Scraper(process, tree)
        deadline = time.monotonic() + 60
        while scraper.figures()[1] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # the first scan
        _, _, extra = scraper.figures()
        print(f"# mode events={extra['events']:.0f} scan={extra['scan']:.0f}, "
              f"watches {extra['watches']:.0f}")  # fmt: skip

        writer = Writer(tree, args.rate)
        writer.start()
        time.sleep(2)  # into the stride
        cpu_before, window_start = process.cpu_seconds(), time.monotonic()
        while time.monotonic() - window_start < args.seconds:
            scraper.figures()
            time.sleep(min(15, args.seconds - (time.monotonic() - window_start)))
        window = time.monotonic() - window_start
        cpu = process.cpu_seconds() - cpu_before
        rescans = window * scan_cpu / scan_wall
        print(
            f"CPU over {window:.0f} s of churn ({writer.created} files created, "
            f"{writer.deleted} deleted so far): exporter {cpu:.2f} s (= {cpu / scan_cpu:.1f} "
            f"full scans); back-to-back rescans {rescans:.1f} s ({window / scan_wall:.0f} scans); "
            f"ratio {cpu / rescans:.3f} (target <= 0.1)"
        )

        chunks = [p for p in tree.glob("job-*/chunk-*")]
        rng = random.Random(4)  # noqa: S311
        shown: list[float] = []
        for n in range(args.probes):
            up, down = probe(scraper, rng.choice(chunks), n)
            shown += [up, down]
        print(
            f"freshness, {len(shown)} changes of a 64 MiB file during churn: p50 "
            f"{statistics.median(shown):.3f} s, p99 {percentile(shown, 0.99):.3f} s, max "
            f"{max(shown):.3f} s (target p99 <= 2 s)"
        )

        writer.stop.set()
        writer.join()
        time.sleep(2)
        size, files, extra = scraper.figures()
        truth = scan(str(tree), PATTERNS, True)
        match = "exact" if (size, files) == (truth.bytes, truth.files) else "MISMATCH"
        print(
            f"after the churn stopped ({writer.created} created, {writer.deleted} deleted): "
            f"exporter {size:.0f} bytes in {files:.0f} files, full scan {truth.bytes} bytes in "
            f"{truth.files} files: {match}; watches {extra['watches']:.0f}"
        )
        print(f"exporter RSS at the end: {process.status('VmRSS') / 1024:.1f} MB")
    print(f"# load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
