"""Live updates for every open page: each event is rendered once per process, then fanned out.

One task reads the event bus, renders the event's fragment (an image's card, or the removal of its
cards) and its socket message once, and offers that same text to every open page. A page that falls
behind (its queue is full: a slow reader) is never left stale: its queue is emptied and it is resynced,
that is, sent its collection and its upload status cards as they are now.

What only one page shows — the status card of an upload it made — is rendered for that page alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from capsearch.events import AppEvent, EventBus, ImageDeleted
from capsearch.shapes import COLLECTION_PAGE_SIZE, ImageOut
from capsearch.ws import fragments
from capsearch.ws.messages import Fragment

log = logging.getLogger(__name__)

# A page's backlog before it is resynced instead: 256 updates is a burst no reader keeping up has.
PAGE_QUEUE = 256

Snapshot = Callable[[int], Awaitable[ImageOut | None]]
Newest = Callable[[int], Awaitable[tuple[list[ImageOut], int]]]


@dataclass(frozen=True)
class Rendered:
    """An event and its socket message, rendered once and shared by every page."""

    event: AppEvent
    text: str


@dataclass(frozen=True)
class Watch:
    """A page asks for the status card of its upload `upload_id`, which became `image_id`."""

    image_id: int
    upload_id: str


class Resync:
    """The page fell behind: send it the current state of what it shows."""


RESYNC = Resync()
PageItem = Rendered | Watch | Resync


class PageFeed:
    """One page's queue of live updates. Offering never blocks the feed: on overflow the backlog is
    dropped and replaced by one resync."""

    def __init__(self, size: int = PAGE_QUEUE) -> None:
        self._items: deque[PageItem] = deque()
        self._size = size
        self._ready = asyncio.Event()
        self.resyncs = 0

    def offer(self, item: PageItem) -> None:
        if len(self._items) >= self._size:
            self.resync()
            return
        self._items.append(item)
        self._ready.set()

    def resync(self) -> None:
        self._items.clear()
        self._items.append(RESYNC)
        self.resyncs += 1
        self._ready.set()

    async def next(self) -> PageItem:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class LiveFeed:
    """Owned by the lifespan (start/stop); pages join it for as long as their socket is open."""

    def __init__(self, bus: EventBus, *, snapshot: Snapshot, newest: Newest, page_queue: int = PAGE_QUEUE):
        self.bus = bus
        self.snapshot = snapshot  # an image as it is now, for a watch and a resync (None: gone)
        self._newest = newest
        self._page_queue = page_queue
        self._pages: set[PageFeed] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.renders = 0  # fragments rendered for events, whatever the number of pages (benchmarks)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live feed")
        await self._subscribed.wait()  # no event published after start() is missed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @contextlib.contextmanager
    def join(self) -> Iterator[PageFeed]:
        page = PageFeed(self._page_queue)
        self._pages.add(page)
        try:
            yield page
        finally:
            self._pages.discard(page)

    @property
    def page_count(self) -> int:
        return len(self._pages)

    async def collection(self) -> str:
        images, total = await self._newest(COLLECTION_PAGE_SIZE)
        return fragments.collection(images, total)

    async def _run(self) -> None:
        async with self.bus.subscribe() as sub:
            self._subscribed.set()
            while True:
                event = await sub.get()
                if sub.lagged:  # the bus dropped events meant for every page: all of them resync
                    sub.lagged = False
                    for page in list(self._pages):
                        page.resync()
                try:
                    rendered = self.render(event)
                except Exception:  # one broken render must not end every page's live updates
                    log.exception("rendering %s failed", event.type)
                    continue
                for page in list(self._pages):
                    page.offer(rendered)

    def render(self, event: AppEvent) -> Rendered:
        self.renders += 1
        if isinstance(event, ImageDeleted):
            # The fragment only names the elements every page removes: there is no row any more.
            html = fragments.image_deleted(event.id)
        else:
            html = fragments.image_card(event.image)
        return Rendered(event, Fragment(html=html).dump())
