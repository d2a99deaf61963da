"""Who is alive: workers heartbeat per model; web replicas count the live ones.

A heartbeat is a member of a sorted set scored with the moment it expires, so "live workers" is one
ZCOUNT and a worker that died (SIGKILL: no goodbye) drops out by itself after `worker_ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from capsearch.broker.keys import Keys
from capsearch.broker.settings import BrokerSettings
from capsearch.errors import BrokerUnavailableError, NoWorkersError

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class Heartbeat:
    """A worker's announcement, refreshed every `heartbeat_s`, withdrawn on a clean stop."""

    def __init__(self, redis: Redis, keys: Keys, settings: BrokerSettings, worker: str, models: list[str]):
        self.redis, self.keys, self.settings = redis, keys, settings
        self.worker, self.models = worker, models
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        expires = now_ms() + int(self.settings.worker_ttl_s * 1000)
        async with self.redis.pipeline(transaction=False) as p:
            for model in self.models:
                p.zadd(self.keys.workers(model), {self.worker: expires})
                p.zremrangebyscore(self.keys.workers(model), "-inf", now_ms())
            await p.execute()

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.beat()
            except Exception as e:  # Redis away for a moment: keep trying, the TTL covers short gaps
                log.warning("heartbeat failed: %s", e)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            for model in self.models:
                await self.redis.zrem(self.keys.workers(model), self.worker)


class Census:
    """A web replica's view of the workers, cached for a moment so a burst costs one round trip."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: float = 0.25) -> None:
        self.redis, self.keys, self.ttl_s = redis, keys, ttl_s
        self._seen: dict[str, tuple[float, int]] = {}

    async def live(self, model: str) -> int:
        cached = self._seen.get(model)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        try:
            count = int(await self.redis.zcount(self.keys.workers(model), now_ms(), "+inf"))
        except RedisError as e:
            raise BrokerUnavailableError(
                f"The model workers cannot be reached right now (Redis: {e}); please try again shortly."
            ) from e
        if count:  # "none" is never cached: a worker that comes back is used at once
            self._seen[model] = (time.monotonic(), count)
        return count

    async def require(self, model: str) -> None:
        """NoWorkersError at once when no worker serves `model`, instead of a request that hangs."""
        if await self.live(model) == 0:
            raise NoWorkersError(
                f"No {model} worker is running right now; start one with "
                f"`capsearch worker --models {model}` (or wait for it to come back)."
            )
