"""Measurement: scrapes and shutdown against a frozen PostgreSQL (issue 21, items 1 and 2).

A real PostgreSQL (started like the tests do, see ``tests/pg.py``) holds seed 003's
``crawl_jobs`` table; the exporter under test runs from ``--repo`` (default: this checkout) with
its default collectors and the database's default queries. Each scenario freezes the database
with SIGSTOP the way a storage-stalled host or a queueing PgBouncer does (the kernel still
acknowledges, so TCP keepalives never fire):

- ``backend``: the backends serving the exporter (``pg_stat_activity.application_name =
  'pixcrawler-exporter'``) are stopped;
- ``postmaster``: the backends and the postmaster, so new connections hang too.

Reported per scrape (``X-Prometheus-Scrape-Timeout-Seconds: --timeout``): seconds to answer,
``pixcrawler_database_up`` (``absent`` when missing), ``pixcrawler_can_start_chunk`` and
``pixcrawler_can_start_chunk_known``, and the database and memory collectors' success. Then, per
scenario, SIGTERM one second into a scrape (timeout header 30 s) while frozen: seconds until the
process is gone, and its exit code (None: SIGKILLed after ``--kill-after`` seconds). Last, the
same SIGTERM while a custom query runs ``pg_sleep(20)`` (statement timeout 60 s).

    PYTHONPATH=. python bench/frozen_db.py [--repo /work/main] [--scrapes 3] [--timeout 10]

Run as root (the server runs as ``nobody``, and stopping it takes root) or as the server's user.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.conftest import free_port  # noqa: E402
from tests.pg import CRAWL_JOBS_TABLE, PostgresServer, find_binaries, stopped  # noqa: E402

HOST = "127.0.0.1"
ONE_RUNNING_JOB = "INSERT INTO crawl_jobs (status, active_chunks) VALUES ('running', 3);"


class Exporter:
    def __init__(self, repo: Path, config: Path, workdir: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXCRAWLER_")}
        env["PYTHONPATH"] = str(repo)
        self.log = workdir / f"exporter-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "pixcrawler_exporter"),
                    *("--listen", f"{HOST}:{self.port}", "--config", str(config)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.get("/-/healthy", 1)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"exporter did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def get(self, path: str, timeout: float, header: float | None = None) -> tuple[int, str]:
        headers = {} if header is None else {"X-Prometheus-Scrape-Timeout-Seconds": str(header)}
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def terminate(self, kill_after: float) -> tuple[float, int | None]:
        """SIGTERM; seconds until the process was gone, and its exit code (None: SIGKILLed)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        return time.monotonic() - start, code


def values(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in (
                "pixcrawler_database_up",
                "pixcrawler_can_start_chunk",
                "pixcrawler_can_start_chunk_known",
            ):
                out[s.name] = s.value
            elif s.name == "pixcrawler_exporter_collector_success":
                out[f"success_{s.labels['collector']}"] = s.value
    return out


def scrape(exporter: Exporter, timeout: float) -> str:
    start = time.monotonic()
    try:
        status, body = exporter.get("/metrics", timeout + 30, timeout)
    except (OSError, http.client.HTTPException) as exc:
        return f"{time.monotonic() - start:6.2f}s  failed: {exc}"
    took = time.monotonic() - start
    v = values(body)
    show = {
        "database_up": v.get("pixcrawler_database_up", "absent"),
        "can_start_chunk": v.get("pixcrawler_can_start_chunk", "absent"),
        "known": v.get("pixcrawler_can_start_chunk_known", "absent"),
        "success{database}": v.get("success_database", "absent"),
        "success{memory}": v.get("success_memory", "absent"),
    }
    return f"{took:6.2f}s  {status}  " + "  ".join(f"{k}={x}" for k, x in show.items())


def run(args: argparse.Namespace, pg: PostgresServer, workdir: Path) -> None:
    pg.execute(CRAWL_JOBS_TABLE + ONE_RUNNING_JOB)
    config = workdir / "config.yml"
    config.write_text(yaml.safe_dump({"database": {"url": pg.url}}))
    print(f"exporter from {args.repo}, scrape timeout header {args.timeout}s")
    for scenario in ("backend", "postmaster"):
        exporter = Exporter(args.repo, config, workdir)
        print(f"\n== {scenario} stopped ==")
        print("before:", scrape(exporter, args.timeout))
        pids = pg.backend_pids()
        if scenario == "postmaster":
            pids.append(pg.postmaster_pid())
        with stopped(pids):
            for i in range(args.scrapes):
                print(f"frozen {i + 1}:", scrape(exporter, args.timeout))
            took, code = terminate_during_a_scrape(exporter, args.kill_after)
            print(f"SIGTERM 1s into a scrape while frozen: exited after {took:.2f}s, code {code}")
        for _ in range(20):  # let the server notice its clients went away
            if not pg.backend_pids():
                break
            time.sleep(0.1)

    config.write_text(
        yaml.safe_dump(
            {
                "database": {
                    "url": pg.url,
                    "statement_timeout_seconds": 60,
                    "queries": [
                        {
                            "metric": "pixcrawler_slow",
                            "help": "Slow.",
                            "sql": "SELECT 1 AS v FROM pg_sleep(20)",
                            "values": ["v"],
                        }
                    ],
                }
            }
        )
    )
    exporter = Exporter(args.repo, config, workdir)
    print("\n== SIGTERM during pg_sleep(20) ==")
    took, code = terminate_during_a_scrape(exporter, args.kill_after)
    print(f"SIGTERM 1s into the scrape: exited after {took:.2f}s, code {code}")


def terminate_during_a_scrape(exporter: Exporter, kill_after: float) -> tuple[float, int | None]:
    scraper = threading.Thread(target=scrape, args=(exporter, 30.0), daemon=True)
    scraper.start()
    time.sleep(1)
    return exporter.terminate(kill_after)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=REPO, help="checkout whose exporter is measured")
    p.add_argument("--scrapes", type=int, default=3)
    p.add_argument("--timeout", type=float, default=10.0, help="the scrape timeout header")
    p.add_argument("--kill-after", type=float, default=30.0)
    args = p.parse_args(argv)
    bindir = find_binaries()
    if bindir is None:
        print("PostgreSQL server binaries (initdb, pg_ctl) are not installed", file=sys.stderr)
        return 1
    pg = PostgresServer(bindir)
    try:
        pg.init()
        with tempfile.TemporaryDirectory(prefix="frozen-db-") as workdir:
            run(args, pg, Path(workdir))
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
