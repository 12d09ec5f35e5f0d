"""The suite's two pytest-xdist workers share nothing they could both take (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import ONE_WORKER, free_port, xdist_scope


@pytest.mark.parametrize("worker", [0, 1])
def test_each_worker_takes_ports_from_its_own_share(
    monkeypatch: pytest.MonkeyPatch, worker: int
) -> None:
    # A port one worker picked and has not bound yet is never the one the other picks.
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert {free_port() // 2 % 2 for _ in range(40)} == {worker}


def test_the_docker_tests_and_the_pasted_blocks_run_as_one_unit() -> None:
    # One Docker engine and image for all of them; both serve on the host's port 8395.
    one = {xdist_scope(f"tests/{name}::test_x[a::b]") for name in ONE_WORKER}
    assert one == {xdist_scope("tests/test_pasted.py::test_block_works_as_pasted[README.md:18]")}
    # Every other file is a unit of its own, so its module-scoped fixtures are made once.
    assert xdist_scope("tests/test_flags.py::test_a") == xdist_scope("tests/test_flags.py::test_b")
    assert xdist_scope("tests/test_flags.py::test_a") != xdist_scope("tests/test_config.py::x")
    assert xdist_scope("tests/test_flags.py::test_a") not in one
