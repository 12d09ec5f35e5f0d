"""deploy/kubernetes: manifests the exporter accepts, no series exported twice, current rules.

No cluster runs here, so the manifests are checked against the exporter itself: every argument
parses with its command line, every variable is one it reads, and the collectors the
cluster-wide instance and the per-pod sidecars turn on do not overlap.
"""

from __future__ import annotations

import importlib.util
import re
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


def pod_spec(kind_name: str) -> dict[str, Any]:
    (deployment,) = [
        d for d in documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == kind_name
    ]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def exporter_containers(kind_name: str) -> list[dict[str, Any]]:
    containers = pod_spec(kind_name)["containers"]
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


# The "restricted" Pod Security Standard (kubernetes.io/docs/concepts/security/
# pod-security-standards), which Pod Security Admission enforces per namespace: its controls
# that a pod spec can break, as of Kubernetes 1.30.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the restricted profile refuses in ``pod``: an empty list when it admits it."""
    found: list[str] = []
    pod_security = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"spec.{key}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    for sysctl in pod_security.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    containers = [
        *pod.get("initContainers", []), *pod["containers"], *pod.get("ephemeralContainers", [])
    ]  # fmt: skip
    for c in containers:
        where = f"container {c['name']}"
        own = c.get("securityContext", {})
        merged = {**pod_security, **own}
        if own.get("privileged"):
            found.append(f"{where}: privileged")
        caps = own.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{where}: capabilities.drop lacks ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities.add {caps['add']}")
        if own.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        if merged.get("runAsNonRoot") is not True:
            found.append(f"{where}: runAsNonRoot is not true")
        if merged.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        if merged.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
        if merged.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount")
        if merged.get("appArmorProfile", {}).get("type") == "Unconfined":
            found.append(f"{where}: appArmorProfile Unconfined")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{where}: hostPort")
    return found


def test_restricted_violations_sees_what_it_checks() -> None:
    bad = {
        "hostPID": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}],
    }
    found = "\n".join(restricted_violations(bad))
    for word in ("hostPID", "hostPath", "SYS_PTRACE", "drop lacks ALL", "runAsNonRoot"):
        assert word in found, word


@pytest.mark.parametrize("deployment", ["pixcrawler-exporter", "pixcrawler-worker"])
def test_pods_pass_the_restricted_pod_security_standard(deployment: str) -> None:
    # The sidecar reads the worker's cgroup without hostPath, hostPID or an added capability.
    assert restricted_violations(pod_spec(deployment)) == []


def test_the_sidecar_watches_the_workers_process() -> None:
    pod = pod_spec("pixcrawler-worker")
    assert pod["shareProcessNamespace"] is True
    (exporter,) = exporter_containers("pixcrawler-worker")
    (worker,) = [c for c in pod["containers"] if c["name"] != exporter["name"]]
    env = {e["name"]: e["value"] for e in exporter["env"] if "value" in e}
    command = " ".join(worker["command"] + worker.get("args", []))
    assert re.search(env["PIXCRAWLER_CGROUP_PROCESS"], command)
    # One user and group for both, set for the pod, which neither container overrides.
    for c in (exporter, worker):
        assert not {"runAsUser", "runAsGroup"} & set(c.get("securityContext", {}))
    assert {"runAsUser", "runAsGroup"} <= set(pod["securityContext"])


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
