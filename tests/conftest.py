"""Shared fixtures. Database tests run on SQLite, and on Postgres too when TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import io
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import text
from sqlalchemy.engine import make_url

from capsearch.app import CaptionerFactory, create_app
from capsearch.config import (
    BatchSettings,
    DatabaseSettings,
    LimitSettings,
    ModelSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    VoiceSettings,
)
from capsearch.db import migrate
from capsearch.db.session import create_engine
from capsearch.ml.factory import build_captioner
from capsearch.ml.registry import ensure_available, profile_specs
from tests.browserkit import serve
from tests.fakes import FakeCaptioner

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_HOSTS = ["testserver", "test"]


def _db_params() -> list[str]:
    return ["sqlite", "postgres"] if TEST_DATABASE_URL else ["sqlite"]


async def postgres_admin(url: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE/DROP DATABASE) on the server behind `url`."""
    engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        for sql in statements:
            await conn.execute(text(sql))
    await engine.dispose()


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """A fresh database of its own on TEST_DATABASE_URL's server, so concurrent runs never collide."""
    assert TEST_DATABASE_URL
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(postgres_admin(TEST_DATABASE_URL, drop, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(postgres_admin(TEST_DATABASE_URL, drop))


@pytest.fixture(scope="session", params=_db_params())
def migrated_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database at the latest migration, shared by the session (tables are emptied per test)."""
    if request.param == "postgres":
        with scratch_postgres("capsearch_test") as url:
            migrate.upgrade(url)
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    migrate.upgrade(url)
    yield url


@pytest.fixture
async def db_url(migrated_db_url: str) -> str:
    engine = create_engine(migrated_db_url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM images"))
        await conn.execute(text("DELETE FROM index_changes"))
    await engine.dispose()
    return migrated_db_url


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random-weight models of the real architectures, built offline once per session."""
    cache = tmp_path_factory.mktemp("models_cache")
    ms = ModelSettings(profile="tiny", cache_dir=cache, allow_download=False)
    for spec in profile_specs(ms):
        ensure_available(spec, ms)
    return cache


@pytest.fixture
def settings(db_url: str, models_cache: Path, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database=DatabaseSettings(url=db_url),
        storage=StorageSettings(dir=tmp_path / "media"),
        models=ModelSettings(profile="tiny", cache_dir=models_cache, allow_download=False, device="cpu"),
        caption_batch=BatchSettings(max_batch_size=8, max_wait_ms=10, queue_limit=64),
        limits=LimitSettings(),
        # The tests' "speech" is mostly a loud tone, which Silero rightly hears as no voice: the loudness
        # rule judges it, and recordings end at voice.stop unless a test turns auto-stop on
        # (tests/test_vad.py and the browser's voice tests run Silero on real speech).
        voice=VoiceSettings(vad=False, end_silence_ms=0),
        # The test clients' own host names (httpx's ASGITransport and Starlette's TestClient).
        server=ServerSettings(allowed_hosts=TEST_HOSTS),
    )


async def _serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def fake_captioner() -> FakeCaptioner:
    return FakeCaptioner()


@pytest.fixture
def captioner_factory(request: pytest.FixtureRequest, fake_captioner: FakeCaptioner) -> CaptionerFactory:
    """The real BLIP loading path over the tiny model; modules marked `fake_captioner` get the fake
    (the same instance as the `fake_captioner` fixture, so a test can hold its gate)."""
    if request.node.get_closest_marker("fake_captioner"):
        return lambda _settings: fake_captioner
    return build_captioner


@pytest.fixture
async def app(settings: Settings, captioner_factory: CaptionerFactory) -> FastAPI:
    return create_app(settings, captioner_factory=captioner_factory)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _serve(app):
        yield c


@pytest.fixture
def web(app: FastAPI) -> Iterator[TestClient]:
    """The app behind Starlette's TestClient: the socket tests speak /ws through it (tests/ws_page.py)."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
async def server(app: FastAPI) -> AsyncIterator[str]:
    """The app in a real uvicorn server on a free port (for the browser tests); yields its base URL."""
    async with serve(app) as url:
        yield url


def photo_bytes(seed: int, size: tuple[int, int] = (320, 240), fmt: str = "JPEG") -> bytes:
    """A distinct real image per seed (random blocks of colour, so every seed hashes differently)."""
    rnd = random.Random(seed)
    img = PILImage.new("RGB", size, tuple(rnd.randrange(256) for _ in range(3)))
    for _ in range(12):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        box = (x, y, min(size[0], x + rnd.randrange(10, 120)), min(size[1], y + rnd.randrange(10, 120)))
        img.paste(tuple(rnd.randrange(256) for _ in range(3)), box)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def photos() -> Iterator[list[bytes]]:
    yield [photo_bytes(i) for i in range(6)]
