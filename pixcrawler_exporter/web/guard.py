"""Who may ask and how often: basic auth against bcrypt hashes, and a token-bucket rate limit."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping

REALM = "pixcrawler-exporter"
CHALLENGE = f'Basic realm="{REALM}"'
# Verdicts kept, of each kind: enough for every client of one exporter.
CACHE_SIZE = 1024
# Requests that may be waiting for or running a bcrypt at once; beyond them a request with
# credentials not seen before is turned away at once (BusyError), so a flood of made-up passwords
# holds no connection thread for long and never a request slot.
BCRYPT_QUEUE = 4


class BusyError(Exception):
    """Credentials not seen before, and no room to check them now."""


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt costs tens of milliseconds by design; Prometheus sends the same credentials every
    scrape, so each (user, password) verdict is cached. Granted and denied verdicts are kept
    apart, so made-up passwords can only push out other made-up passwords, never the
    credentials that work. The cache key is an HMAC with a key made at start-up, so the process
    never holds a password, nor an unsalted digest of one.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        # Imported here: only basic auth needs it, and webconfig.load reports it missing.
        import bcrypt

        self._checkpw = bcrypt.checkpw
        self._users = dict(users)
        self._cache_key = secrets.token_bytes(32)
        self._granted: dict[bytes, None] = {}
        self._denied: dict[bytes, None] = {}
        self._cache_lock = threading.Lock()
        self._queue = threading.BoundedSemaphore(BCRYPT_QUEUE)
        # bcrypt is CPU-bound: one at a time, so a burst of new credentials cannot eat every core.
        self._bcrypt_lock = threading.Lock()
        # An unknown user still pays a bcrypt, against a real hash, so timing tells no names.
        self._decoy = next(iter(self._users.values()), b"")

    def check(self, authorization: str | None) -> bool:
        """Whether the credentials are right; raises BusyError when they would need a bcrypt and
        ``BCRYPT_QUEUE`` requests are already waiting for one."""
        parsed = _parse(authorization)
        if parsed is None:
            return False
        user, password = parsed
        key = hmac.digest(
            self._cache_key, len(user).to_bytes(4, "big") + user + password, hashlib.sha256
        )
        with self._cache_lock:
            if key in self._granted:
                return True
            if key in self._denied:
                return False
        if not self._queue.acquire(blocking=False):
            raise BusyError
        try:
            verdict = self._verify(user, password)
        finally:
            self._queue.release()
        with self._cache_lock:
            cache = self._granted if verdict else self._denied
            if len(cache) >= CACHE_SIZE:
                cache.pop(next(iter(cache)))  # the oldest
            cache[key] = None
        return verdict

    def _verify(self, user: bytes, password: bytes) -> bool:
        name = user.decode("utf-8", "replace")
        hashed = self._users.get(name)
        known = hashed is not None and hmac.compare_digest(name.encode(), user)
        with self._bcrypt_lock:
            try:
                # checkpw compares in constant time.
                ok = self._checkpw(password, hashed if hashed is not None else self._decoy)
            except ValueError:  # longer than bcrypt's 72 bytes, or a NUL in it
                ok = False
        return known and ok


def _parse(authorization: str | None) -> tuple[bytes, bytes] | None:
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


class RateLimiter:
    """A token bucket: one token every ``interval`` seconds, at most ``burst`` saved up."""

    def __init__(
        self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False
