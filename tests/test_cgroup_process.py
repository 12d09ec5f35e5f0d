"""cgroup_process on this machine: the exporter reads another process's real cgroup.

A "crawler" is started in a limited cgroup of its own (as a container is), holding anonymous
memory; the exporter, in the test's cgroup, finds it by its command line and reads its cgroup
through /proc/PID/root. The same as a sidecar does in a shared PID namespace, without a
container engine: tests/test_container.py does it under Docker.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import Exporter, need, sample
from tests.helpers.realcgroup import CPU_PERIOD_US, CPU_QUOTA_US, joiner, new_cgroup
from tests.helpers.wait import wait_until

MiB = 2**20
HELD = 96 * MiB  # what the crawler holds as anonymous memory
QUIET = {"PIXCRAWLER_COLLECTOR_TEMP_STORAGE": "false"}
# Allocates, says so, and holds it until killed. Bytes written, so every page is really there.
PR_SET_SECUREBITS, SECBIT_NOROOT, SECBIT_NOROOT_LOCKED = 28, 1, 2
CRAWLER = (
    "import sys, time; held = b'x' * int(sys.argv[1]); print('ready', flush=True); time.sleep(600)"
)


def without_capabilities() -> None:
    """As root, but with no capability after exec (securebits NOROOT): what the kernel's
    ptrace rules then allow is what an unprivileged container gets. Root keeps the test's
    Python reachable (its interpreter may sit below a directory only root may enter)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECUREBITS)")


@contextmanager
def crawler(
    memory_limit: int,
    marker: str,
    then: Callable[[], None] | None = None,
    command: list[str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """A process holding HELD bytes in a new cgroup limited to ``memory_limit`` and half a
    core, with ``marker`` on its command line; ``then`` runs in it before exec."""
    with new_cgroup(memory_limit) as (dirs, _):
        join = joiner(dirs)

        def start() -> None:
            join()
            if then is not None:
                then()

        proc = subprocess.Popen(
            command or [sys.executable, "-c", CRAWLER, str(HELD), marker],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=start,
            cwd="/",
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            yield proc
        finally:
            proc.kill()
            proc.wait()


def marker() -> str:
    return f"pixcrawler-test-crawler-{uuid.uuid4().hex[:12]}"


def test_the_matching_process_cgroup_is_watched_and_the_exporters_own_apart(
    exporter_factory: Callable[..., Exporter],
) -> None:
    name = marker()
    with crawler(512 * MiB, name) as proc:
        exp = exporter_factory(env={**QUIET, "PIXCRAWLER_CGROUP_PROCESS": name})
        samples = exp.scrape()
        assert sample(samples, "pixcrawler_exporter_collector_success", collector="memory") == 1
        # The crawler's limits and memory, not the exporter's.
        assert sample(samples, "pixcrawler_memory_limit_bytes") == 512 * MiB
        assert sample(samples, "pixcrawler_cpu_limit_cores") == CPU_QUOTA_US / CPU_PERIOD_US
        held = sample(samples, "pixcrawler_memory_unreclaimable_bytes")
        assert held is not None and HELD <= held < HELD + 32 * MiB
        ratio = sample(samples, "pixcrawler_resource_usage_ratio", resource="memory")
        assert ratio == pytest.approx(held / (512 * MiB), rel=0.05)
        # The exporter's own container stays visible, as its own figures.
        own = sample(samples, "pixcrawler_exporter_memory_working_set_bytes")
        assert own is not None and own > 5 * MiB
        assert sample(samples, "pixcrawler_exporter_memory_limit_bytes") is not None
        assert sample(samples, "pixcrawler_exporter_cpu_usage_seconds_total") is not None
        assert sample(samples, "pixcrawler_exporter_cpu_limit_cores") is not None
        assert f"watching the cgroup of process {proc.pid} (python" in exp.log()


def test_a_restarted_crawler_is_found_again_and_none_reads_as_failed(
    exporter_factory: Callable[..., Exporter],
) -> None:
    name = marker()
    with crawler(512 * MiB, name):
        exp = exporter_factory(env={**QUIET, "PIXCRAWLER_CGROUP_PROCESS": name})
        assert sample(exp.scrape(), "pixcrawler_memory_limit_bytes") == 512 * MiB
    # Gone: not the host's memory, not the exporter's, but a failed collector saying why.
    samples = exp.scrape()
    for collector in ("memory", "cpu"):
        assert sample(samples, "pixcrawler_exporter_collector_success", collector=collector) == 0
    assert sample(samples, "pixcrawler_memory_limit_bytes") is None
    assert sample(samples, "pixcrawler_resource_status", resource="memory") is None
    status, _, body = exp.get("/health")
    assert status == 503 and b"no process outside the exporter's container matches" in body
    # Back, in a new cgroup with another limit (a restarted container).
    with crawler(384 * MiB, name):
        wait_until(
            "the restarted crawler's limit",
            lambda: sample(exp.scrape(), "pixcrawler_memory_limit_bytes") == 384 * MiB,
            10,
            exp.log,
        )


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.parametrize(
    ("crawler_as", "allowed", "why"),
    [
        pytest.param(without_capabilities, True, "", id="same-user"),
        pytest.param(
            None, False, "it holds capabilities the exporter lacks (CapPrm ", id="root-with-caps"
        ),
        pytest.param(
            as_nobody,
            False,
            "it runs as UID 65534 GID 65534, the exporter as UID 0 GID 0; the kernel allows "
            "it for the same UID and GID only",
            id="another-user",
        ),
    ],
)
def test_only_the_crawlers_own_user_may_read_its_cgroup(
    exporter_factory: Callable[..., Exporter],
    crawler_as: Callable[[], None] | None,
    allowed: bool,
    why: str,
) -> None:
    need(os.geteuid() == 0, "changing users and capabilities needs root")
    name = marker()
    # The crawler as nobody runs sh (this Python may be out of nobody's reach); its command
    # line matches all the same.
    command = (
        ["sh", "-c", "echo ready; while :; do sleep 1; done", name]
        if crawler_as is as_nobody
        else None
    )
    with crawler(512 * MiB, name, crawler_as, command) as proc:
        exp = exporter_factory(
            env={**QUIET, "PIXCRAWLER_CGROUP_PROCESS": name}, preexec=without_capabilities
        )
        samples = exp.scrape()
        success = sample(samples, "pixcrawler_exporter_collector_success", collector="memory")
        if allowed:
            assert success == 1
            assert sample(samples, "pixcrawler_memory_limit_bytes") == 512 * MiB
            return
        # Never the exporter's own or the host's figures instead: failed, saying how to fix it.
        assert success == 0
        assert sample(samples, "pixcrawler_memory_limit_bytes") is None
        _, _, body = exp.get("/health")
        text = body.decode()
        assert f"may not read process {proc.pid} (" in text and why in text, text
        assert name not in text  # the command line (which may hold a password) is never shown
