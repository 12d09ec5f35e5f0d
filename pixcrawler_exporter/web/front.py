"""What the web config file sets up in front of the routes: TLS, basic auth, the rate limit and
the extra headers, as one value the server swaps whole when a reload reads the file again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pixcrawler_exporter.config import ConfigError
from pixcrawler_exporter.web.guard import BasicAuth, RateLimiter
from pixcrawler_exporter.web.webconfig import TLSContexts, WebConfig


@dataclass(frozen=True)
class Front:
    web: WebConfig | None = None
    tls: TLSContexts | None = None
    auth: BasicAuth | None = None
    limiter: RateLimiter | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, web: WebConfig | None, previous: Front | None = None) -> Front:
        """Everything ``web`` asks for, ready to use (a certificate that does not load is a
        ConfigError). Users and rate limit that did not change since ``previous`` are kept, with
        the verdicts bcrypt cost and the tokens clients have spent."""
        if web is None:
            return cls()
        old = previous or cls()
        if previous is not None and (web.tls is None) != (old.tls is None):
            # The listening socket speaks TLS or not from the start; clients expect either.
            raise ConfigError(
                f"tls_server_config in {web.path}: turning TLS on or off needs a restart"
            )
        # Certificates and keys are loaded again whatever: a reload is how an operator makes
        # sure the files in place now are the ones served (and that they load).
        tls = TLSContexts(web.tls) if web.tls is not None else None
        was = old.web or WebConfig(web.path)  # nothing configured: nothing to keep
        auth, limiter = old.auth, old.limiter
        if not web.users or was.users != web.users or auth is None:
            auth = BasicAuth(web.users) if web.users else None
        rate = web.rate_limit
        if rate is None or was.rate_limit != rate or limiter is None:
            limiter = RateLimiter(rate.interval_seconds, rate.burst) if rate is not None else None
        return cls(web, tls, auth, limiter, dict(web.headers))
