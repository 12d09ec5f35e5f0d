"""Command line: parse arguments, load the configuration, wire the pieces and serve."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from pixcrawler_exporter import __version__, config, heap, logs
from pixcrawler_exporter.app import App, Reloadable
from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.config.fileshape import FileShape
from pixcrawler_exporter.config.flags import flag_names
from pixcrawler_exporter.config.flags import parser as parser
from pixcrawler_exporter.trigger import Trigger
from pixcrawler_exporter.web import server, webconfig

log = logging.getLogger("pixcrawler_exporter")
# The process is gone this long after SIGTERM at most, whatever a source is doing: Kubernetes
# waits 30 s before SIGKILL, Docker 10 s. The server notices the signal within POLL_SECONDS;
# requests being answered then get until CLOSE_SECONDS before the bound to finish (their own
# deadlines are usually shorter), and closing the collectors gets the rest.
SHUTDOWN_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.5
CLOSE_SECONDS = 1.0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "rules":
        from pixcrawler_exporter.artifacts import rules  # PyYAML: not in a serving process

        return rules.main(argv[1:], os.environ)
    if argv and argv[0] == "healthcheck":
        from pixcrawler_exporter.web import healthcheck

        return healthcheck.main(argv[1:])
    args = parser().parse_args(argv)
    given = vars(args)
    flags = {spec.key: given.get(spec.key) for spec in config.specs()}
    typed = flag_names(argv)
    try:
        loaded = config.load(os.environ, flags, args.config, flag_names=typed)
    except config.ConfigError as exc:
        print(f"pixcrawler-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(config.render(loaded))
        return 0
    shape = None
    if args.config is not None:
        try:
            shape = FileShape(args.config)
        except config.ConfigError as exc:  # changed since it was loaded a moment ago
            print(f"pixcrawler-exporter: configuration error: {exc}", file=sys.stderr)
            return 2
    logs.setup(loaded.config.log.level, loaded.config.log.format)
    for warning in loaded.warnings:
        log.warning(warning)
    if shape is not None and shape.empty:
        # Nothing to keep at a start: the defaults are a configuration (see fileshape).
        log.warning(
            "config file is empty; running on the environment and the defaults",
            extra={"file": shape.path},
        )
    # A reload reads every source again (the file, .env, the environment, secret files, the web
    # config file); the command line stays as given.
    return run(
        loaded,
        lambda: config.load(os.environ, flags, args.config, flag_names=typed),
        [shape.prepare] if shape is not None else [],
    )


def run(
    loaded: config.Loaded,
    reload_source: Callable[[], config.Loaded] | None = None,
    also_reload: Sequence[Reloadable] = (),
) -> int:
    web = loaded.config.web
    try:
        # Certificates and hashes are checked before anything starts: a mistake is exit 2.
        web_config = webconfig.load(web.config_file) if web.config_file else None
    except config.ConfigError as exc:
        print(f"pixcrawler-exporter: web configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        built = registry.build(loaded)
    except Exception as exc:  # noqa: BLE001 - report the cause, not a traceback
        log.error("cannot set up collectors", extra={"error": str(exc)})
        return 1
    exporter = App(loaded, built, reload_source)
    try:
        httpd = server.serve(
            web.listen,
            exporter.routes(),
            web_config,
            server.Limits(
                max_requests=web.max_requests,
                scrape_timeout=web.scrape_timeout_seconds,
                scrape_timeout_offset=web.scrape_timeout_offset_seconds,
            ),
        )
    except (OSError, config.ConfigError) as exc:
        log.error("cannot start the HTTP server", extra={"error": str(exc)})
        return 1
    for prepare in also_reload:
        exporter.also_reload(prepare)
    if web.config_file is not None:
        path = web.config_file  # its name is restart-only; its content is read on every reload
        exporter.also_reload(lambda: httpd.prepare(webconfig.load(path)))
    exporter.start()
    _handle_signals(httpd, exporter)
    heap.trim()
    host, port = str(httpd.server_address[0]), httpd.server_address[1]
    log.info(
        "listening",
        extra={
            "version": __version__,
            "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "environment": loaded.environment,
            "cgroup": built.layout.version,
            "collectors": ",".join(c.name for c in built.collectors),
            "tls": httpd.tls is not None,
            "basic_auth": httpd.auth is not None,
        },
    )
    try:
        httpd.serve_forever(POLL_SECONDS)
    finally:
        _shut_down(httpd, exporter, time.monotonic() + SHUTDOWN_GRACE_SECONDS - POLL_SECONDS)
    return 0


def _shut_down(httpd: server.Server, exporter: App, deadline: float) -> None:
    """Answer the requests under way and close the collectors, by ``deadline`` whatever they are
    doing: nothing left running then holds the exit (request and collector threads are daemons),
    so a read stuck on a frozen database is dropped with the process instead of keeping it."""
    httpd.server_close()
    # The scrapes being answered get their answers; idle connections are not waited for.
    drain = max(0.0, deadline - CLOSE_SECONDS - time.monotonic())
    if not httpd.drain(drain):
        log.warning("requests cut short by the shutdown", extra={"waited": round(drain, 2)})
    closing = threading.Thread(target=exporter.close, name="close", daemon=True)
    try:
        closing.start()
    except RuntimeError as exc:  # no thread to be had: the exit closes every socket anyway
        log.warning("collectors not closed", extra={"error": str(exc)})
        return
    closing.join(max(0.0, deadline - time.monotonic()))
    if closing.is_alive():
        log.warning("closing the collectors cut short by the shutdown")


def _handle_signals(httpd: server.Server, exporter: App) -> None:
    stopping = threading.Event()
    # Their threads start now: a signal handler must not need a thread (see trigger).
    # shutdown() waits for serve_forever to return, so it must not run on that thread.
    shutdown = Trigger("shutdown", httpd.shutdown)
    reload = Trigger("reload", exporter.reload)
    shutdown.start()
    reload.start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return  # one shutdown, one log line
        stopping.set()
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        shutdown.fire()

    def hup(_signum: int, _frame: FrameType | None) -> None:
        # Loading and building take time the accepting (main) thread must not lose.
        reload.fire()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    # Python's default for these is to die without a word, which a stray signal must not do.
    for other in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(other, _ignore)


def _ignore(signum: int, _frame: FrameType | None) -> None:
    log.info("signal ignored", extra={"signal": signal.Signals(signum).name})
