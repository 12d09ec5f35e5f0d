"""The command line as a configuration source: one flag (and its aliases) per setting that has
one, each with its default and variables in --help, as node_exporter shows them. The exporter
and its health check (which reads the exporter's own arguments) parse with the same parser."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pixcrawler_exporter import __version__
from pixcrawler_exporter.config.model import specs
from pixcrawler_exporter.config.settings import Spec


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pixcrawler-exporter",
        description="Prometheus exporter for PixCrawler: container-correct resources, temp "
        "storage and chunk capacity.",
        epilog="'pixcrawler-exporter rules [--config FILE]' prints the Prometheus alerting rules "
        "rendered from the configured thresholds; 'pixcrawler-exporter healthcheck [URL]' exits "
        "0 when the exporter running here answers (a container's health check).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", metavar="FILE", help="YAML configuration file.")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="Print the effective configuration (secrets redacted, with each value's source) "
        "and exit.",
    )
    for spec in specs():
        flags = spec.meta.flags
        if flags and isinstance(spec.default, bool):
            # '--collector.NAME' and '--no-collector.NAME', as node_exporter spells them.
            p.add_argument(
                *flags,
                dest=spec.key,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(spec),
            )
        elif flags:
            metavar = spec.key.rsplit(".", 1)[-1].upper()
            p.add_argument(*flags, dest=spec.key, metavar=metavar, help=_help(spec))
    return p


def flag_names(argv: Sequence[str]) -> dict[str, str]:
    """Setting key -> the flag typed for it, of its name and aliases (the last one wins, as
    argparse's value does)."""
    by_flag = {
        name: spec.key
        for spec in specs()
        for flag in spec.meta.flags
        for name in (flag, "--no-" + flag.removeprefix("--"))
    }
    typed: dict[str, str] = {}
    for token in argv:
        name = token.split("=", 1)[0]
        if name in by_flag:
            typed[by_flag[name]] = name
    return typed


def _help(spec: Spec) -> str:
    """The setting's help with its default and variable, as node_exporter's --help shows them."""
    default = spec.default
    shown = (
        "unset"
        if default is None
        else str(default).lower()
        if isinstance(default, bool)
        else default
    )
    parts = [f"default: {shown}"]
    if spec.meta.env:
        parts.append(f"env: {', '.join(spec.meta.env)}")
    # argparse formats help with '%': a literal one must be doubled.
    return f"{spec.meta.help} ({'; '.join(parts)})".replace("%", "%%")
