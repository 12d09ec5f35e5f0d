"""Capacity arithmetic, threshold statuses, the status loop's log lines and /status."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from pixcrawler_exporter import config
from pixcrawler_exporter.derive import thresholds
from pixcrawler_exporter.derive.capacity import MIB, capacity
from pixcrawler_exporter.derive.resources import RESOURCES, Resource
from pixcrawler_exporter.derive.status import Facts, Pipeline, status_document
from pixcrawler_exporter.derive.thresholds import Status, evaluate, evaluate_all
from tests.conftest import Exporter, run_cli, sample


def capacity_config(tmp_path: Path, **environ: str) -> config.Capacity:
    return config.load(environ, dotenv_path=tmp_path / ".env").config.capacity


@pytest.mark.parametrize(
    ("environ", "max_concurrent", "max_mb", "by_storage", "effective"),
    [
        ({"PIXCRAWLER_ENVIRONMENT": "local"}, 35, 20000, 80, 35),
        ({"PIXCRAWLER_ENVIRONMENT": "docker"}, 35, 20000, 80, 35),
        # Seed 000's own example: 8000 MB / 0.5 MB / 500 = 32 chunks by storage.
        ({"PIXCRAWLER_ENVIRONMENT": "azure"}, 35, 8000, 32, 32),
        ({"WEBSITE_INSTANCE_ID": "x"}, 35, 8000, 32, 32),
        ({"FUNCTIONS_WORKER_RUNTIME": "python"}, 10, 400, 1, 1),
        # Explicit settings win over the environment's defaults, seed-003 aliases included.
        (
            {"PIXCRAWLER_ENVIRONMENT": "azure_functions", "PIXCRAWLER_MAX_TEMP_STORAGE_MB": "4000"},
            10,
            4000,
            16,
            10,
        ),
        (
            {"PIXCRAWLER_ENVIRONMENT": "azure", "PIXCRAWLER_RESOURCE_MAX_CONCURRENT_CHUNKS": "20"},
            20,
            8000,
            32,
            20,
        ),
        (
            {
                "PIXCRAWLER_RESOURCE_CHUNK_SIZE_IMAGES": "1000",
                "PIXCRAWLER_ESTIMATED_IMAGE_SIZE_MB": "1",
            },
            35,
            20000,
            20,
            20,
        ),
    ],
)
def test_capacity_per_environment(
    tmp_path: Path,
    environ: dict[str, str],
    max_concurrent: int,
    max_mb: float,
    by_storage: int,
    effective: int,
) -> None:
    cfg = capacity_config(tmp_path, **environ)
    assert (cfg.max_concurrent_chunks, cfg.max_temp_storage_mb) == (max_concurrent, max_mb)
    c = capacity(cfg, None, None)
    assert (c.max_by_storage, c.effective_max) == (by_storage, effective)
    assert (c.active, c.available, c.utilization, c.can_start) == (None, None, None, None)


def test_capacity_with_active_chunks(tmp_path: Path) -> None:
    cfg = capacity_config(tmp_path, PIXCRAWLER_ENVIRONMENT="azure")  # effective max 32
    chunk = 500 * 0.5 * MIB
    c = capacity(cfg, 8, 0)
    assert (c.available, c.utilization, c.can_start) == (24, 0.25, True)
    # A free slot but not enough temp storage for one more chunk.
    c = capacity(cfg, 8, int(8000 * MIB - chunk + 1))
    assert (c.available, c.can_start) == (24, False)
    c = capacity(cfg, 8, int(8000 * MIB - chunk))
    assert c.can_start is True
    # Over-committed: available never below 0, utilization above 1.
    c = capacity(cfg, 40, 0)
    assert (c.available, c.utilization, c.can_start) == (0, 1.25, False)
    # Active count known, temp usage unknown: no made-up answer to "can one start".
    assert capacity(cfg, 8, None).can_start is None


def test_threshold_evaluation() -> None:
    assert evaluate(None, 0.8, 0.9) is None
    assert evaluate(0.79, 0.8, 0.9) is Status.OK
    assert evaluate(0.8, 0.8, 0.9) is Status.WARNING
    assert evaluate(0.9, 0.8, 0.9) is Status.ALERT
    t = config.Config().thresholds
    result = evaluate_all({"disk": 0.85, "memory": 0.1, "chunks": 41}, t)
    assert result["disk"].status is Status.WARNING and result["disk"].threshold == 0.8
    assert result["chunks"].status is Status.ALERT and result["chunks"].threshold == 40
    assert result["cpu"].status is None
    assert result["overall"].status is Status.ALERT


def test_percent_variables_become_ratios(tmp_path: Path) -> None:
    cfg = config.load(
        {
            "PIXCRAWLER_DISK_THRESHOLD_WARN": "70",
            "PIXCRAWLER_DISK_THRESHOLD_ALERT": "85.5",
            "PIXCRAWLER_CHUNK_THRESHOLD_WARN": "30",
        },
        dotenv_path=tmp_path / ".env",
    ).config
    assert (cfg.thresholds.disk.warning, cfg.thresholds.disk.critical) == (0.7, 0.855)
    assert cfg.thresholds.chunks.warning == 30
    f = tmp_path / "c.yml"
    f.write_text("thresholds:\n  memory: {warning: 0.5, critical: 0.6}\n")
    cfg = config.load({}, config_file=str(f), dotenv_path=tmp_path / ".env").config
    assert (cfg.thresholds.memory.warning, cfg.thresholds.memory.critical) == (0.5, 0.6)


@pytest.mark.parametrize(
    ("variable", "value", "form"),
    [
        ("PIXCRAWLER_DISK_THRESHOLD_WARN", "0.8", "write 80 for 80%"),
        ("PIXCRAWLER_MEMORY_THRESHOLD_ALERT", "0.95", "write 95 for 95%"),
        ("PIXCRAWLER_TEMP_STORAGE_THRESHOLD_WARN", "1", "write 100 for 100%"),
        ("PIXCRAWLER_CPU_THRESHOLD_WARN", "0.05", "write 5 for 5%"),
        ("PIXCRAWLER_ALERT_FILL_FLOOR_PERCENT", "0.5", "write 50 for 50%"),
    ],
)
def test_a_ratio_in_a_percent_variable_is_refused_with_exit_2(
    tmp_path: Path, variable: str, value: str, form: str
) -> None:
    # Seed 001's variables take percent: 0.8 would silently be 0.8%, and every alert fire.
    # The exporter itself and --print-config load the same way; the disk case runs them too.
    forms = [("rules",), ("--print-config",), ()] if variable.startswith("PIXCRAWLER_DISK") else []
    for args in [("rules",), *forms]:
        done = run_cli(tmp_path, *args, env={variable: value})
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines  # one line, no traceback
        assert variable in lines[0] and f"'{value}'" in lines[0], lines[0]
        assert "percent" in lines[0] and form in lines[0], lines[0]
    assert run_cli(tmp_path, "rules", env={variable: "85"}).returncode == 0


def test_warning_above_critical_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        config.ConfigError,
        match=r"thresholds.cpu.warning \(0.96, from env PIXCRAWLER_CPU_THRESHOLD_WARN\) "
        r"is above thresholds.cpu.critical",
    ):
        config.load({"PIXCRAWLER_CPU_THRESHOLD_WARN": "96"}, dotenv_path=tmp_path / ".env")
    with pytest.raises(
        config.ConfigError,
        match=r"PIXCRAWLER_MEMORY_THRESHOLD_WARN: '180' is not valid; "
        r"expected a number from 0 to 100 \(percent\)",
    ):
        config.load({"PIXCRAWLER_MEMORY_THRESHOLD_WARN": "180"}, dotenv_path=tmp_path / ".env")


@pytest.mark.slow
def test_memory_warning_is_logged_once_over_several_polls(
    exporter_factory: Callable[..., Exporter],
) -> None:
    exp = exporter_factory(
        env={
            # 0 %: below any real usage (0.001 would be refused as a ratio written as percent)
            "PIXCRAWLER_MEMORY_THRESHOLD_WARN": "0",
            "PIXCRAWLER_POLL_INTERVAL_SECONDS": "1",
            # Only memory may change status: a loaded machine's CPU (near 100 % of the host
            # here) and its disk would log status lines of their own that this test is not about.
            "PIXCRAWLER_COLLECTOR_CPU": "false",
            "PIXCRAWLER_COLLECTOR_DISK": "false",
        }
    )
    time.sleep(4.5)  # five polls
    lines = [line for line in exp.log().splitlines() if "RESOURCE" in line]
    assert len([line for line in lines if "RESOURCE WARNING: memory at" in line]) == 1, lines
    assert "(warning threshold 0.0%)" in lines[0]
    assert not [line for line in lines if "RESOURCE OK" in line]
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_resource_status", resource="memory") == 1
    overall = sample(samples, "pixcrawler_resource_status", resource="overall")
    assert overall is not None and overall >= 1
    assert sample(samples, "pixcrawler_threshold", resource="memory", severity="warning") == 0


@pytest.mark.slow
def test_json_log_format(exporter_factory: Callable[..., Exporter]) -> None:
    exp = exporter_factory(
        "--log-format",
        "json",
        env={
            "PIXCRAWLER_MEMORY_THRESHOLD_WARN": "0",
            "PIXCRAWLER_POLL_INTERVAL_SECONDS": "1",
        },
    )
    time.sleep(1.5)
    records = [json.loads(line) for line in exp.log().splitlines() if line.startswith("{")]
    warning = next(r for r in records if r["message"].startswith("RESOURCE WARNING"))
    assert warning["level"] == "WARNING"
    assert warning["resource"] == "memory" and warning["status"] == "WARNING"
    assert warning["threshold"] == 0 and 0 < warning["value"] <= 1
    assert {"timestamp", "logger"} <= warning.keys()


def test_status_document_shape(exporter_factory: Callable[..., Exporter]) -> None:
    exp = exporter_factory()
    status, headers, body = exp.get("/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert set(doc) == {"metrics", "statuses", "capacity", "pipeline", "last_updated"}
    assert set(doc["metrics"]) == {
        "disk_pct",
        "memory_pct",
        "cpu_pct",
        "temp_storage_mb",
        "active_chunks",
    }
    assert set(doc["statuses"]) == {"disk", "memory", "cpu", "temp_storage", "chunks", "overall"}
    assert set(doc["capacity"]) == {
        "active_chunks",
        "max_chunks",
        "available",
        "utilization",
        "environment",
        "can_start_chunk",
    }
    assert 0 < doc["metrics"]["memory_pct"] <= 100
    assert doc["statuses"]["memory"] == "OK"
    # No database configured: unknown, not a made-up zero.
    assert doc["metrics"]["active_chunks"] is None and doc["capacity"]["can_start_chunk"] is None
    assert doc["statuses"]["chunks"] is None
    assert doc["capacity"]["max_chunks"] == 35
    datetime.fromisoformat(doc["last_updated"])
    # /metrics renders the same reading: the memory ratio agrees.
    samples = exp.scrape()
    assert sample(samples, "pixcrawler_chunks_effective_max") == 35
    assert sample(samples, "pixcrawler_chunks_available") is None
    assert sample(samples, "pixcrawler_can_start_chunk") is None
    # And never will be without a database: not "unknown" for ever, which would page.
    assert sample(samples, "pixcrawler_can_start_chunk_known") is None


def test_status_utilization_is_percent_as_seed_003(tmp_path: Path) -> None:
    cfg = capacity_config(tmp_path)  # 35 chunks at most
    values: dict[Resource, float | None] = dict.fromkeys(RESOURCES)
    no_pipeline = Pipeline.of(None)
    facts = Facts(values, None, {}, capacity(cfg, 25, 0), "azure_app_service", 0.0, no_pipeline)
    block = status_document(facts)["capacity"]
    assert block["utilization"] == 71.4  # seed 003's get_capacity_info for 25 of 35
    assert (block["active_chunks"], block["max_chunks"], block["available"]) == (25, 35, 10)
    unknown = Facts(values, None, {}, capacity(cfg, None, None), "local", 0.0, no_pipeline)
    assert status_document(unknown)["capacity"]["utilization"] is None
    # Without the celery collector the pipeline block says unknown, not 0.
    assert set(status_document(unknown)["pipeline"].values()) == {None}


def test_usage_ratio_is_exactly_the_evaluated_value(tmp_path: Path) -> None:
    thresholds_cfg = config.load({}, dotenv_path=tmp_path / ".env").config.thresholds
    values: dict[Resource, float | None] = {
        "disk": 0.5,
        "memory": 0.925,
        "cpu": None,
        "temp_storage": 1.5,
        "chunks": 12,
    }
    evaluations = evaluate_all(values, thresholds_cfg)
    fams = {f.name: f for f in thresholds.families(evaluations, thresholds_cfg)}
    ratios = {
        s.labels["resource"]: s.value for s in fams["pixcrawler_resource_usage_ratio"].samples
    }
    # cpu unknown: absent, not 0; chunks are a count, exported as pixcrawler_chunks_active.
    assert ratios == {"disk": 0.5, "memory": 0.925, "temp_storage": 1.5}
    statuses = {s.labels["resource"]: s.value for s in fams["pixcrawler_resource_status"].samples}
    assert statuses["memory"] == Status.ALERT and statuses["temp_storage"] == Status.ALERT
