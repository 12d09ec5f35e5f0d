"""Where the exporter runs (seed 000): decides per-environment defaults and what users see."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

ENVIRONMENTS = ("local", "docker", "kubernetes", "azure_app_service", "azure_functions")


def detect(environ: Mapping[str, str], rootfs: Path, procfs: Path) -> str:
    """Azure first (its sandboxes are containers too), then Kubernetes, then any container."""
    if environ.get("FUNCTIONS_WORKER_RUNTIME"):
        return "azure_functions"
    if environ.get("WEBSITE_INSTANCE_ID"):
        return "azure_app_service"
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if _in_container(rootfs, procfs):
        return "docker"
    return "local"


def _in_container(rootfs: Path, procfs: Path) -> bool:
    if (rootfs / ".dockerenv").exists() or (rootfs / "run/.containerenv").exists():
        return True
    try:
        cgroup = (procfs / "1/cgroup").read_text(errors="replace")
    except OSError:
        return False
    return any(word in cgroup for word in ("/docker", "/containerd", "/libpod", "/kubepods"))


def default_temp_dir() -> str:
    """Python's temp directory (``$TMPDIR``, else ``/tmp``), even where it cannot be written."""
    try:
        return tempfile.gettempdir()
    except FileNotFoundError:
        # gettempdir() insists on a directory it can write to, and a read-only root filesystem
        # (readOnlyRootFilesystem, docker run --read-only) has none. The exporter only reads
        # this directory, so it takes the one gettempdir() tries first instead of failing.
        for name in ("TMPDIR", "TEMP", "TMP"):
            if value := os.environ.get(name):
                return value
        return "/tmp"
