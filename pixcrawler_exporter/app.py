"""Wires collectors, the scraper, the status tracker and the HTTP routes together."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus

from prometheus_client.core import Metric

from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.collect.contract import Source
from pixcrawler_exporter.collect.scraper import Scraper
from pixcrawler_exporter.config import Loaded
from pixcrawler_exporter.derive import status
from pixcrawler_exporter.web import server

log = logging.getLogger(__name__)


class App:
    def __init__(self, loaded: Loaded, collectors: list[Source], cgroup_version: str) -> None:
        self.config = loaded.config
        self.scraper = Scraper(collectors)
        self.renderer = registry.Renderer(
            collectors, loaded.environment, self.config.mode, cgroup_version
        )
        self.tracker = status.StatusTracker(self.config, loaded.environment)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="status-poll", daemon=True)

    def metrics(self, timeout: float) -> Iterator[Metric]:
        snapshot = self.scraper.collect(timeout)
        yield from self.renderer.families(snapshot)
        yield from status.families(self.tracker.update(snapshot), self.config)

    def status_response(self, request: server.Request) -> server.Response:
        facts = self.tracker.update(self.scraper.collect(self._timeout(request)))
        return _json(HTTPStatus.OK, status.status_document(facts))

    def health_response(self, request: server.Request) -> server.Response:
        snapshot = self.scraper.collect(self._timeout(request))
        sources = {
            name: {"healthy": o.success, "detail": o.error or "ok"}
            for name, o in snapshot.outcomes.items()
        }
        healthy = all(o.success for o in snapshot.outcomes.values())
        doc = {
            "status": "healthy" if healthy else "degraded",
            "sources": sources,
            "timestamp": datetime.fromtimestamp(snapshot.timestamp, UTC).isoformat(),
        }
        return _json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, doc)

    def routes(self) -> dict[str, server.Route]:
        web = self.config.web
        return {
            "/metrics": server.metrics_route(
                self.metrics, web.scrape_timeout_seconds, web.scrape_timeout_offset_seconds
            ),
            "/status": server.Route(
                self.status_response, "Resource values, statuses and chunk capacity as JSON"
            ),
            "/health": server.Route(
                self.health_response,
                "Every source's health as JSON; 503 when any is failing",
            ),
            "/-/healthy": server.healthy_route(),
        }

    def start(self) -> None:
        for collector in self.scraper.collectors:
            collector.start()
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        self.scraper.close()

    def _timeout(self, request: server.Request) -> float:
        web = self.config.web
        return server.scrape_timeout(
            request.headers, web.scrape_timeout_seconds, web.scrape_timeout_offset_seconds
        )

    def _poll(self) -> None:
        # Statuses are evaluated (and changes logged) even when nobody scrapes.
        while True:
            try:
                self.tracker.update(self.scraper.collect(self.config.web.scrape_timeout_seconds))
            except Exception:
                log.exception("status evaluation failed")
            if self._stop.wait(self.config.poll_interval_seconds):
                return


def _json(code: int, doc: object) -> server.Response:
    return server.Response(code, json.dumps(doc, indent=2).encode() + b"\n", "application/json")
