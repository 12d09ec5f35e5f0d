"""``python -m pixcrawler_exporter.web.healthcheck [URL]``: exit 0 when ``/-/healthy`` answers 200.

The image's HEALTHCHECK: slim images have no curl, and this knows where the exporter listens
and whether it speaks TLS from the same variables and files the exporter reads.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from pixcrawler_exporter import config
from pixcrawler_exporter.web import webconfig

TIMEOUT_SECONDS = 3.0


def probe_url(listen: str, tls: bool) -> str:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard is reached on loopback
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/-/healthy"


def check(url: str) -> tuple[bool, str]:
    # Liveness, not identity: the probe runs next to the server and trusts any certificate.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=ctx) as resp:  # noqa: S310
            return resp.status == 200, f"{url}: {resp.status}"
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
    if args:
        url = args[0]
    else:
        try:
            cfg = config.load(os.environ).config
            tls = bool(cfg.web.config_file) and webconfig.load(str(cfg.web.config_file)).tls
        except config.ConfigError as exc:
            print(f"unhealthy: {exc}", file=sys.stderr)
            return 1
        url = probe_url(cfg.web.listen, bool(tls))
    healthy, detail = check(url)
    print(("healthy: " if healthy else "unhealthy: ") + detail, file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
