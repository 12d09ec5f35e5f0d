"""Benchmark: the database scrape path against Debian's prometheus-postgres-exporter (v0.11).

A real PostgreSQL (started like the tests do, see ``tests/pg.py``) holds seed 003's
``crawl_jobs`` table. Both exporters run the same SELECT (our ``crawl_jobs`` preset's one
statement, rendered by ``default_queries()``; the peer gets it through ``--extend.query-path``,
and both must report the same figures before anything is measured), with every other collector
of either exporter turned off. For each concurrency, N scraper
threads (one persistent HTTP/1.1 connection each) scrape ``/metrics`` back to back for a fixed
window, ours first and then the peer's, alternately. Reported per window: scrapes/s, latency
percentiles, the exporter's CPU time per scrape, and the queries the database received
(``pg_stat_statements``: calls of the exporter role's statements naming ``crawl_jobs``, and of all
its statements) per second and per scrape.

    cd /work/main && PYTHONPATH=. python bench/db_scrape.py [--seconds 20] [--rows 1000]
        [--concurrency 1,8] [--rounds 1] [--peer /usr/bin/prometheus-postgres-exporter]

Targets: our p50 at most the peer's, and database queries/s that do not grow with the number of
concurrent scrapers. Run as root (the server runs as ``nobody``) or as a normal user.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pixcrawler_exporter.collectors.database.presets import (  # noqa: E402
    PresetQuery,
    default_queries,
)
from tests.conftest import free_port  # noqa: E402
from tests.pg import CRAWL_JOBS_TABLE, ROLE, PostgresServer, find_binaries  # noqa: E402

HOST = "127.0.0.1"
PEER = "/usr/bin/prometheus-postgres-exporter"
OUR_FLAGS = (
    "--no-collector.memory",
    "--no-collector.cpu",
    "--no-collector.pressure",
    "--no-collector.disk",
    "--no-collector.network",
    "--no-collector.temp_storage",
    "--no-collector.azure",
)
# v0.11's new-style collectors (pg_database sizes, bgwriter) run on every scrape: off, so the
# peer runs only the extended queries (and its own per-scrape version check).
PEER_FLAGS = (
    "--disable-default-metrics",
    "--disable-settings-metrics",
    "--no-collector.database",
    "--no-collector.bgwriter",
    "--log.level=warn",
)
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
PEER_PRESET = "bench_preset"  # the peer's namespace for the preset's statement
HTTP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """One exporter under one concurrency for one measured window (or several, merged)."""

    exporter: str
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, completed 200 scrapes
    failures: int = 0
    db_queries: int = 0  # statements naming crawl_jobs
    db_statements: int = 0  # every statement of the exporter's role
    cpu: float = 0.0  # the exporter process's user+system seconds

    def merge(self, other: Window) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.failures += other.failures
        self.db_queries += other.db_queries
        self.db_statements += other.db_statements
        self.cpu += other.cpu

    @property
    def scrapes(self) -> int:
        return len(self.latencies)

    def rate(self) -> float:
        return self.scrapes / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """The q-th percentile (nearest rank) in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
        return ordered[rank - 1] * 1000

    def per_scrape(self, value: float) -> float:
        return value / self.scrapes if self.scrapes else float("nan")


