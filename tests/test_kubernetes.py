"""deploy/kubernetes: manifests the exporter accepts, no series exported twice, current rules.

No cluster runs here, so the manifests are checked against the exporter itself: every argument
parses with its command line, every variable is one it reads, and the collectors the
cluster-wide instance and the per-pod sidecars turn on do not overlap.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from pixcrawler_exporter import __version__, cli, config
from tests.conftest import REPO, need

DEPLOY = REPO / "deploy" / "kubernetes"
EXPORTER_IMAGE = "pixcrawler-exporter"
# Variables the crawler's own containers use; only the exporter's are checked.
CLUSTER_WIDE = {"database", "celery", "azure"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def exporter_containers(kind_name: str) -> list[dict[str, Any]]:
    (deployment,) = [
        d for d in documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == kind_name
    ]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return [c for c in containers if c["image"].split(":")[0] == EXPORTER_IMAGE]


def enabled_collectors(container: dict[str, Any]) -> set[str]:
    args = cli.parser().parse_args(container.get("args", []))
    flags = {spec.key: vars(args).get(spec.key) for spec in config.specs()}
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    env["PIXCRAWLER_DB_URL"] = "postgresql://u@h/db"  # from a Secret in the cluster
    loaded = config.load(env, flags, dotenv_path="/nonexistent/.env")
    return {name for name, on in loaded.config.collectors.enabled().items() if on}


def test_manifests_have_what_the_issue_lists() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds.count("Deployment") == 2
    assert kinds.count("Service") == 2
    assert kinds.count("ServiceMonitor") == 2
    assert "PrometheusRule" in kinds


@pytest.mark.parametrize("deployment", ["pixcrawler-exporter", "pixcrawler-worker"])
def test_exporter_containers_are_ones_the_exporter_accepts(deployment: str) -> None:
    (container,) = exporter_containers(deployment)
    assert container["image"] == f"{EXPORTER_IMAGE}:{__version__}"
    cli.parser().parse_args(container.get("args", []))  # SystemExit on a misspelt flag
    known = config.env_names()
    assert {e["name"] for e in container.get("env", [])} <= known
    (port,) = container["ports"]
    assert port["containerPort"] == config.DEFAULT_PORT
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True


def test_no_series_is_exported_twice() -> None:
    (cluster,) = exporter_containers("pixcrawler-exporter")
    (sidecar,) = exporter_containers("pixcrawler-worker")
    cluster_on, sidecar_on = enabled_collectors(cluster), enabled_collectors(sidecar)
    assert cluster_on == CLUSTER_WIDE
    assert not cluster_on & sidecar_on
    assert cluster_on | sidecar_on == set(config.Collectors().enabled())
    (deployment,) = [
        d
        for d in documents()
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "pixcrawler-exporter"
    ]
    assert deployment["spec"]["replicas"] == 1


def test_service_monitors_set_the_job_the_rules_select() -> None:
    for monitor in [d for d in documents() if d["kind"] == "ServiceMonitor"]:
        (endpoint,) = monitor["spec"]["endpoints"]
        assert {"targetLabel": "job", "replacement": "pixcrawler"} in endpoint["relabelings"]


def test_prometheus_rule_is_generated_from_the_rules_file() -> None:
    generator = DEPLOY / "prometheusrule.py"
    spec = importlib.util.spec_from_file_location("prometheusrule", generator)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rules: Path = module.RULES
    need(rules.exists(), f"{rules.relative_to(REPO)} does not exist yet")
    current = (DEPLOY / "prometheusrule.yaml").read_text()
    assert current == module.render(rules.read_text()), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run "
        "python deploy/kubernetes/prometheusrule.py"
    )
