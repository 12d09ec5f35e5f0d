"""Load and soak: the exporter with every collector on, beside Debian's prometheus-node-exporter.

    cd /work/main && python bench/load.py [--seconds 60] [--connections 8] [--soak 20000]
        [--no-db] [--churn 250] [--soak-only] [--peer /usr/bin/prometheus-node-exporter]

Load: wrk (``--connections`` connections, 2 threads, ``--seconds`` each, after a 5 s warm-up)
against our ``/metrics`` and then the peer's, sending the headers Prometheus sends (OpenMetrics
preferred, gzip, the scrape timeout). The peer runs only the collectors that match ours:
meminfo, cpu, filesystem, netdev and pressure. Then one connection for 10 s each: the latency
of a single scrape with nothing to share. Ours runs every collector that can run here: memory,
cpu, pressure, disk, network, temp storage (over a tree of 2,000 files) and the database (a real
PostgreSQL started as in tests/pg.py, holding seed 003's crawl_jobs), in local mode, so without
Azure Monitor, which cannot be reached from here.

Soak: ``--soak`` scrapes in a row on one keep-alive connection, while a writer (bench/temp_watch.py)
churns the temp tree at ``--churn`` files a second, so the temp storage collector follows events
all along; resident memory, threads, open file descriptors and the database connections of the
exporter's role, after 500 warm-up scrapes and at the end. ``--soak-only`` skips the wrk runs.

Needs wrk and prometheus-node-exporter (apt-get install wrk prometheus-node-exporter).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import free_port  # noqa: E402

HOST = "127.0.0.1"
PEER = "/usr/bin/prometheus-node-exporter"
PEER_FLAGS = (
    "--collector.disable-defaults",
    "--collector.meminfo",
    "--collector.cpu",
    "--collector.filesystem",
    "--collector.netdev",
    "--collector.pressure",
    "--log.level=warn",
)
# What Prometheus 2.x/3.x sends on every scrape.
HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass(frozen=True)
class Run:
    name: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float
    rss_mb: float


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def status(self, field: str) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+)", text, re.M)
        assert match, field
        return int(match.group(1))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextmanager
def started(name: str, cmd: Sequence[str], env: dict[str, str], port: int) -> Iterator[Process]:
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process = Process(name, proc, f"http://{HOST}:{port}/metrics")
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            with suppress(OSError):
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                try:
                    conn.request("GET", "/metrics", headers=HEADERS)
                    ready = conn.getresponse().status == 200
                finally:
                    # Left open, its server thread and socket would live on until the idle
                    # timeout and vanish in the middle of the soak's thread and fd counts.
                    conn.close()
                if ready:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not serve within 30 s")
            time.sleep(0.1)
        yield process
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk_command(
    url: str,
    connections: int,
    seconds: float,
    threads: int = 2,
    headers: Mapping[str, str] = HEADERS,
) -> list[str]:
    header_args = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
    return ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s",
            "--latency", *header_args, url]  # fmt: skip


def wrk(
    process: Process,
    connections: int,
    seconds: float,
    threads: int = 2,
    headers: Mapping[str, str] = HEADERS,
) -> Run:
    cpu_before = process.cpu_seconds()
    done = subprocess.run(
        wrk_command(process.url, connections, seconds, threads, headers),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu = process.cpu_seconds() - cpu_before
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Run(
        process.name,
        connections,
        rate,
        _latency(out, "50%"),
        _latency(out, "99%"),
        errors,
        1000 * cpu / max(total, 1),
        process.status("VmRSS") / 1024,
    )


def _latency(out: str, pct: str) -> float:
    match = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    assert match, f"no {pct} latency in wrk's output:\n{out}"
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Sample:
    rss_kb: int
    threads: int
    fds: int
    db_connections: int | None


def soak(
    process: Process, scrapes: int, db_connections: object
) -> tuple[Sample, Sample, list[float]]:
    port = int(process.url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection(HOST, port, timeout=15)

    def scrape() -> float:
        start = time.perf_counter()
        conn.request("GET", "/metrics", headers=HEADERS)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
        return time.perf_counter() - start

    def sample() -> Sample:
        count = db_connections() if callable(db_connections) else None
        return Sample(process.status("VmRSS"), process.status("Threads"), process.fds(), count)

    for _ in range(500):
        scrape()
    before = sample()
    latencies = []
    for i in range(1, scrapes + 1):
        latencies.append(scrape())
        if i % 5000 == 0 and i < scrapes:
            print(f"#   after {i} scrapes: RSS {process.status('VmRSS') / 1024:.1f} MB", flush=True)
    after = sample()
    conn.close()
    return before, after, latencies


def temp_tree(root: Path, files: int = 2000) -> None:
    for i in range(files):
        directory = root / f"job-{i % 20}" / f"chunk-{i % 100}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"img-{i}.jpg").write_bytes(b"\xff" * (1024 + i % 4096))


@contextmanager
def database(enabled: bool) -> Iterator[tuple[str | None, object, str]]:
    """(URL, a function counting the role's connections, what to print) or no database."""
    if not enabled:
        yield None, None, "database: off (--no-db)"
        return
    try:
        from bench import db_scrape
        from tests.pg import ROLE, PostgresServer, find_binaries
    except ImportError as exc:
        yield None, None, f"database: off ({exc})"
        return
    bindir = find_binaries()
    if bindir is None:
        yield None, None, "database: off (PostgreSQL's initdb and pg_ctl are not installed)"
        return
    pg = PostgresServer(bindir)
    try:
        pg.init()
        db_scrape.seed(pg, 1000)

        def connections() -> int:
            sql = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{ROLE}'"  # noqa: S608
            rows = pg.query(sql)
            return int(rows[0][0])

        version = pg.query("SHOW server_version")[0][0]
        yield pg.url, connections, f"database: PostgreSQL {version}, crawl_jobs 1000 rows"
    finally:
        pg.destroy()


def table(runs: Sequence[Run]) -> str:
    lines = [
        "| exporter | connections | requests/s | p50 ms | p99 ms | errors | CPU ms/request "
        "| RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r.name} | {r.connections} | {r.requests_per_second:.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.errors} | {r.cpu_ms_per_request:.2f} | {r.rss_mb:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--soak", type=int, default=20000, help="scrapes in a row; 0: no soak")
    parser.add_argument("--no-db", action="store_true", help="run without PostgreSQL")
    parser.add_argument(
        "--churn",
        type=float,
        default=250,
        help="temp files a writer creates (and deletes) a second during the soak; 0: none",
    )
    parser.add_argument("--soak-only", action="store_true", help="skip the wrk comparison")
    parser.add_argument("--peer", default=PEER)
    args = parser.parse_args(argv)
    for tool in ("wrk", args.peer):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install wrk prometheus-node-exporter)")
            return 2

    scratch = Path(tempfile.mkdtemp(prefix="pixcrawler-load-"))
    try:
        temp_tree(scratch / "temp")
        with database(not args.no_db) as (url, db_connections, db_note):
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIXCRAWLER_")}
            env.update(
                PYTHONPATH=str(REPO),
                PIXCRAWLER_LOG_LEVEL="warning",
                PIXCRAWLER_TEMP_DIRS=str(scratch / "temp"),
                PIXCRAWLER_DISK_PATHS=f"{scratch}:/",
            )
            if url:
                env["PIXCRAWLER_DB_URL"] = url
            ours_port, peer_port = free_port(), free_port()
            ours_cmd = [
                sys.executable,
                "-m",
                "pixcrawler_exporter",
                "--listen",
                f"{HOST}:{ours_port}",
            ]
            peer_cmd = [args.peer, f"--web.listen-address={HOST}:{peer_port}", *PEER_FLAGS]
            with (
                started("pixcrawler-exporter", ours_cmd, env, ours_port) as ours,
                started("node_exporter", peer_cmd, env, peer_port) as peer,
            ):
                print(f"# {db_note}; cores: {os.cpu_count()}; python {sys.version.split()[0]}")
                print(f"# ours: {' '.join(ours_cmd[1:])}\n# peer: {' '.join(peer_cmd)}")
                runs: list[Run] = []
                for process in () if args.soak_only else (ours, peer):
                    wrk(process, args.connections, 5)  # warm-up
                    runs.append(wrk(process, args.connections, args.seconds))
                for process in () if args.soak_only else (ours, peer):
                    runs.append(wrk(process, 1, min(args.seconds, 10), threads=1))
                print(table(runs))
                by = {(r.name, r.connections): r for r in runs}
                for connections in () if args.soak_only else (args.connections, 1):
                    a = by[("pixcrawler-exporter", connections)]
                    b = by[("node_exporter", connections)]
                    print(
                        f"# {connections} connection(s), ours / peer: requests/s "
                        f"{a.requests_per_second / b.requests_per_second:.2f}x, p50 "
                        f"{a.p50_ms / b.p50_ms:.2f}x, p99 {a.p99_ms / b.p99_ms:.2f}x"
                    )
                if args.soak:
                    from bench.temp_watch import Writer

                    writer = Writer(scratch / "temp", args.churn)
                    if args.churn:
                        writer.start()
                    started_at = time.monotonic()
                    try:
                        before, after, lat = soak(ours, args.soak, db_connections)
                    finally:
                        writer.stop.set()
                    took = time.monotonic() - started_at
                    print(
                        f"# temp churn during the soak: {writer.created} files created, "
                        f"{writer.deleted} deleted"
                    )
                    lat.sort()
                    print(
                        f"# soak: {args.soak} scrapes in {took:.0f} s, p50 "
                        f"{1000 * statistics.median(lat):.2f} ms, p99 "
                        f"{1000 * lat[int(0.99 * len(lat))]:.2f} ms"
                    )
                    print("| | RSS MB | threads | fds | database connections |")
                    print("| --- | ---: | ---: | ---: | ---: |")
                    for label, s in (("after 500 warm-up scrapes", before), ("at the end", after)):
                        print(
                            f"| {label} | {s.rss_kb / 1024:.1f} | {s.threads} | {s.fds} | "
                            f"{'-' if s.db_connections is None else s.db_connections} |"
                        )
                    growth = (after.rss_kb - before.rss_kb) / 1024
                    print(f"# RSS growth {growth:+.2f} MB (target < 5 MB)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
