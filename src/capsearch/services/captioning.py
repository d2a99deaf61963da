"""Bookkeeping for captions in flight: which task captions which image, who waits for it.

Kept apart from the image flow so the rules — duplicates and `wait=true` join work in flight, a
closed page lets go of work nobody else wants — live in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


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
    def __init__(self) -> None:
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
        """Until the image's caption task is over; a cancelled waiter does not cancel it."""
        # The task may be replaced (a released caption re-queued at background): follow it.
        while (task := self._tasks_by_image.get(image_id)) is not None:
            await asyncio.shield(task)

    async def close(self, grace: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for t in list(self._tasks):
            t.cancel()
