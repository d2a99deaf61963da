"""Queries on the images table. Each function takes a session; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from capsearch.db.models import Image, ImageStatus, utcnow


async def get(session: AsyncSession, image_id: int) -> Image | None:
    return await session.get(Image, image_id)


async def get_by_sha(session: AsyncSession, sha256: str) -> Image | None:
    return (await session.execute(select(Image).where(Image.sha256 == sha256))).scalar_one_or_none()


async def page(session: AsyncSession, limit: int, before_id: int | None) -> tuple[Sequence[Image], int]:
    """Newest first (ids only grow), keyset-paginated so deep pages stay cheap."""
    q = select(Image).order_by(Image.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(Image.id < before_id)
    items = (await session.execute(q)).scalars().all()
    total = (await session.execute(select(func.count()).select_from(Image))).scalar_one()
    return items, total


# Accepted but not captioned yet: a live caption task owns the row, or nobody does (a crash, an outage).
UNFINISHED = (ImageStatus.RECEIVED, ImageStatus.CAPTIONING)


async def unfinished(session: AsyncSession) -> Sequence[Image]:
    q = select(Image).where(Image.status.in_(UNFINISHED))
    return (await session.execute(q.order_by(Image.id))).scalars().all()


async def stuck(session: AsyncSession, idle_since: datetime) -> Sequence[Image]:
    """Unfinished rows that have not changed since `idle_since` (oldest first)."""
    q = select(Image).where(Image.status.in_(UNFINISHED), Image.updated_at < idle_since)
    return (await session.execute(q.order_by(Image.id))).scalars().all()


async def existing_shas(session: AsyncSession, shas: Collection[str]) -> set[str]:
    """Which of these hashes have a row (callers pass a few hundred at a time)."""
    if not shas:
        return set()
    q = select(Image.sha256).where(Image.sha256.in_(list(shas)))
    return set((await session.execute(q)).scalars().all())


async def set_status(
    session: AsyncSession,
    image_id: int,
    status: ImageStatus,
    *,
    caption: str | None = None,
    caption_model: str | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, object] = {"status": status, "error": error, "updated_at": utcnow()}
    if caption is not None:
        values["caption"] = caption
        values["caption_model"] = caption_model
    await session.execute(update(Image).where(Image.id == image_id).values(**values))


async def mark_captioning(session: AsyncSession, image_id: int) -> bool:
    """received → captioning, only if still received (a finished caption must never be overwritten)."""
    result = await session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == ImageStatus.RECEIVED)
        .values(status=ImageStatus.CAPTIONING, updated_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


async def random_ready(session: AsyncSession, limit: int) -> Sequence[Image]:
    """A few captioned images at random (func.random() is RANDOM() on both SQLite and Postgres)."""
    q = select(Image).where(Image.status == ImageStatus.READY).order_by(func.random()).limit(limit)
    return (await session.execute(q)).scalars().all()
