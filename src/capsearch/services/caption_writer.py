"""Records a caption's outcome on its row, surviving a database outage, and publishes each change.

Writes for one image are serialised with the snapshot they publish, so pages see an image's stages in
the order they were written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.db.models import Image, ImageStatus
from capsearch.db.outage import is_unavailable, retry_unavailable
from capsearch.services import repo

if TYPE_CHECKING:
    from capsearch.services.indexing import SearchIndexer

log = logging.getLogger(__name__)


class CaptionWriter:
    """Records a caption's outcome on its row. While the database is unreachable each write is retried
    with backoff for up to `retry_s`, so a caption finished during an outage lands when it returns; after
    that the row stays unfinished, and the maintenance sweep captions it again."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        indexer: SearchIndexer | None,
        caption_model: str,
        retry_s: float,
        publish: Callable[[Image], None],
    ) -> None:
        self.sessions = sessions
        self.indexer = indexer
        self.caption_model = caption_model
        self.retry_s = retry_s
        self._publish = publish
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}

    async def ready(self, image_id: int, caption: str, vector: np.ndarray | None) -> None:
        """The caption (cleaned) and its vector in one write with the index, when there is one."""
        fields: dict[str, Any] = {"status": ImageStatus.READY, "caption": caption, "error": None}
        fields["caption_model"] = self.caption_model
        if self.indexer is None:
            await self._write(image_id, fields, "saving a caption")
            return
        indexer = self.indexer
        await self._guarded(
            image_id, lambda: indexer.apply(image_id, fields, caption, vector), "saving a caption"
        )

    async def failed(self, image_id: int, error: str) -> None:
        await self._write(image_id, {"status": ImageStatus.FAILED, "error": error}, "saving a failed caption")

    async def captioning(self, image_id: int) -> None:
        """received → captioning. Not retried: the outcome's write, which is, supersedes it."""
        async with self._serial(image_id):
            try:
                async with self.sessions() as s:
                    async with s.begin():
                        changed = await repo.mark_captioning(s, image_id)
                    image = await repo.get(s, image_id) if changed else None
            except Exception as e:
                if not is_unavailable(e):
                    raise
                log.warning("image %s: could not mark it captioning (database unreachable)", image_id)
                return
            if image is not None:
                self._publish(image)

    async def _write(self, image_id: int, fields: dict[str, Any], what: str) -> None:
        async def write() -> Image | None:
            async with self.sessions() as s, s.begin():
                image = await s.get(Image, image_id, with_for_update=True)
                if image is None:
                    return None
                for name, value in fields.items():
                    setattr(image, name, value)
            return image

        await self._guarded(image_id, write, what)

    async def _guarded(
        self, image_id: int, write: Callable[[], Coroutine[Any, Any, Image | None]], what: str
    ) -> None:
        async with self._serial(image_id):
            try:
                image = await retry_unavailable(
                    write, budget_s=self.retry_s, what=f"image {image_id}: {what}"
                )
            except Exception as e:
                if not is_unavailable(e):
                    raise
                return  # logged by the retry; the row stays unfinished for the sweep
            if image is not None:
                self._publish(image)

    @contextlib.asynccontextmanager
    async def _serial(self, image_id: int) -> AsyncIterator[None]:
        """One write and its snapshot at a time per image: snapshots are published in the order the
        rows were written, so no page is left showing an older stage than the last one."""
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        self._users[image_id] = self._users.get(image_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[image_id] -= 1
            if not self._users[image_id]:
                del self._users[image_id], self._locks[image_id]