class Exporter:
    def __init__(
        self, name: str, cmd: Sequence[str], env: dict[str, str], port: int, workdir: Path
    ) -> None:
        self.name, self.port = name, port
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(cmd), env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
            )

    def get(self, path: str = "/metrics") -> tuple[int, str]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def wait_ready(self, ready: str) -> str:
        """Scrape until the body holds ``ready`` (the database read worked); the body."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, body = self.get()
            except OSError as exc:
                last = str(exc)
            else:
                if status == 200 and ready in body:
                    return body
                last = f"HTTP {status}"
            time.sleep(0.1)
        log = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} exporter not ready ({last}); its log:\n{log}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def seed(pg: PostgresServer, rows: int) -> None:
    pg.execute(CRAWL_JOBS_TABLE)
    with pg.connect() as conn:
        conn.execute(
            "INSERT INTO crawl_jobs (status, total_chunks, active_chunks, completed_chunks, "
            "failed_chunks) SELECT (%(statuses)s::text[])[1 + i %% %(n)s], "
            "10 + i %% 7, i %% 4, i %% 5, i %% 3 FROM generate_series(1, %(rows)s) AS i",
            {"statuses": list(STATUSES), "n": len(STATUSES), "rows": rows},
        )
        conn.execute("ANALYZE crawl_jobs")


def preset() -> PresetQuery:
    (statement,) = default_queries()
    assert isinstance(statement, PresetQuery)
    return statement


def peer_queries(path: Path) -> None:
    """The preset's statement as the peer's extend.query-path YAML: the peer runs the very SQL
    ours does, and exports its rows (a label per grouping column, a gauge per value)."""
    statement = preset()
    columns = [{name: {"usage": "LABEL", "description": name}} for name in statement.labels]
    columns += [{name: {"usage": "GAUGE", "description": name}} for name in statement.values]
    out = {PEER_PRESET: {"query": statement.sql, "metrics": columns}}
    path.write_text(yaml.safe_dump(out, sort_keys=False), encoding="utf-8")


def counts(pg: PostgresServer) -> tuple[int, int]:
    """Calls of the role's statements naming crawl_jobs, and of all its statements."""
    with pg.connect() as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls) FILTER (WHERE query LIKE '%%crawl_jobs%%'), 0)::bigint, "
            "coalesce(sum(calls), 0)::bigint FROM pg_stat_statements "
            "WHERE userid = %s::regrole",
            (ROLE,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def show_statements(pg: PostgresServer) -> None:
    """Every statement the exporters' role ran, most called first (both exporters together)."""
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT calls, round(mean_exec_time::numeric, 3), left(regexp_replace(query, "
            "'\\s+', ' ', 'g'), 90) FROM pg_stat_statements WHERE userid = %s::regrole "
            "ORDER BY calls DESC",
            (ROLE,),
        ).fetchall()
    print("\nstatements of the exporters' role (calls, mean exec ms, text):")
    for calls, mean, text in rows:
        print(f"{calls:>9} {mean:>7} {text}")


def scraper(
    port: int, start: threading.Barrier, stop_at: list[float], out: list[float], errors: list[int]
) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT)
    try:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            try:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                conn.close()  # the next request reconnects
                continue
            if resp.status == 200:
                out.append(time.perf_counter() - began)
            else:
                errors[0] += 1
    finally:
        conn.close()


def measure(pg: PostgresServer, exporter: Exporter, concurrency: int, seconds: float) -> Window:
    start = threading.Barrier(concurrency + 1)
    stop_at = [float("inf")]
    results: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[list[int]] = [[0] for _ in range(concurrency)]
    threads = [
        threading.Thread(
            target=scraper,
            args=(exporter.port, start, stop_at, results[i], errors[i]),
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    queries0, statements0 = counts(pg)
    cpu0 = exporter.cpu_seconds()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join(seconds + HTTP_TIMEOUT + 5)
    elapsed = time.perf_counter() - began
    cpu1 = exporter.cpu_seconds()
    queries1, statements1 = counts(pg)
    return Window(
        exporter.name,
        concurrency,
        elapsed,
        [x for r in results for x in r],
        sum(e[0] for e in errors),
        queries1 - queries0,
        statements1 - statements0,
        cpu1 - cpu0,
    )


def report(windows: dict[tuple[str, int], Window], levels: Sequence[int]) -> None:
    header = (
        f"{'exporter':<9} {'scrapes/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'cpu ms/scr':>10} {'db q/s':>8} {'db q/scr':>8} {'stmts/scr':>9} {'errors':>6}"
    )
    for c in levels:
        print(f"\nconcurrency {c}")
        print(header)
        for name in ("ours", "peer"):
            w = windows[(name, c)]
            print(
                f"{name:<9} {w.rate():>9.1f} {w.pct(50):>8.2f} {w.pct(90):>8.2f} "
                f"{w.pct(99):>8.2f} {w.per_scrape(w.cpu * 1000):>10.2f} "
                f"{w.db_queries / w.seconds:>8.1f} {w.per_scrape(w.db_queries):>8.2f} "
                f"{w.per_scrape(w.db_statements):>9.2f} {w.failures:>6}"
            )
    print()
    for c in levels:
        ours, peer = windows[("ours", c)], windows[("peer", c)]
        print(f"p50 ours/peer c={c}: {ours.pct(50) / peer.pct(50):.2f}")
    for c in levels:
        ours, peer = windows[("ours", c)], windows[("peer", c)]
        print(f"scrapes/s ours/peer c={c}: {ours.rate() / peer.rate():.2f}")
    low, high = min(levels), max(levels)
    for name in ("ours", "peer"):
        a, b = windows[(name, low)], windows[(name, high)]
        ratio = (b.db_queries / b.seconds) / (a.db_queries / a.seconds)
        print(f"db queries/s c={high} vs c={low} ({name}): {ratio:.2f}")


def _same_numbers(ours: str, peer: str) -> int:
    """Both exporters must report the same figures, or the comparison is void: the peer's rows
    of the preset's statement, made into figures as ours makes its own, against ours. How many
    figures agree."""
    statement = preset()
    rows: dict[tuple[str, ...], dict[str, float | None]] = {}
    for family in text_string_to_metric_families(peer):
        column = family.name.removeprefix(f"{PEER_PRESET}_")
        if family.name.startswith(f"{PEER_PRESET}_") and column in statement.values:
            for s in family.samples:
                key = tuple(s.labels.get(name, "") for name in statement.labels)
                # The peer reads NULL as NaN.
                rows.setdefault(key, {})[column] = None if math.isnan(s.value) else s.value
    made = statement.figures([(*k, *(v.get(c) for c in statement.values)) for k, v in rows.items()])
    theirs = {(m, labels): value for m, samples in made.items() for labels, value in samples}
    mine: dict[tuple[str, tuple[str, ...]], float] = {}
    wanted = {g.metric: g.label_names for g in statement.gauges}
    for family in text_string_to_metric_families(ours):
        for s in family.samples:
            if s.name in wanted:
                mine[(s.name, tuple(s.labels[n] for n in wanted[s.name]))] = s.value
    if not mine or mine != theirs:
        raise RuntimeError(f"the exporters disagree: ours {mine}, the peer's {theirs}")
    return len(mine)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks: exporters and server stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each measured window")
    parser.add_argument("--rows", type=int, default=1000, help="rows of crawl_jobs")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated scraper counts")
    parser.add_argument("--rounds", type=int, default=1, help="windows per exporter and level")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--peer", default=PEER, help="prometheus-postgres-exporter binary")
    parser.add_argument(
        "--show-statements", action="store_true", help="list pg_stat_statements at the end"
    )
    args = parser.parse_args(argv)
    levels = sorted({int(c) for c in args.concurrency.split(",")})
    if len(levels) < 2 or levels[0] < 1:
        parser.error("--concurrency needs at least two levels, each at least 1")
    if not Path(args.peer).is_file():
        parser.error(f"{args.peer} not found: apt-get install -y prometheus-postgres-exporter")
    bindir = find_binaries()
    if bindir is None:
        parser.error("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    signal.signal(signal.SIGTERM, _terminate)

    workdir = Path(tempfile.mkdtemp(prefix="pixbench-"))
    pg = PostgresServer(bindir)
    exporters: list[Exporter] = []
    try:
        pg.init()
        if not pg.stat_statements:
            raise RuntimeError("pg_stat_statements is not installed with the server")
        seed(pg, args.rows)
        peer_file = workdir / "queries.yaml"
        peer_queries(peer_file)

        # Neither exporter may pick up settings from the caller's environment or a .env file.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PIXCRAWLER_", "PG"))}
        our_port, peer_port = free_port(), free_port()
        ours = Exporter(
            "ours",
            [
                sys.executable,
                "-m",
                "pixcrawler_exporter",
                "--listen",
                f"{HOST}:{our_port}",
                *OUR_FLAGS,
            ],
            {**base, "PYTHONPATH": str(REPO), "PIXCRAWLER_DB_URL": pg.url},
            our_port,
            workdir,
        )
        exporters.append(ours)
        peer = Exporter(
            "peer",
            [
                args.peer,
                f"--web.listen-address={HOST}:{peer_port}",
                f"--extend.query-path={peer_file}",
                *PEER_FLAGS,
            ],
            {**base, "DATA_SOURCE_NAME": f"{pg.url}?sslmode=disable"},
            peer_port,
            workdir,
        )
        exporters.append(peer)
        agreed = _same_numbers(
            ours.wait_ready("pixcrawler_database_up 1.0"),
            peer.wait_ready(f"{PEER_PRESET}_{preset().values[0]}"),
        )

        version = subprocess.run(
            [args.peer, "--version"], capture_output=True, text=True, check=False, timeout=10
        )
        print(
            f"PostgreSQL {pg.query('SHOW server_version')[0][0]}, crawl_jobs {args.rows} rows; "
            f"{args.seconds:g} s per window, {args.rounds} round(s); "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"peer: {(version.stdout + version.stderr).splitlines()[0]}; "
            f"both report the same {agreed} figures; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        windows: dict[tuple[str, int], Window] = {}
        for _ in range(args.rounds):
            for c in levels:
                for exporter in exporters:
                    if args.warmup > 0:
                        measure(pg, exporter, c, args.warmup)
                    w = measure(pg, exporter, c, args.seconds)
                    print(
                        f"  {exporter.name} c={c}: {w.scrapes} scrapes, p50 {w.pct(50):.2f} ms, "
                        f"{w.db_queries} db queries",
                        flush=True,
                    )
                    key = (exporter.name, c)
                    if key in windows:
                        windows[key].merge(w)
                    else:
                        windows[key] = w
        report(windows, levels)
        if args.show_statements:
            show_statements(pg)
        for exporter in exporters:
            if exporter.proc.poll() is not None:
                raise RuntimeError(f"{exporter.name} exited during the run")
        return 0
    finally:
        for exporter in exporters:
            exporter.stop()
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
