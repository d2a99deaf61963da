"""A web replica's search indexer in distributed mode: its own writes append to the change feed and
ring the doorbell; `follow` applies changes any process made (capsearch.broker.feed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from capsearch.broker import writes
from capsearch.db.models import Image, IndexChange
from capsearch.services.indexing import SearchIndexer


class FeedIndexer(SearchIndexer):
    def __init__(self, *, ring: Callable[[int], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ring = ring

    def record_change(self, session: AsyncSession, image_id: int) -> None:
        session.add(IndexChange(image_id=image_id))

    async def apply(
        self,
        image_id: int,
        changes: dict[str, Any],
        text: str | None = None,
        vector: np.ndarray | None = None,
    ) -> Image | None:
        image = await super().apply(image_id, changes, text, vector)
        if image is not None and vector is not None:
            await self._ring(image_id)
        return image

    async def delete(self, image_id: int) -> Image | None:
        image = await super().delete(image_id)
        if image is not None:
            await self._ring(image_id)
        return image

    async def follow(self, image_ids: Sequence[int]) -> None:
        """Make these images' index entries equal to their stored vectors (present or gone)."""
        async with self._write:
            async with self.sessions() as s:
                vectors = await writes.vectors_of(s, image_ids, self.model, self.dim)
            gone = [i for i in image_ids if i not in vectors]
            if vectors:
                ids = np.fromiter(vectors, dtype=np.int64, count=len(vectors))
                matrix = np.stack([vectors[i] for i in vectors])
                await asyncio.to_thread(self.index.upsert, list(ids), matrix)
            if gone:
                await asyncio.to_thread(self.index.remove, gone)
            self._changed()
