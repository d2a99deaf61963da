"""Bookkeeping for captions in flight: which task captions which image, who waits for it; and
captioning images again from their stored originals. The writes that record a caption's outcome are
capsearch.services.caption_writer's.

Kept apart from the image flow so the rules — duplicates and `wait=true` join work in flight, a
closed page lets go of work nobody else wants, a waiter is let go when shutdown's grace runs out, a
finished caption survives a database outage — live in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, Priority
from capsearch.db.models import Image
from capsearch.db.outage import is_unavailable
from capsearch.errors import CapsearchError, ShuttingDownError
from capsearch.intake.images import NormalisedImage
from capsearch.services import repo
from capsearch.shutdown import ShutdownClock
from capsearch.storage import ContentStore

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class StartTracker:
    """Turns the batcher's "your batch started" callback into the `captioning` stage.

    The batch may start before the row exists (tiny models are fast); the row is then inserted as
    `captioning` directly, or caught up in `attach`.
    """

    def __init__(self, on_started: Callable[[int], None], image_id: int | None = None) -> None:
        self._on_started = on_started
        self.image_id = image_id
        self.has_started = False

    def started(self) -> None:
        self.has_started = True
        if self.image_id is not None:
            self._on_started(self.image_id)

    def attach(self, image_id: int, inserted_as_started: bool) -> None:
        self.image_id = image_id
        if self.has_started and not inserted_as_started:
            self._on_started(image_id)


class CaptionJobs:
    def __init__(self, clock: ShutdownClock) -> None:
        self.clock = clock
        # image id → the task that captions it (replaced when a caption is re-queued).
        self._tasks_by_image: dict[int, asyncio.Task[None]] = {}
        self._queued: dict[int, tuple[asyncio.Future[str], StartTracker]] = {}
        self._owners: dict[int, set[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def in_flight(self, image_id: int) -> bool:
        return image_id in self._tasks_by_image

    def start(
        self,
        image_id: int,
        future: asyncio.Future[str],
        tracker: StartTracker,
        finish: Coroutine[Any, Any, None],
    ) -> None:
        self._queued[image_id] = (future, tracker)
        self.track(image_id, self.spawn(finish))

    def track(self, image_id: int, task: asyncio.Task[None]) -> None:
        self._tasks_by_image[image_id] = task

        def done(_t: asyncio.Task[None]) -> None:
            if self._tasks_by_image.get(image_id) is task:
                del self._tasks_by_image[image_id]
                self._queued.pop(image_id, None)
                self._owners.pop(image_id, None)

        task.add_done_callback(done)

    def own(self, image_id: int, owner: str | None) -> None:
        if owner is not None and image_id in self._tasks_by_image:
            self._owners.setdefault(image_id, set()).add(owner)

    def release(self, owner: str) -> list[int]:
        """Cancel queued, not yet started requests that only `owner` wanted; returns their image ids."""
        released = []
        for image_id, owners in list(self._owners.items()):
            owners.discard(owner)
            queued = self._queued.get(image_id)
            if owners or queued is None:
                continue
            future, tracker = queued
            if tracker.has_started or future.done():
                continue
            future.cancel()
            released.append(image_id)
        return released

    async def wait(self, image_id: int) -> None:
        """Until the image's caption task is over; a cancelled waiter does not cancel it. Raises
        ShuttingDownError once shutdown's grace has run out (the caption is finished at next start)."""
        # The task may be replaced (a released caption re-queued at background): follow it.
        while (task := self._tasks_by_image.get(image_id)) is not None:
            if self.clock.expired.is_set():
                raise _stopped()
            expired = asyncio.create_task(self.clock.expired.wait())
            try:
                await asyncio.wait({task, expired}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                expired.cancel()

    async def close(self) -> None:
        """Give caption tasks what is left of shutdown's grace, then cancel them (rows stay unfinished
        and are captioned at next start)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.clock.left())
        for t in list(self._tasks):
            t.cancel()


def _stopped() -> ShuttingDownError:
    return ShuttingDownError(
        "The server is restarting before this caption was done; it is kept and finished after the "
        "restart. Ask again in a moment."
    )


class Recaptioner:
    """Captions unfinished images again from their stored originals: at start-up, from the maintenance
    sweep, for a page that went away, and for a `wait=true` caller whose caption was lost."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: ContentStore,
        captioner: Batcher[PILImage.Image, str],
        normalise: Callable[[bytes], Coroutine[Any, Any, NormalisedImage]],
        tracker: Callable[[int], StartTracker],
        jobs: CaptionJobs,
        landed: Callable[[int, str], Awaitable[None]],
        failed: Callable[[int, str], Awaitable[None]],
        background_slots: int,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.captioner = captioner
        self._normalise = normalise
        self._tracker = tracker
        self.jobs = jobs
        self._landed = landed
        self._failed = failed
        # Background re-queues trickle through the queue instead of tripping its limit.
        self._background = asyncio.Semaphore(background_slots)

    def requeue(self, image: Image, priority: Priority = Priority.BACKGROUND) -> bool:
        """Queue the image's caption again unless a task already works on it; returns whether it was
        queued. Tracked, so duplicates and `wait=true` join it."""
        if self.jobs.in_flight(image.id):
            return False
        self.jobs.track(image.id, self.jobs.spawn(self._from_store(image, priority)))
        return True

    def requeue_by_id(self, image_id: int) -> None:
        """A page's released caption, at background priority (its queued request was cancelled)."""
        self.jobs.track(image_id, self.jobs.spawn(self._by_id(image_id)))

    async def _by_id(self, image_id: int) -> None:
        try:
            async with self.sessions() as s:
                image = await repo.get(s, image_id)
        except Exception as e:
            if not is_unavailable(e):
                raise
            log.warning("image %s: its caption waits for the sweep (database unreachable)", image_id)
            return
        if image is not None:
            await self._from_store(image, Priority.BACKGROUND)

    async def _from_store(self, image: Image, priority: Priority) -> None:
        gate = self._background if priority is Priority.BACKGROUND else asyncio.Semaphore(1)
        try:
            async with gate:
                data = await asyncio.to_thread(self.store.read_original, image.sha256, image.mime)
                norm = await self._normalise(data)
                tracker = self._tracker(image.id)
                caption = await self.captioner.submit(norm.display, priority, tracker.started)
        except ShuttingDownError:
            return
        except (CapsearchError, OSError) as e:
            await self._failed(image.id, getattr(e, "message", str(e)))
        else:
            await self._landed(image.id, caption)
