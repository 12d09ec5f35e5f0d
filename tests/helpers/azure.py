"""The fake Azure for collector tests: the server, collectors built on it, and polling.

Test modules take the fixtures by importing them (their parameters then shadow the imports, as
pytest wants)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pixcrawler_exporter.collectors.azure.collector import AzureCollector
from pixcrawler_exporter.collectors.azure.model import parse_resources
from pixcrawler_exporter.collectors.azure.settings import AzureSettings
from tests.azure_fake import CLIENT_ID, CLIENT_SECRET, TENANT, FakeAzure, resource_id, start_fake

PLAN = resource_id("plan0")
# Metrics of an App Service plan, each split by instance: one call for them all.
FOUR = ["CpuPercentage", "MemoryPercentage", "BytesReceived", "HttpQueueLength"]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    server = start_fake(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    yield server
    server.stop()


@pytest.fixture
def make(fake: FakeAzure) -> Iterator[Callable[..., AzureCollector]]:
    """Build and start a collector on the fake; closed at the end of the test."""
    started: list[AzureCollector] = []

    def factory(
        resources: Any = None,
        *,
        retries: int = 2,
        backoff: float = 0.05,
        timeout: float = 2.0,
        start: bool = True,
        **fields: Any,
    ) -> AzureCollector:
        raw = resources if resources is not None else [{"id": PLAN, "metrics": FOUR}]
        values: dict[str, Any] = {
            "resources": parse_resources(raw),
            "metrics_endpoint": fake.url,
            "arm_endpoint": fake.url,  # nothing may leave loopback
            "authority_host": fake.url,
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_interval_seconds": 0.5,
            "lookback_seconds": 600.0,
            "max_age_seconds": None,
        }
        values.update(fields)
        collector = AzureCollector(
            AzureSettings(**values),
            retries=retries,
            backoff_seconds=backoff,
            timeout_seconds=timeout,
        )
        if start:
            collector.start()
        started.append(collector)
        return collector

    yield factory
    for collector in started:
        collector.close()


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")
