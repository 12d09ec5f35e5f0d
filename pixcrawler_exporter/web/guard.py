"""Who may ask and how often: basic auth against bcrypt hashes, and a token-bucket rate limit."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

REALM = "pixcrawler-exporter"
CHALLENGE = f'Basic realm="{REALM}"'
# Verdicts kept, of each kind: enough for every client of one exporter.
CACHE_SIZE = 1024
# Requests that may wait in line for a bcrypt. The line is served first come, first served, one
# bcrypt at a time, and no request waits longer than its own deadline: a right password not seen
# before waits behind at most this many others (about 60 ms each at cost 10), never for a flood
# to end. Connection threads (twice --web.max-requests) bound it in practice.
BCRYPT_QUEUE = 64


class BusyError(Exception):
    """Credentials not seen before, and no turn for a bcrypt within the request's deadline."""


class _Line:
    """One at a time, in order of arrival, for as long as each may wait.

    A newcomer who would wait past its deadline by the recent cost of a turn, or finds the line
    full, is turned away at once rather than holding its connection thread for nothing.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()  # the head is the one whose turn it is
        self._cost = 0.0  # seconds a turn took lately; learnt from the turns

    @contextmanager
    def turn(self, wait: float) -> Iterator[None]:
        """Wait for this caller's turn, at most ``wait`` seconds; BusyError when none comes."""
        me = object()
        with self._cond:
            ahead = len(self._waiting)
            if ahead >= self._capacity or ahead * self._cost > wait:
                raise BusyError
            self._waiting.append(me)
            if not self._cond.wait_for(lambda: self._waiting[0] is me, wait):
                self._waiting.remove(me)
                self._cond.notify_all()  # the one behind may be at the head now
                raise BusyError
        started = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._waiting.popleft()
                self._cost = 0.7 * self._cost + 0.3 * (time.monotonic() - started)
                self._cond.notify_all()


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
        # bcrypt is CPU-bound: one at a time, so a burst of new credentials cannot eat every core.
        self._line = _Line(BCRYPT_QUEUE)
        # An unknown user still pays a bcrypt, against a real hash, so timing tells no names.
        self._decoy = next(iter(self._users.values()), b"")

    def check(self, authorization: str | None, wait: float) -> bool:
        """Whether the credentials are right. Credentials not seen before wait their turn for a
        bcrypt, at most ``wait`` seconds (the request's deadline): BusyError when none comes."""
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
        with self._line.turn(wait):
            verdict = self._verify(user, password)
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
