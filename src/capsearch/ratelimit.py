"""Per-client limits: token buckets for request rates, and counters for things a client holds open.

A client is its IP address as the server sees it (`client_key`): behind a reverse proxy, uvicorn's
`--forwarded-allow-ips` makes that the address the proxy reports (docs/security.md). Everything here
runs on the event loop and never blocks; memory is bounded by `max_clients` per limiter, forgetting
the clients seen longest ago first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from capsearch.config import RateLimitSettings
from capsearch.errors import RateLimitedError


def client_key(conn: HTTPConnection) -> str:
    """Who is asking: the peer's IP address ("unknown" when the transport does not say)."""
    return conn.client.host if conn.client is not None else "unknown"


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per client: `per_minute` tokens a minute, at most `burst` saved up."""

    def __init__(self, what: str, per_minute: float, burst: int, *, max_clients: int = 10_000) -> None:
        self.what = what
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def try_take(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """Take `cost` tokens; returns 0 if allowed, else the seconds until they would be there."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        self._buckets[key] = bucket  # most recently seen last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def take(self, key: str, cost: float = 1.0) -> None:
        """Like `try_take`, but raises RateLimitedError (429, with `retry_after`) when refused."""
        wait = self.try_take(key, cost)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimitedError(
                f"Too many {self.what} from this address; try again in {seconds} s.", retry_after=seconds
            )


class RateLimits:
    """The app's three limiters. Disabled (`enabled=False`), every `take` allows everything."""

    def __init__(self, settings: RateLimitSettings) -> None:
        s = settings
        self.enabled = s.enabled
        self.uploads = RateLimiter(
            "uploads", s.uploads_per_minute, s.uploads_burst, max_clients=s.max_clients
        )
        self.searches = RateLimiter(
            "searches", s.searches_per_minute, s.searches_burst, max_clients=s.max_clients
        )
        self.voice = RateLimiter(
            "voice requests", s.voice_per_minute, s.voice_burst, max_clients=s.max_clients
        )

    def take(self, limiter: RateLimiter, key: str, cost: float = 1.0) -> None:
        if self.enabled:
            limiter.take(key, cost)


class ClientSlots:
    """How many of one thing (uploads, recordings) each client holds right now, capped per client."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)
