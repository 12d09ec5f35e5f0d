"""One scrape, ours against node_exporter, side by side in one run; and our resident memory.

    python bench/scrape.py [--seconds 5] [--rounds 3] [--connections 1] [--headers bare,prometheus]
        [--scrapes 1000] [--footprint] [--temp-dirs DIR] [--peer /usr/bin/prometheus-node-exporter]

Both exporters start fresh. Ours runs on its defaults (memory, cpu, pressure, disk, network and
temp storage; no database, mode local), temp storage over a tree of 2,000 files of its own
(``--temp-dirs`` to watch another, such as the default /tmp); the peer, Debian's
prometheus-node-exporter, only the equivalent collectors (meminfo, cpu, filesystem, netdev,
pressure). Each first answers ``--scrapes`` scrapes in a row on one keep-alive connection, after
which its resident memory (VmRSS) is read.

Then, for each round, each header set and each connection count, ``wrk --latency`` (one thread
per connection, at most two) runs ``--seconds`` against ours and then the peer, the order
alternating between rounds, after a 2 s unmeasured warm-up of each in the first round. Header
sets: ``bare`` is wrk's own request (no Accept, no Accept-Encoding: both answer the text format
uncompressed); ``prometheus`` is what Prometheus sends (OpenMetrics preferred, ``Accept-Encoding:
gzip``, the scrape timeout): ours answers OpenMetrics gzipped at ISA-L's level 1, node_exporter
1.5 the text format gzipped at Go's default level. Per window: requests/s, p50 and p99 latency,
and the server's CPU per request from its ``/proc/PID/stat`` utime + stime delta.

Printed per header set and connection count: the medians over the rounds, the ratios ours/peer
of those medians (the figures README quotes), and each round's ratios (their spread).

``--footprint`` also starts ours with the database collector (a real PostgreSQL as in
tests/pg.py) and in mode azure (against tests/azure_fake.py on loopback), and reports the
resident memory of each after ``--scrapes`` scrapes.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import (  # noqa: E402
    HEADERS,
    HOST,
    PEER,
    PEER_FLAGS,
    Process,
    Run,
    started,
    temp_tree,
    wrk,
    wrk_command,
)
from tests.conftest import free_port  # noqa: E402


def scrape_many(process: Process, scrapes: int) -> tuple[int, int]:
    """``scrapes`` scrapes on one connection; (series in the last answer, its bytes)."""
    port = int(process.url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection(HOST, port, timeout=15)
    headers = {k: v for k, v in HEADERS.items() if k != "Accept-Encoding"}
    body = b""
    for _ in range(scrapes):
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, resp.status
    conn.close()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return series, len(body)


def rss_mb(process: Process) -> float:
    return float(process.status("VmRSS")) / 1024


# What wrk sends by itself (Host only), and what Prometheus sends.
HEADER_SETS: dict[str, Mapping[str, str]] = {"bare": {}, "prometheus": HEADERS}


def ours_env(temp_dirs: Path | str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXCRAWLER_")}
    env.update(
        PYTHONPATH=str(REPO),
        PIXCRAWLER_LOG_LEVEL="warning",
        PIXCRAWLER_TEMP_DIRS=str(temp_dirs),
    )
    return env


def ours_cmd() -> tuple[list[str], int]:
    port = free_port()
    return [sys.executable, "-m", "pixcrawler_exporter", "--listen", f"{HOST}:{port}"], port


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def compare(
    ours_p: Process, peer_p: Process, levels: Sequence[int], args: argparse.Namespace
) -> None:
    sets = [name.strip() for name in args.headers.split(",")]
    windows: dict[tuple[str, int, str], list[Run]] = {}
    for rnd in range(args.rounds):
        for headers in sets:
            for level in levels:
                pair = (ours_p, peer_p) if rnd % 2 == 0 else (peer_p, ours_p)
                for process in pair:
                    threads = min(level, 2)
                    if rnd == 0:
                        wrk(process, level, 2, threads, HEADER_SETS[headers])  # warm-up
                    run = wrk(process, level, args.seconds, threads, HEADER_SETS[headers])
                    windows.setdefault((headers, level, process.name), []).append(run)
    for headers in sets:
        for level in levels:
            command = wrk_command("URL", level, args.seconds, min(level, 2), HEADER_SETS[headers])
            print(f"\n## headers {headers}, {level} connection(s): {shlex.join(command)}")
            print(
                "| exporter | requests/s | p50 ms | p99 ms | CPU ms/request | errors |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: |"
            )
            ours = windows[(headers, level, ours_p.name)]
            peer = windows[(headers, level, peer_p.name)]
            for name, runs in ((peer_p.name, peer), (ours_p.name, ours)):
                print(
                    f"| {name} | {_med(runs, 'requests_per_second'):.0f} | "
                    f"{_med(runs, 'p50_ms'):.2f} | {_med(runs, 'p99_ms'):.2f} | "
                    f"{_med(runs, 'cpu_ms_per_request'):.3f} | {sum(r.errors for r in runs)} |"
                )
            fields = (
                ("requests/s", "requests_per_second"),
                ("p50", "p50_ms"),
                ("CPU/request", "cpu_ms_per_request"),
            )
            print(
                f"# headers {headers}, c={level}, ours/peer, ratio of the medians over "
                f"{len(ours)} rounds: "
                + ", ".join(f"{label} {_med(ours, f) / _med(peer, f):.2f}x" for label, f in fields)
            )
            for label, f in fields:
                each = " ".join(
                    f"{getattr(a, f) / getattr(b, f):.2f}" for a, b in zip(ours, peer, strict=True)
                )
                print(f"#   {label} round by round: {each}")


def _med(runs: Sequence[Run], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in runs))


@contextmanager
def variants(scratch: Path) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """Environments for ours: defaults, with the database, mode azure (each when possible)."""
    base = ours_env(scratch / "temp")
    found = [("defaults", base)]
    with ExitStack() as stack:
        try:
            from bench import db_scrape
            from tests.pg import PostgresServer, find_binaries
        except ImportError as exc:
            print(f"# database: skipped ({exc})")
        else:
            bindir = find_binaries()
            if bindir is None:
                print("# database: skipped (no initdb/pg_ctl)")
            else:
                pg = PostgresServer(bindir)
                stack.callback(pg.destroy)
                pg.init()
                db_scrape.seed(pg, 1000)
                found.append(("database", {**base, "PIXCRAWLER_DB_URL": pg.url}))
        try:
            from tests.azure_fake import FakeAzure, resource_id
        except ImportError as exc:
            print(f"# mode azure: skipped ({exc})")
        else:
            fake = FakeAzure(scratch / "ca.pem", "")
            fake.start()
            stack.callback(fake.stop)
            found.append(("mode azure", {**base, **fake.exporter_env(resource_id("plan"))}))
        yield found


def footprint(scratch: Path, scrapes: int) -> None:
    print(f"\n# resident memory of ours after {scrapes} scrapes")
    print("| configuration | series | RSS MB | threads |\n| --- | ---: | ---: | ---: |")
    with variants(scratch) as found:
        for label, env in found:
            cmd, port = ours_cmd()
            with started(label, cmd, env, port) as process:
                series, _ = scrape_many(process, scrapes)
                print(
                    f"| {label} | {series} | {rss_mb(process):.1f} | {process.status('Threads')} |",
                    flush=True,
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1")
    parser.add_argument("--headers", default="bare,prometheus", help="bare, prometheus or both")
    parser.add_argument("--temp-dirs", help="what ours watches (default: a 2,000-file tree)")
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--footprint", action="store_true")
    parser.add_argument("--peer", default=PEER)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.connections.split(",")]
    for tool in ("wrk", args.peer):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install wrk prometheus-node-exporter)")
            return 2
    scratch = Path(tempfile.mkdtemp(prefix="pixcrawler-scrape-"))
    try:
        temp_tree(scratch / "temp")
        env = ours_env(args.temp_dirs or scratch / "temp")
        cmd, port = ours_cmd()
        peer_port = free_port()
        peer_cmd = [args.peer, f"--web.listen-address={HOST}:{peer_port}", *PEER_FLAGS]
        print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}; load average before: {loadavg()}; "
              f"cores: {os.cpu_count()}; python {sys.version.split()[0]}")  # fmt: skip
        print(f"# ours: {shlex.join(cmd[1:])} (temp dirs {env['PIXCRAWLER_TEMP_DIRS']})")
        print(f"# peer: {shlex.join(peer_cmd)}")
        with (
            started("pixcrawler-exporter", cmd, env, port) as ours_p,
            started("node_exporter", peer_cmd, env, peer_port) as peer_p,
        ):
            for process in (ours_p, peer_p):
                series, size = scrape_many(process, args.scrapes)
                print(
                    f"# {process.name}: {series} series, {size} bytes unzipped; RSS after "
                    f"{args.scrapes} scrapes {rss_mb(process):.1f} MB"
                )
            compare(ours_p, peer_p, levels, args)
        if args.footprint:
            footprint(scratch, args.scrapes)
        print(f"# load average after: {loadavg()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
