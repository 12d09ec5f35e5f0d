"""Wires collectors, the scraper, the status tracker and the HTTP routes together, and swaps them
whole when the configuration is reloaded."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http import HTTPStatus

from prometheus_client.core import Metric

from pixcrawler_exporter import __version__, logs
from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.collect.contract import ReportsServices, Source
from pixcrawler_exporter.collect.scraper import Outcome, Scraper
from pixcrawler_exporter.config import Config, ConfigError, Loaded
from pixcrawler_exporter.derive import status
from pixcrawler_exporter.web import landing, server

log = logging.getLogger(__name__)

# Sections and settings a reload cannot change: the HTTP server is bound and its limits set, and
# the cgroup found, once at start. A reload that changes one logs it and keeps the running value.
RESTART_ONLY = ("web", "paths", "cgroup_path", "cgroup_process")
# Something besides the configuration that a reload reads again (the web config file): called
# first, it reads and checks, raising ConfigError to refuse the reload; what it returns puts the
# result into use, called only once the whole reload has succeeded.
Reloadable = Callable[[], Callable[[], None]]
_RELOAD_BUSY = server.Response(
    HTTPStatus.SERVICE_UNAVAILABLE,
    b"A reload is under way; retry later\n",
    headers={"Retry-After": "1"},
)


class _Generation:
    """One configuration and everything built from it. A request uses one generation from start
    to end, so a scrape during a reload answers wholly from the old configuration or the new."""

    scraper: Scraper
    tracker: status.StatusTracker

    def __init__(self, loaded: Loaded, built: registry.Built, previous: _Generation | None) -> None:
        cfg = loaded.config
        self.loaded = loaded
        self.config = cfg
        self.built = built
        self.scraper = Scraper(built.collectors, previous.scraper if previous else None)
        self.renderer = registry.Renderer(
            built.collectors, loaded.environment, cfg.mode, built.layout.version
        )
        self.tracker = (
            previous.tracker.successor(cfg, loaded.environment)
            if previous is not None
            else status.StatusTracker(cfg, loaded.environment)
        )
        self.loaded_at = time.time()
        # Cleared when a later reload is refused: this generation then stays in use.
        self.reload_ok = True
        self.users = 0
        # Set when a reload replaced this generation: what to release once nobody uses it.
        self.on_idle: Callable[[], None] | None = None


class App:
    def __init__(
        self,
        loaded: Loaded,
        built: registry.Built,
        reload_source: Callable[[], Loaded] | None = None,
    ) -> None:
        self._gen = _Generation(loaded, built, None)
        self._lock = threading.Lock()  # guards _gen and every generation's users
        self._reloading = threading.Lock()
        self._draining: list[_Generation] = []  # replaced, with scrapes still under way
        self._reload_source = reload_source
        self._also: list[Reloadable] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="status-poll", daemon=True)

    def also_reload(self, prepare: Reloadable) -> None:
        """Have every reload also run ``prepare`` (see Reloadable)."""
        self._also.append(prepare)

    @property
    def config(self) -> Config:
        return self._gen.config

    @contextmanager
    def _use(self) -> Iterator[_Generation]:
        with self._lock:
            gen = self._gen
            gen.users += 1
        try:
            yield gen
        finally:
            with self._lock:
                gen.users -= 1
                release = gen.on_idle if gen.users == 0 else None
                if release is not None:
                    gen.on_idle = None
                    self._draining.remove(gen)
            if release is not None:
                _retire(release)

    def metrics(self, timeout: float) -> Iterator[Metric]:
        with self._use() as gen:
            snapshot = gen.scraper.collect(timeout)
            yield from gen.renderer.families(snapshot)
            yield from status.families(gen.tracker.update(snapshot), gen.config)
            yield registry.RELOAD_OK.value(1 if gen.reload_ok else 0)
            yield registry.RELOAD_TIME.value(gen.loaded_at)

    def status_response(self, request: server.Request) -> server.Response:
        with self._use() as gen:
            facts = gen.tracker.update(gen.scraper.collect(self._timeout(request)))
        return _json(HTTPStatus.OK, status.status_document(facts))

    def health_response(self, request: server.Request) -> server.Response:
        with self._use() as gen:
            snapshot = gen.scraper.collect(self._timeout(request))
        sources = {
            name: {"healthy": o.success, "detail": o.error or "ok"}
            for name, o in snapshot.outcomes.items()
        }
        services = {
            name: {"healthy": why is None, "detail": why or "ok"}
            for collector in gen.scraper.collectors
            for name, why in _services(collector, snapshot.outcomes[collector.name]).items()
        }
        healthy = all(o.success for o in snapshot.outcomes.values()) and all(
            s["healthy"] for s in services.values()
        )
        doc = {
            "status": "healthy" if healthy else "degraded",
            "sources": sources,
            # Seed 002's shape: each service healthy or not, whichever source answers for it.
            "services": services,
            "timestamp": datetime.fromtimestamp(snapshot.timestamp, UTC).isoformat(),
        }
        return _json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, doc)

    def reload_response(self, _request: server.Request) -> server.Response:
        # Beyond the reload in flight, an answer at once: a queue of posters would hold the
        # request slots that scrapes need.
        if not self._reloading.acquire(blocking=False):
            return _RELOAD_BUSY
        try:
            error = self._reload()
        finally:
            self._reloading.release()
        if error is None:
            return server.Response(HTTPStatus.OK, b"")
        body = f"failed to reload config: {error}\n".encode()
        return server.Response(HTTPStatus.INTERNAL_SERVER_ERROR, body)

    def routes(self) -> dict[str, server.Route]:
        web = self.config.web
        routes = {
            web.telemetry_path: server.metrics_route(
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
        if web.enable_lifecycle:
            routes["/-/reload"] = server.Route(
                self.reload_response, "POST: reload the configuration", methods=("POST", "PUT")
            )
        links = {path: route.description for path, route in routes.items()}
        routes["/"] = server.Route(
            lambda request: self.landing_response(request, links),
            "Statuses, capacity and each collector's health, for a browser",
        )
        return routes

    def landing_response(self, request: server.Request, links: dict[str, str]) -> server.Response:
        with self._use() as gen:
            snapshot = gen.scraper.collect(self._timeout(request))
            facts = gen.tracker.update(snapshot)
            page = landing.Page(__version__, links, gen.reload_ok, gen.loaded_at)
            return landing.response(facts, snapshot, gen.config, page)

    def start(self) -> None:
        for collector in self._gen.built.collectors:
            collector.start()
        self._poller.start()

    def close(self) -> None:
        """Stop the status loop, the collectors' background work and their connections."""
        self._stop.set()
        with self._lock:
            gen, draining = self._gen, [g.on_idle for g in self._draining if g.on_idle]
            self._draining.clear()
        for release in draining:
            release()
        gen.scraper.close()
        if self._poller.is_alive():
            self._poller.join(timeout=1)

    def reload(self) -> str | None:
        """Load every configuration source again, build what changed, then swap; on any error
        the running configuration stays. Returns the error, None on success."""
        with self._reloading:
            return self._reload()

    def _reload(self) -> str | None:
        if self._reload_source is None:
            return "no configuration source to reload from"
        old = self._gen
        try:
            uses = [prepare() for prepare in self._also]
            loaded = _keep_restart_only(self._reload_source(), old.loaded)
            built = registry.build(loaded, old.built)
            started = _start(built.new_since(old.built))
        except Exception as exc:  # noqa: BLE001 - any failure refuses the new configuration
            error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            old.reload_ok = False
            log.error("reload refused, the running configuration stays", extra={"error": error})
            return error
        self._swap(old, _Generation(loaded, built, old), started)
        for use in uses:
            use()
        for warning in loaded.warnings:
            if warning not in old.loaded.warnings:  # each said once, not on every reload
                log.warning(warning)
        return None

    def _swap(self, old: _Generation, new: _Generation, started: list[Source]) -> None:
        kept = {id(c) for c in new.built.collectors}
        dropped = [c for c in old.built.collectors if id(c) not in kept]

        def release() -> None:
            old.scraper.retire()
            for collector in dropped:
                collector.close()

        with self._lock:
            self._gen = new
            now = not old.users
            if not now:
                old.on_idle = release  # scrapes under way finish on the old collectors
                self._draining.append(old)
        if now:
            release()
        if new.config.log != old.config.log:
            logs.setup(new.config.log.level, new.config.log.format)
        log.info(
            "configuration reloaded",
            extra={"rebuilt": ",".join(c.name for c in started) or "none"},
        )

    def _timeout(self, request: server.Request) -> float:
        web = self.config.web
        return request.timeout(web.scrape_timeout_seconds, web.scrape_timeout_offset_seconds)

    def _poll(self) -> None:
        # Statuses are evaluated (and changes logged) even when nobody scrapes.
        while True:
            try:
                with self._use() as gen:
                    gen.tracker.update(gen.scraper.collect(gen.config.web.scrape_timeout_seconds))
            except Exception:
                log.exception("status evaluation failed")
            if self._stop.wait(self.config.poll_interval_seconds):
                return


