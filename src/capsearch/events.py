"""What happened to the collection, as typed events, and the in-process bus that carries them.

Each event kind is one frozen type, a discriminated union on `type`, serialisable to JSON (`to_json`,
`parse_event`) so the same events can later cross a process boundary unchanged. An `ImageChanged`
carries a snapshot of everything a page shows of the image, so no page reads the row again; the live
feed renders each event once per process (capsearch.ws.feed).

Publishing never blocks: a subscriber that falls behind loses its oldest events rather than slowing
the captioning path for everyone, and its subscription is marked `lagged`, so it knows to resync.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from capsearch.db.models import Image
from capsearch.shapes import ImageOut


class ImageChanged(BaseModel):
    """An image was added, changed stage, or had its caption edited: `image` is how it is now."""

    model_config = ConfigDict(frozen=True)
    type: Literal["image.changed"] = "image.changed"
    image: ImageOut

    @classmethod
    def of(cls, image: Image) -> ImageChanged:
        return cls(image=ImageOut.of(image))

    @property
    def image_id(self) -> int:
        return self.image.id


class ImageDeleted(BaseModel):
    """An image, its files and its search entry are gone."""

    model_config = ConfigDict(frozen=True)
    type: Literal["image.deleted"] = "image.deleted"
    id: int

    @property
    def image_id(self) -> int:
        return self.id


AppEvent = Annotated[ImageChanged | ImageDeleted, Field(discriminator="type")]
_EVENT: TypeAdapter[AppEvent] = TypeAdapter(AppEvent)


def to_json(event: AppEvent) -> bytes:
    return event.model_dump_json().encode()


def parse_event(data: bytes | str) -> AppEvent:
    """The inverse of `to_json`; raises pydantic.ValidationError for anything else."""
    return _EVENT.validate_json(data)


class Subscription:
    """One subscriber's queue. `lagged` turns true when events were dropped because it fell behind;
    the subscriber clears it once it has caught up by other means (a resync)."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[AppEvent] = asyncio.Queue(size)
        self.lagged = False

    def offer(self, event: AppEvent) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.lagged = True
        self.queue.put_nowait(event)

    async def get(self) -> AppEvent:
        return await self.queue.get()


class EventBus:
    def __init__(self, queue_size: int = 1024) -> None:
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size

    def publish(self, event: AppEvent) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        sub = Subscription(self._queue_size)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
