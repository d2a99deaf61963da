"""Live events and the search index across replicas.

Events: every replica forwards the typed events it publishes (capsearch.events) to one pub/sub
channel, tagged with its origin, and republishes on its own bus the events of every other origin
(other replicas, and workers writing captions). Each replica's live feed then renders each event once.

Index: each replica's FAISS index follows `index_changes`, the ordered feed written in the same
transaction as every embedding change. A change says only "image N changed"; applying it reads that
image's vector as it is now, so it is idempotent and replaying any stretch of the feed is harmless.
Workers ring a doorbell (pub/sub) after each commit so replicas read at once; a poll every
`feed_poll_s` covers a missed ring. A gap in `seq` (a transaction that took its number but had not
committed when read) is re-read until it fills, or for `GAP_WAIT_S` (it was rolled back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.broker import writes
from capsearch.broker.channel import follow_channel
from capsearch.broker.index import FeedIndexer
from capsearch.broker.keys import Keys
from capsearch.broker.settings import BrokerSettings
from capsearch.db.models import Image
from capsearch.events import AppEvent, EventBus, ImageChanged, parse_event, to_json

log = logging.getLogger(__name__)

GAP_WAIT_S = 30.0


class EventPublisher:
    """Publishes one origin's events on the shared channel (a worker's, or a replica's relay)."""

    def __init__(self, redis: Redis, keys: Keys, origin: str) -> None:
        self.redis, self.keys, self.origin = redis, keys, origin

    async def publish(self, event: AppEvent) -> None:
        message = json.dumps({"origin": self.origin, "event": to_json(event).decode()})
        await self.redis.publish(self.keys.events(), message)

    async def image_changed(self, image: Image) -> None:
        """A worker's write landed: tell every replica, and ring the index feed's doorbell."""
        await self.publish(ImageChanged.of(image))
        await self.redis.publish(self.keys.index_doorbell(), str(image.id))


class EventRelay:
    def __init__(self, redis: Redis, keys: Keys, bus: EventBus, origin: str) -> None:
        self.redis, self.keys, self.bus = redis, keys, bus
        self.publisher = EventPublisher(redis, keys, origin)
        self._from_elsewhere: set[int] = set()  # ids of events republished here: never sent back
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forward(), name="events-out"),
            asyncio.create_task(self._receive(), name="events-in"),
        ]
        async with asyncio.timeout(10):
            await self._subscribed.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forward(self) -> None:
        async with self.bus.subscribe() as sub:
            while True:
                event = await sub.get()
                if id(event) in self._from_elsewhere:
                    self._from_elsewhere.discard(id(event))
                    continue
                try:
                    await self.publisher.publish(event)
                except Exception as e:  # pages elsewhere resync when they reconnect
                    log.warning("could not forward an event: %s", e)

    async def _receive(self) -> None:
        await follow_channel(self.redis, self.keys.events(), self._received, subscribed=self._subscribed)

    def _received(self, data: bytes) -> None:
        body = json.loads(data)
        if body.get("origin") == self.publisher.origin:
            return
        event = parse_event(body["event"])
        self._from_elsewhere.add(id(event))
        self.bus.publish(event)


class IndexFeed:
    """Keeps this replica's index equal to the database by tailing `index_changes`."""

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        settings: BrokerSettings,
        sessions: async_sessionmaker[AsyncSession],
        indexer: FeedIndexer,
    ) -> None:
        self.redis, self.keys, self.settings = redis, keys, settings
        self.sessions, self.indexer = sessions, indexer
        self.seq = 0
        self._gaps: dict[int, float] = {}  # seq not seen yet → when it was first missed
        self._ring = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_prune = 0.0

    async def start_position(self) -> None:
        """Called before the index is checked against the database: whatever commits after that
        check is in the feed after this position, so nothing falls between the two."""
        async with self.sessions() as s:
            self.seq = await writes.last_change(s)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._doorbell(), name="index-doorbell"),
            asyncio.create_task(self._follow(), name="index-feed"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def ring(self) -> None:
        self._ring.set()

    async def _doorbell(self) -> None:
        await follow_channel(self.redis, self.keys.index_doorbell(), lambda _data: self._ring.set())

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.feed_poll_s):
                    await self._ring.wait()
            self._ring.clear()
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database away for a moment: the feed waits for us
                log.warning("index feed: %s", e)

    async def catch_up(self) -> int:
        """Apply every change committed since the last call; returns how many images changed."""
        now = time.monotonic()
        self._gaps = {s: t for s, t in self._gaps.items() if now - t < GAP_WAIT_S}
        start = min([self.seq, *(s - 1 for s in self._gaps)])
        async with self.sessions() as s:
            rows = await writes.changes_after(s, start)
        fresh = [(seq, image_id) for seq, image_id in rows if seq > self.seq or seq in self._gaps]
        for seq, _ in fresh:
            self._gaps.pop(seq, None)
            if seq > self.seq:
                self._gaps.update(dict.fromkeys(range(self.seq + 1, seq), now))
                self.seq = seq
        if fresh:
            await self.indexer.follow(sorted({image_id for _, image_id in fresh}))
        if now - self._last_prune > 60:
            self._last_prune = now
            async with self.sessions() as s, s.begin():
                await writes.prune_changes(s, self.settings.feed_keep_s)
        return len(fresh)