def _start(collectors: list[Source]) -> list[Source]:
    # A thread that cannot be started (a pids limit) refuses the reload like a bad setting.
    try:
        for collector in collectors:
            collector.start()
    except BaseException:
        for collector in collectors:
            collector.close()
        raise
    return collectors


def _retire(release: Callable[[], None]) -> None:
    # Closing pools and stopping scans takes a moment the request must not wait, unless no
    # thread is to be had (a pids limit): then the request waits, which beats a leaked pool.
    try:
        threading.Thread(target=release, name="retire", daemon=True).start()
    except RuntimeError as exc:
        log.warning("no thread to retire the old configuration on", extra={"error": str(exc)})
        release()


def _keep_restart_only(new: Loaded, old: Loaded) -> Loaded:
    changed = [key for key in RESTART_ONLY if getattr(new.config, key) != getattr(old.config, key)]
    if not changed:
        return new
    log.warning(
        "a restart is needed to change these; their running values stay",
        extra={"settings": ",".join(changed)},
    )
    config = dataclasses.replace(new.config, **{key: getattr(old.config, key) for key in changed})
    sources = {
        key: old.sources[key] if key.split(".", 1)[0] in changed else source
        for key, source in new.sources.items()
    }
    return dataclasses.replace(new, config=config, sources=sources)


def _services(collector: Source, outcome: Outcome) -> dict[str, str | None]:
    """The services a collector answers for: from its reading, or all failing without one."""
    told = outcome.reading.services() if isinstance(outcome.reading, ReportsServices) else {}
    missing = outcome.error or "no reading"
    return {
        name: told.get(name, missing) if name in told else missing for name in collector.services
    }


def _json(code: int, doc: object) -> server.Response:
    return server.Response(code, json.dumps(doc, indent=2).encode() + b"\n", "application/json")
