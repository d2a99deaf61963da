"""`capsearch reindex`: rebuild the saved search index from the stored embeddings, no model needed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.config import SearchSettings
from capsearch.search import persist
from capsearch.search.index import VectorIndex
from capsearch.services import embedding_repo


async def rebuild_saved_index(
    settings: SearchSettings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    model: str,
    dim: int,
    index_dir: Path,
) -> tuple[int, str, int]:
    """`capsearch reindex`: rebuild the saved index from the stored embeddings, no model needed.

    Returns (vectors indexed, index kind, captions still without a vector — embedded at next start).
    """
    async with sessions() as s:
        ids, vectors = await embedding_repo.load_all(s, model, dim)
        missing = len(await embedding_repo.unembedded(s, model))
    index = VectorIndex(dim, threshold=settings.approximate_threshold, nprobe=settings.nprobe)
    index.begin_rebuild()
    await asyncio.to_thread(index.finish_rebuild, ids, vectors)
    await asyncio.to_thread(persist.save, index_dir, index.clone(), model=model, dim=dim)
    return len(ids), index.kind, missing
