"""Queries on image_embeddings. Each function takes a session; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from capsearch.db.models import Image, ImageEmbedding
from capsearch.search.index import Ids, Vectors

_CHUNK = 10_000


def to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(data, dtype="<f4")
    if vector.shape != (dim,):
        raise ValueError(f"stored vector has {vector.size} values, expected {dim}")
    return vector.astype(np.float32)


async def upsert(session: AsyncSession, image_id: int, model: str, text: str, vector: np.ndarray) -> None:
    # Delete + insert in one transaction: portable across SQLite and Postgres, same effect as upsert.
    await session.execute(
        delete(ImageEmbedding).where(ImageEmbedding.image_id == image_id, ImageEmbedding.model == model)
    )
    session.add(
        ImageEmbedding(
            image_id=image_id, model=model, dim=int(vector.shape[0]), vector=to_bytes(vector), text=text
        )
    )


async def load_all(session: AsyncSession, model: str, dim: int) -> tuple[Ids, Vectors]:
    """Every stored vector of `model`, in id order (what the index is rebuilt from)."""
    count = (
        await session.execute(
            select(func.count())
            .select_from(ImageEmbedding)
            .where(ImageEmbedding.model == model, ImageEmbedding.dim == dim)
        )
    ).scalar_one()
    ids = np.empty(count, np.int64)
    vectors = np.empty((count, dim), np.float32)
    q = (
        select(ImageEmbedding.image_id, ImageEmbedding.vector)
        .where(ImageEmbedding.model == model, ImageEmbedding.dim == dim)
        .order_by(ImageEmbedding.image_id)
        .execution_options(yield_per=_CHUNK)
    )
    n = 0
    result = await session.stream(q)
    async for image_id, blob in result:
        if n == count:  # rows added since the count: the caller's next reconcile picks them up
            break
        ids[n] = image_id
        vectors[n] = from_bytes(blob, dim)
        n += 1
    return ids[:n], vectors[:n]


async def unembedded(session: AsyncSession, model: str) -> Sequence[tuple[int, str]]:
    """(image id, text) of images whose shown caption has no vector of `model`, or an outdated one."""
    text = func.coalesce(Image.user_caption, Image.caption)
    q = (
        select(Image.id, text)
        .outerjoin(ImageEmbedding, and_(ImageEmbedding.image_id == Image.id, ImageEmbedding.model == model))
        .where(text.is_not(None), or_(ImageEmbedding.image_id.is_(None), ImageEmbedding.text != text))
        .order_by(Image.id)
    )
    return [(int(i), str(t)) for i, t in (await session.execute(q)).all()]


async def ids_for(session: AsyncSession, model: str) -> set[int]:
    q = select(ImageEmbedding.image_id).where(ImageEmbedding.model == model)
    return {int(i) for i in (await session.execute(q)).scalars()}
