"""Shared by the search tests: a captioner with known captions, uploads (and their upload times), and the
index == database check."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from sqlalchemy import update

from capsearch.app import CaptionerFactory
from capsearch.db.models import Image
from tests.apikit import files, state_of
from tests.conftest import photo_bytes

CAPTIONS = [
    "a dog running on the beach",
    "a red car parked on a city street",
    "a plate of pasta with tomato sauce",
    "snow covered mountains under a blue sky",
    "a cat sleeping on a sofa",
    "two people riding bicycles in a park",
    "a sailboat on a calm lake at sunset",
    "a laptop and a cup of coffee on a desk",
]


class ScriptedCaptioner:
    """`Model[PIL.Image, str]` whose caption is chosen by the image's width: `size_for(caption)` gives
    the size an upload must have to be captioned `caption`. Thread-safe (predict runs in a worker)."""

    name = "captioner"
    model_id = "scripted-captioner"
    _by_width: ClassVar[dict[int, str]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def size_for(cls, caption: str) -> tuple[int, int]:
        with cls._lock:
            for width, known in cls._by_width.items():
                if known == caption:
                    return width, 160
            width = 200 + len(cls._by_width)
            cls._by_width[width] = caption
            return width, 160

    def load(self) -> None:
        pass

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        with self._lock:
            return [self._by_width.get(im.width, f"an unknown picture {im.width} wide") for im in batch]

    def close(self) -> None:
        pass


# A collection with known upload times (tests/test_search_filters.py, test_page_filters.py).
DOGS = [
    "a dog running on the beach",
    "a dog sleeping on a sofa",
    "a brown dog playing in the snow",
    "a dog catching a ball in a park",
]
OTHERS = ["a plate of pasta with tomato sauce", "a red car parked on a city street"]
END_OF_DAY = timedelta(days=1, microseconds=-1)
JAN_10 = datetime(2026, 1, 10, tzinfo=UTC)
TIMES = {  # caption → when it was uploaded
    DOGS[0]: datetime(2026, 1, 5, 10, tzinfo=UTC),
    DOGS[1]: JAN_10,  # the first instant of 10 January
    DOGS[2]: JAN_10 + END_OF_DAY,  # its last
    DOGS[3]: datetime(2026, 1, 20, 12, tzinfo=UTC),
    OTHERS[0]: datetime(2026, 2, 1, tzinfo=UTC),  # the newest image matches no dog query
    OTHERS[1]: JAN_10 - timedelta(microseconds=1),  # the last instant of 9 January
}


async def upload_captioned(client: httpx.AsyncClient, captions: list[str], seed: int = 300) -> dict[str, int]:
    """Upload one image per caption (wait=true, so each is captioned and indexed); caption → id."""
    blobs = [photo_bytes(seed + i, size=ScriptedCaptioner.size_for(c)) for i, c in enumerate(captions)]
    r = await client.post("/api/images?wait=true", files=files(*blobs))
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["image"]["caption"] for i in items] == captions
    return {i["image"]["caption"]: i["image"]["id"] for i in items}


async def assert_index_matches_database(app: FastAPI) -> None:
    """The index holds exactly the images that have a stored vector of the current model."""
    indexer = state_of(app).indexer
    await indexer.settle()
    assert indexer.index.ids() == await indexer.database_ids()


async def set_uploaded(app: FastAPI, times: dict[int, datetime]) -> None:
    """Move images' upload times (created_at), as if they had been uploaded then."""
    async with state_of(app).sessions() as s, s.begin():
        for image_id, when in times.items():
            await s.execute(update(Image).where(Image.id == image_id).values(created_at=when))


async def upload_dated(client: httpx.AsyncClient, app: FastAPI) -> dict[str, int]:
    """DOGS and OTHERS, each uploaded at its time in TIMES; caption → image id."""
    ids = await upload_captioned(client, DOGS + OTHERS, seed=700)
    await set_uploaded(app, {ids[c]: t for c, t in TIMES.items()})
    return ids


# Fixtures for the search tests (import them by name into a test module to use them).


@pytest.fixture
def captioner_factory() -> CaptionerFactory:
    """Overrides the app's captioner: the scripted one captions from the image's seed."""
    return lambda _settings: ScriptedCaptioner()


@pytest.fixture
async def dated(client: httpx.AsyncClient, app: FastAPI) -> dict[str, int]:
    return await upload_dated(client, app)


async def api_search(client: httpx.AsyncClient, q: str, **params: Any) -> dict[str, Any]:
    """GET /api/search, which must answer 200; its JSON."""
    r = await client.get("/api/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
