"""``pixcrawler-exporter healthcheck [URL]``: exit 0 when *this* exporter is live.

Also run as ``python -m pixcrawler_exporter.web.healthcheck`` and, as README first documented
it, ``python -m pixcrawler_exporter.healthcheck``.

The image's HEALTHCHECK: slim images have no curl. It finds the exporter's process (the
container's main process: PID 1, or a child of PID 1 when an init such as ``docker run --init``
runs first), reads the address and scheme from that process's own command line and the
environment, just as the exporter did, and requests ``/-/healthy`` there. The answer counts only
when it carries the identity token of an exporter process this check can see (see
``identity``): another server, or another exporter, answering at that address is unhealthy.

Without such a main process (``--pid=host``, or run on a host) the address comes from the
environment alone, and any exporter process visible here in the same mount namespace counts. A
URL given as the argument is probed instead of the configured address, with the same identity
rule. ``/-/healthy`` needs no credentials, so basic auth does not get in the way; under mutual
TLS a refusal for want of a client certificate counts as live, unverified.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pixcrawler_exporter import config
from pixcrawler_exporter.web import identity, webconfig

TIMEOUT_SECONDS = 3.0
PROC = "/proc"


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    args: tuple[str, ...]  # the exporter's own arguments
    token: str


def exporter_args(cmdline: Sequence[str]) -> tuple[str, ...] | None:
    """The exporter's arguments when ``cmdline`` runs the exporter, else None."""
    found: Sequence[str] | None = None
    # The console script, directly or through its interpreter (how a shebang shows).
    for i, word in enumerate(cmdline[:2]):
        if os.path.basename(word) == "pixcrawler-exporter":
            found = cmdline[i + 1 :]
            break
    else:
        if "-m" in cmdline[1:-1]:
            i = cmdline.index("-m", 1)
            if cmdline[i + 1] == "pixcrawler_exporter":
                found = cmdline[i + 2 :]
    if found is None or (found and found[0] in ("rules", "healthcheck")):
        return None  # not the exporter, or one of its short-lived commands
    return tuple(found)


def visible_exporters(proc: str = PROC) -> Iterator[Process]:
    """Exporter processes in this mount namespace (this container) that this user may inspect."""
    try:
        own_ns = os.readlink(f"{proc}/self/ns/mnt")
    except OSError:
        own_ns = None
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/cmdline", "rb") as fh:
                cmdline = [w.decode(errors="replace") for w in fh.read().split(b"\0")[:-1]]
            if own_ns is not None and os.readlink(f"{proc}/{entry}/ns/mnt") != own_ns:
                continue
            with open(f"{proc}/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to inspect
        args = exporter_args(cmdline)
        if args is not None:
            pid = int(entry)
            yield Process(pid, ppid, args, identity.token(pid, identity.start_ticks(pid, proc)))


def main_process(exporters: Sequence[Process]) -> Process | None:
    """The container's exporter: PID 1 itself, or the one child of PID 1 (behind an init)."""
    for p in exporters:
        if p.pid == 1:
            return p
    children = [p for p in exporters if p.ppid == 1]
    return children[0] if len(children) == 1 else None


def probe_url(listen: str, tls: bool) -> str:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard is reached on loopback
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/-/healthy"


def configured_url(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Where an exporter started with ``args`` in ``env`` serves ``/-/healthy``.

    Raises ConfigError.
    """
    from pixcrawler_exporter.config.flags import parser as exporter_parser

    parser = exporter_parser()  # the exporter's own: flags mean the same here
    parser.exit_on_error = False
    try:
        given, _ = parser.parse_known_args(list(args))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise config.ConfigError(f"cannot read the exporter's arguments: {exc}") from None
    flags = {spec.key: getattr(given, spec.key, None) for spec in config.specs()}
    cfg = config.load(env, flags, given.config).config
    tls = bool(cfg.web.config_file) and webconfig.load(str(cfg.web.config_file)).tls
    return probe_url(cfg.web.listen, bool(tls))


def check(url: str, tokens: Collection[str]) -> tuple[bool, str]:
    # Identity comes from the token, not the certificate: the probe runs next to the server
    # and trusts any certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=ctx) as resp:  # noqa: S310
            if resp.status != 200:
                return False, f"{url}: {resp.status}"
            if resp.headers.get(identity.HEADER) not in tokens:
                return False, f"{url}: answered, but not by this container's exporter"
            return True, f"{url}: {resp.status}"
    except urllib.error.HTTPError as err:
        return False, f"{url}: {err.code}"
    except urllib.error.URLError as err:
        reason = err.reason
        # Mutual TLS turns away a probe without a client certificate, but only a serving
        # exporter can say so.
        if isinstance(reason, ssl.SSLError) and "CERTIFICATE_REQUIRED" in str(reason).upper():
            return True, f"{url}: serving, requires a client certificate"
        return False, f"{url}: {reason}"
    except OSError as exc:
        return False, f"{url}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__.split("\n\n", 1)[0], file=sys.stderr)
        return 0
    exporters = list(visible_exporters())
    own = main_process(exporters)
    expected = [own] if own is not None else exporters
    if not expected:
        print("unhealthy: no pixcrawler-exporter process is running here", file=sys.stderr)
        return 1
    if args:
        url = args[0]
    else:
        try:
            url = configured_url(own.args if own is not None else (), os.environ)
        except config.ConfigError as exc:
            print(f"unhealthy: {exc}", file=sys.stderr)
            return 1
    healthy, detail = check(url, {p.token for p in expected})
    print(("healthy: " if healthy else "unhealthy: ") + detail, file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
