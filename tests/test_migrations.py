"""Alembic upgrade and downgrade on SQLite, and on Postgres when TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from capsearch.db import migrate
from capsearch.db.session import create_engine
from tests.conftest import TEST_DATABASE_URL, scratch_postgres


@pytest.fixture(params=["sqlite", "postgres"] if TEST_DATABASE_URL else ["sqlite"])
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    with scratch_postgres("capsearch_migrations") as url:
        yield url


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


async def test_upgrade_and_downgrade_round_trip(scratch_url: str) -> None:
    assert await migrate.current_revision(scratch_url) is None
    await asyncio.to_thread(migrate.upgrade, scratch_url)
    head = migrate.head_revision(scratch_url)
    assert await migrate.current_revision(scratch_url) == head
    assert "images" in await _tables(scratch_url)

    await asyncio.to_thread(migrate.downgrade, scratch_url, "base")
    assert await migrate.current_revision(scratch_url) is None
    assert await _tables(scratch_url) == set()

    # And back up again: downgrade left nothing behind that blocks a re-upgrade.
    await asyncio.to_thread(migrate.upgrade, scratch_url)
    assert await migrate.current_revision(scratch_url) == head


async def test_status_is_constrained_by_the_schema(scratch_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, scratch_url)
    engine = create_engine(scratch_url)
    insert = text(
        "INSERT INTO images (sha256, mime, width, height, size_bytes, status) "
        "VALUES (:sha, 'image/png', 1, 1, 1, :status)"
    )
    async with engine.begin() as conn:
        await conn.execute(insert, {"sha": "a" * 64, "status": "ready"})
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        async with engine.begin() as conn:
            await conn.execute(insert, {"sha": "b" * 64, "status": "exploded"})
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with engine.begin() as conn:
            await conn.execute(insert, {"sha": "a" * 64, "status": "ready"})
    await engine.dispose()


async def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns(table)})
    await engine.dispose()
    return names


async def test_0002_search_schema_up_and_down(scratch_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0001")
    engine = create_engine(scratch_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO images (sha256, mime, width, height, size_bytes, status, caption) "
                "VALUES (:sha, 'image/png', 1, 1, 1, 'ready', 'a dog')"
            ),
            {"sha": "c" * 64},
        )
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0002")
    assert "image_embeddings" in await _tables(scratch_url)
    assert "user_caption" in await _columns(scratch_url, "images")
    async with engine.begin() as conn:
        image_id = (await conn.execute(text("SELECT id FROM images"))).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO image_embeddings (image_id, model, dim, vector, text) "
                "VALUES (:id, 'm', 1, :v, 'a dog')"
            ),
            {"id": image_id, "v": b"\x00\x00\x80?"},
        )
    # One vector per image and model.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO image_embeddings (image_id, model, dim, vector, text) "
                    "VALUES (:id, 'm', 1, :v, 'x')"
                ),
                {"id": image_id, "v": b"\x00\x00\x80?"},
            )
    # Deleting the image deletes its vectors (ON DELETE CASCADE).
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM images"))
        assert (await conn.execute(text("SELECT count(*) FROM image_embeddings"))).scalar_one() == 0
        await conn.execute(
            text(
                "INSERT INTO images (sha256, mime, width, height, size_bytes, status, caption, user_caption) "
                "VALUES (:sha, 'image/png', 1, 1, 1, 'ready', 'a dog', 'my dog')"
            ),
            {"sha": "d" * 64},
        )
    await engine.dispose()

    await asyncio.to_thread(migrate.downgrade, scratch_url, "0001")
    assert "image_embeddings" not in await _tables(scratch_url)
    assert "user_caption" not in await _columns(scratch_url, "images")
    engine = create_engine(scratch_url)
    async with engine.connect() as conn:
        # The rebuilt table (SQLite batch mode) kept its rows.
        assert (await conn.execute(text("SELECT caption FROM images"))).scalar_one() == "a dog"
    await engine.dispose()


async def _indexes(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: {ix["name"] for ix in inspect(c).get_indexes(table)})
    await engine.dispose()
    return {n for n in names if n}


async def test_0003_indexes_the_upload_time(scratch_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, scratch_url, "0003")
    assert "ix_images_created_at" in await _indexes(scratch_url, "images")
    await asyncio.to_thread(migrate.downgrade, scratch_url, "0002")
    assert "ix_images_created_at" not in await _indexes(scratch_url, "images")
