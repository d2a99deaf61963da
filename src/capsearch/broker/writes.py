"""The database writes of distributed mode, each idempotent and guarded by the row's caption job.

A worker's caption lands only on a row that still waits for that very job: a row already captioned,
deleted, or given a newer job (re-uploaded after a failure, or re-queued by the sweep) is left alone,
so a job delivered twice (its worker died after the commit, before the acknowledgement) writes once.
Every change to an embedding also appends to `index_changes`, in the same transaction: the ordered
feed each web replica's search index follows (capsearch.broker.feed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.db.models import Image, ImageEmbedding, ImageStatus, IndexChange, utcnow
from capsearch.services import embedding_repo, repo


async def _waiting(s: AsyncSession, image_id: int, job: str) -> Image | None:
    image = await s.get(Image, image_id, with_for_update=True)
    if image is None or image.caption_job != job or image.status not in repo.UNFINISHED:
        return None
    return image


async def mark_captioning(
    sessions: async_sessionmaker[AsyncSession], image_id: int, job: str
) -> Image | None:
    """received → captioning for this job; the row if it changed."""
    async with sessions() as s:
        async with s.begin():
            result = await s.execute(
                update(Image)
                .where(Image.id == image_id, Image.caption_job == job, Image.status == ImageStatus.RECEIVED)
                .values(status=ImageStatus.CAPTIONING)
            )
        if not getattr(result, "rowcount", 0):
            return None
        return await repo.get(s, image_id)


async def write_caption(
    sessions: async_sessionmaker[AsyncSession],
    image_id: int,
    job: str,
    *,
    caption: str,
    caption_model: str,
    vector: np.ndarray | None,
    embed_model: str | None,
) -> Image | None:
    """The caption, its vector and an index change in one transaction; None if the job is stale."""
    async with sessions() as s:
        async with s.begin():
            image = await _waiting(s, image_id, job)
            if image is None:
                return None
            image.caption, image.caption_model = caption, caption_model
            image.status, image.error, image.caption_job = ImageStatus.READY, None, None
            if vector is not None and embed_model is not None and image.effective_caption == caption:
                await embedding_repo.upsert(s, image_id, embed_model, caption, vector)
                s.add(IndexChange(image_id=image_id))
        await s.refresh(image)
        return image


async def write_failure(
    sessions: async_sessionmaker[AsyncSession], image_id: int, job: str, error: str
) -> Image | None:
    async with sessions() as s:
        async with s.begin():
            image = await _waiting(s, image_id, job)
            if image is None:
                return None
            image.status, image.error, image.caption_job = ImageStatus.FAILED, error, None
        await s.refresh(image)
        return image


async def assign_job(
    sessions: async_sessionmaker[AsyncSession], image_id: int, old: str | None, new: str
) -> bool:
    """Give an unfinished (or failed) row a new job, only if nobody else did first."""
    async with sessions() as s, s.begin():
        result = await s.execute(
            update(Image)
            .where(
                Image.id == image_id, Image.caption_job.is_(None) if old is None else Image.caption_job == old
            )
            .where(Image.status != ImageStatus.READY)
            .values(caption_job=new, status=ImageStatus.RECEIVED, error=None)
        )
        return bool(getattr(result, "rowcount", 0))


# ---- the change feed ---------------------------------------------------------------------------


async def last_change(s: AsyncSession) -> int:
    return int((await s.execute(select(func.coalesce(func.max(IndexChange.seq), 0)))).scalar_one())


async def changes_after(s: AsyncSession, seq: int, limit: int = 1000) -> Sequence[tuple[int, int]]:
    q = select(IndexChange.seq, IndexChange.image_id).where(IndexChange.seq > seq).order_by(IndexChange.seq)
    return [(int(a), int(b)) for a, b in (await s.execute(q.limit(limit))).all()]


async def vectors_of(
    s: AsyncSession, image_ids: Sequence[int], model: str, dim: int
) -> dict[int, np.ndarray]:
    q = select(ImageEmbedding.image_id, ImageEmbedding.vector).where(
        ImageEmbedding.image_id.in_(image_ids), ImageEmbedding.model == model, ImageEmbedding.dim == dim
    )
    return {int(i): embedding_repo.from_bytes(v, dim) for i, v in (await s.execute(q)).all()}


async def prune_changes(s: AsyncSession, older_than_s: float) -> None:
    # The cutoff is computed here, not in SQL: SQLite has no interval arithmetic. The newest row always
    # stays: SQLite would otherwise number the next change from 1 again, behind every replica's position.
    newest = select(func.max(IndexChange.seq)).scalar_subquery()
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    await s.execute(delete(IndexChange).where(IndexChange.created_at < cutoff, IndexChange.seq < newest))
