"""Command line: parse arguments, load the configuration, wire the pieces and serve."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pixcrawler_exporter import __version__, config, logs
from pixcrawler_exporter.app import App
from pixcrawler_exporter.collect import registry
from pixcrawler_exporter.web import server, webconfig

log = logging.getLogger("pixcrawler_exporter")
# After SIGTERM, how long the requests being answered may take: Kubernetes' default grace.
SHUTDOWN_GRACE_SECONDS = 30.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pixcrawler-exporter",
        description="Prometheus exporter for PixCrawler: container-correct resources, temp "
        "storage and chunk capacity.",
        epilog="'pixcrawler-exporter rules [--config FILE]' prints the Prometheus alerting rules "
        "rendered from the configured thresholds.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", metavar="FILE", help="YAML configuration file.")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="Print the effective configuration (secrets redacted, with each value's source) "
        "and exit.",
    )
    for spec in config.specs():
        flag = spec.meta.flag
        if flag and isinstance(spec.default, bool):
            # '--collector.NAME' and '--no-collector.NAME', as node_exporter spells them.
            p.add_argument(
                flag,
                dest=spec.key,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=spec.meta.help,
            )
        elif flag:
            p.add_argument(flag, dest=spec.key, help=spec.meta.help)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "rules":
        from pixcrawler_exporter.artifacts import rules  # PyYAML: not in a serving process

        return rules.main(argv[1:], os.environ)
    args = parser().parse_args(argv)
    given = vars(args)
    flags = {spec.key: given.get(spec.key) for spec in config.specs()}
    try:
        loaded = config.load(os.environ, flags, args.config)
    except config.ConfigError as exc:
        print(f"pixcrawler-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(config.render(loaded))
        return 0
    logs.setup(loaded.config.log.level, loaded.config.log.format)
    return run(loaded)


def run(loaded: config.Loaded) -> int:
    web = loaded.config.web
    try:
        # Certificates and hashes are checked before anything starts: a mistake is exit 2.
        web_config = webconfig.load(web.config_file) if web.config_file else None
    except config.ConfigError as exc:
        print(f"pixcrawler-exporter: web configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        collectors, layout = registry.build(loaded)
    except Exception as exc:  # noqa: BLE001 - report the cause, not a traceback
        log.error("cannot set up collectors", extra={"error": str(exc)})
        return 1
    exporter = App(loaded, collectors, layout.version)
    try:
        httpd = server.serve(
            web.listen, exporter.routes(), web_config, server.Limits(max_requests=web.max_requests)
        )
    except (OSError, config.ConfigError) as exc:
        log.error("cannot start the HTTP server", extra={"error": str(exc)})
        return 1
    exporter.start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        # shutdown() waits for serve_forever to return, so it must not run on that thread.
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for other in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(other, _ignore)
    host, port = str(httpd.server_address[0]), httpd.server_address[1]
    log.info(
        "listening",
        extra={
            "version": __version__,
            "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "environment": loaded.environment,
            "cgroup": layout.version,
            "collectors": ",".join(c.name for c in collectors),
            "tls": httpd.tls is not None,
            "basic_auth": httpd.auth is not None,
        },
    )
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        # The scrapes being answered get their answers; idle connections are not waited for.
        if not httpd.drain(SHUTDOWN_GRACE_SECONDS):
            log.warning("requests still running at exit", extra={"waited": SHUTDOWN_GRACE_SECONDS})
        exporter.close()
    return 0


def _ignore(signum: int, _frame: FrameType | None) -> None:
    # Python's default for these is to die without a word, which a stray 'kill -HUP' or a
    # process manager's reload must not do. Prometheus's own servers reload on SIGHUP; until
    # this one can, it says so and goes on with the configuration it has.
    if signum == signal.SIGHUP:
        log.warning(
            "SIGHUP: configuration reload is not supported yet; "
            "still running with the configuration loaded at start-up"
        )
    else:
        log.info("signal ignored", extra={"signal": signal.Signals(signum).name})
