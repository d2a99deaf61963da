"""The collection as people browse and change it: reads, caption edits and deletes.

Images enter through the image pipeline (capsearch.pipelines.images); everything done to them after
that is here, and publishes the same typed events, so every open page follows.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Priority
from capsearch.db.models import Image
from capsearch.errors import CapsearchError, NotFoundError
from capsearch.events import EventBus, ImageChanged, ImageDeleted
from capsearch.services import repo
from capsearch.services.indexing import SearchIndexer
from capsearch.services.maintenance import StoreClaims
from capsearch.shapes import ImageOut
from capsearch.storage import ContentStore
from capsearch.text import clean_text


class ImageLibrary:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: ContentStore,
        claims: StoreClaims,
        indexer: SearchIndexer,
        events: EventBus,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.claims = claims  # shared with the pipeline: a delete and an upload of the same bytes
        self.indexer = indexer
        self.events = events

    async def get(self, image_id: int) -> Image:
        async with self.sessions() as s:
            image = await repo.get(s, image_id)
        if image is None:
            raise NotFoundError(f"There is no image with id {image_id}.")
        return image

    async def snapshot(self, image_id: int) -> ImageOut | None:
        """The image as pages show it now, or None if it is gone (the live feed's reads)."""
        async with self.sessions() as s:
            image = await repo.get(s, image_id)
        return ImageOut.of(image) if image is not None else None

    async def get_by_sha256(self, sha256: str) -> Image:
        image = await self.find_by_sha256(sha256)
        if image is None:
            raise NotFoundError("No image with that SHA-256 is stored.")
        return image

    async def find_by_sha256(self, sha256: str) -> Image | None:
        async with self.sessions() as s:
            return await repo.get_by_sha(s, sha256.lower())

    async def page(self, limit: int, before_id: int | None) -> tuple[list[Image], int]:
        async with self.sessions() as s:
            items, total = await repo.page(s, limit, before_id)
        return list(items), total

    async def newest(self, limit: int) -> tuple[list[ImageOut], int]:
        items, total = await self.page(limit, None)
        return [ImageOut.of(i) for i in items], total

    async def edit_caption(self, image_id: int, text: str) -> Image:
        """Set the person's caption (the model's is kept beside it); re-embedded and re-indexed before
        this returns. Raises NotFoundError, or BusyError with nothing changed."""
        text = clean_text(text)
        if not text:
            raise CapsearchError(
                "The caption has no visible text; write a few words.", code="empty_caption", status_code=422
            )
        await self.get(image_id)  # a missing image is a 404 before any model work
        vector = await self.indexer.embedder.run(text, Priority.INTERACTIVE)
        image = await self.indexer.apply(image_id, {"user_caption": text}, text, vector)
        if image is None:
            raise NotFoundError(f"There is no image with id {image_id}.")
        self.events.publish(ImageChanged.of(image))
        return image

    async def delete(self, image_id: int) -> None:
        """Row (with its embeddings), index entry, then files; raises NotFoundError."""
        image = await self.indexer.delete(image_id)
        if image is None:
            raise NotFoundError(f"There is no image with id {image_id}.")
        # Files go only once the delete has committed. If the same bytes were uploaded again in the
        # meantime, the files belong to that new row and stay (the claim keeps an upload from racing).
        async with self.claims.hold(image.sha256):
            async with self.sessions() as s:
                again = await repo.get_by_sha(s, image.sha256)
            if again is None:
                await asyncio.to_thread(self.store.delete, image.sha256, image.mime)
        self.events.publish(ImageDeleted(id=image_id))
