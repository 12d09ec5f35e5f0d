"""The deployment recipes in deploy/: validated by promtool and amtool, the compose file by
structure (no Docker engine runs here) and by what its mounts and addresses point at."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from pixcrawler_exporter.artifacts import rules
from tests.conftest import REPO, need_tool

DEPLOY = REPO / "deploy"
SERVICES = {"exporter", "postgres", "prometheus", "alertmanager", "grafana"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def bind_mounts(service: str) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of the service's bind mounts; named volumes left out."""
    found = []
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            found.append(((DEPLOY / source).resolve(), PurePosixPath(target)))
    return found


def materialize(service: str, root: Path) -> None:
    """Lay the service's bind mounts out below ``root`` as the container would see them."""
    for source, target in bind_mounts(service):
        dest = root / target.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)


def test_compose_has_the_services_and_its_mounts_exist() -> None:
    doc = compose()
    assert set(doc["services"]) == SERVICES
    for name in SERVICES:
        for source, target in bind_mounts(name):
            assert source.exists(), f"{name} mounts {source}, which does not exist"
            assert target.is_absolute()
        for volume in doc["services"][name].get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in doc["volumes"], f"{name}: named volume {source} is not declared"
    for name, spec in doc["services"].items():
        for dep in spec.get("depends_on", []):
            assert dep in SERVICES, (name, dep)
    build = doc["services"]["exporter"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"
    assert (REPO / "Dockerfile").is_file()


def test_compose_provisions_the_shipped_dashboard_and_rules() -> None:
    grafana = dict((str(t), s) for s, t in bind_mounts("grafana"))
    dashboards = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/pixcrawler.yml").read_text()
    )
    path = PurePosixPath(dashboards["providers"][0]["options"]["path"])
    mounted = grafana[str(path / "pixcrawler-exporter.json")]
    assert mounted == REPO / "grafana" / "pixcrawler-exporter.json"
    assert grafana["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose()["services"]["prometheus"]["ports"]


def test_prometheus_scrapes_the_exporter_service_as_the_rules_job() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == rules.DEFAULT_JOB]
    assert job["static_configs"][0]["targets"] == ["exporter:8395"]
    assert "8395:8395" in compose()["services"]["exporter"]["ports"]
    interval = float(job["scrape_interval"].rstrip("s"))
    timeout = float(job["scrape_timeout"].rstrip("s"))
    assert 0 < timeout < interval
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]


def test_promtool_check_config_with_the_compose_mounts(tmp_path: Path) -> None:
    materialize("prometheus", tmp_path)
    done = subprocess.run(
        [need_tool("promtool"), "check", "config", str(tmp_path / "etc/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = (REPO / "rules" / "pixcrawler-exporter.rules.yml").read_text()
    count = sum(len(g["rules"]) for g in yaml.safe_load(shipped)["groups"])
    # The rules file is found where the compose file mounts it, not just syntactically valid.
    assert f"SUCCESS: {count} rules found" in done.stdout + done.stderr


def test_amtool_check_config() -> None:
    done = subprocess.run(
        [need_tool("amtool"), "check-config", str(DEPLOY / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("labels", "receiver", "integrations"),
    [
        (["severity=critical"], "critical", {"email_configs", "slack_configs", "webhook_configs"}),
        (["severity=warning"], "warning", {"slack_configs", "webhook_configs"}),
        ([], "webhook", {"webhook_configs"}),
    ],
)
def test_alertmanager_routes_by_severity(
    labels: list[str], receiver: str, integrations: set[str]
) -> None:
    done = subprocess.run(
        [
            need_tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={DEPLOY / 'alertmanager.yml'}",
            "alertname=PixCrawlerMemoryUsageHigh",
            *labels,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver
    config = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    (found,) = [r for r in config["receivers"] if r["name"] == receiver]
    assert set(found) - {"name"} == integrations


def test_alertmanager_secrets_are_compose_secrets() -> None:
    text = (DEPLOY / "alertmanager.yml").read_text()
    doc = compose()
    attached = set(doc["services"]["alertmanager"]["secrets"])
    for name in ("smtp_password", "slack_webhook_url"):
        assert f"/run/secrets/{name}" in text
        assert name in attached and name in doc["secrets"]
