"""The idle gallery's server side: which examples, remote fallback, captions at background priority."""

from __future__ import annotations

import asyncio
import io
import random

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from capsearch.config import GallerySettings, Settings
from capsearch.services.gallery import ExampleCaption, Gallery
from capsearch.templating import web_dir
from tests.apikit import files, state_of
from tests.conftest import photo_bytes
from tests.fakes import FakeCaptioner

pytestmark = pytest.mark.fake_captioner

EXAMPLES = web_dir() / "static" / "examples"


def gallery_for(app: FastAPI, settings: GallerySettings, http: httpx.AsyncClient | None = None) -> Gallery:
    state = state_of(app)
    return Gallery(
        settings,
        captioner=state.caption_batcher,
        sessions=state.sessions,
        store=state.store,
        examples_dir=EXAMPLES,
        limits=state.settings.limits,
        http=http,
        rng=random.Random(7),
    )


def test_bundled_examples_are_licensed() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    assert len(names) >= 4
    license_text = (EXAMPLES / "LICENSE").read_text()
    for name in names:
        assert name in license_text, f"{name} has no source/licence line in web/static/examples/LICENSE"


async def test_an_empty_collection_gets_bundled_examples(client: httpx.AsyncClient, app: FastAPI) -> None:
    examples = await gallery_for(app, GallerySettings(count=4)).pick()
    assert len(examples) == 4 and len({e.key for e in examples}) == 4
    assert {e.source for e in examples} == {"bundled"}
    for e in examples:
        assert (await client.get(e.image_url)).status_code == 200
        assert max(e.display.size) <= 640


async def test_examples_mix_in_the_collection(client: httpx.AsyncClient, app: FastAPI) -> None:
    r = await client.post(
        "/api/images?wait=true", files=files(photo_bytes(1), photo_bytes(2), photo_bytes(3))
    )
    ids = {i["image"]["id"] for i in r.json()["items"]}
    examples = await gallery_for(app, GallerySettings(count=4, collection_share=0.5)).pick()
    from_collection = [e for e in examples if e.source == "collection"]
    assert len(from_collection) == 2 and len(examples) == 4
    assert {int(e.key.removeprefix("image-")) for e in from_collection} <= ids
    assert all(e.image_url.startswith("/media/thumbs/") for e in from_collection)


async def test_an_unreachable_remote_source_falls_back_to_the_bundle(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    settings = GallerySettings(
        count=3, remote_url_template="http://127.0.0.1:9/{seed}.jpg", remote_timeout_s=1
    )
    async with httpx.AsyncClient() as http:
        examples = await gallery_for(app, settings, http).pick()
    assert [e.source for e in examples] == ["bundled"] * 3


async def test_a_remote_source_is_used_when_it_answers(app: FastAPI, client: httpx.AsyncClient) -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        seed = int(request.url.path.strip("/").removesuffix(".jpg"))
        return httpx.Response(200, content=photo_bytes(seed), headers={"content-type": "image/jpeg"})

    settings = GallerySettings(
        count=2, collection_share=0, remote_url_template="https://photos.example/{seed}.jpg"
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as http:
        examples = await gallery_for(app, settings, http).pick()
    assert [e.source for e in examples] == ["remote", "remote"]
    shown = PILImage.open(io.BytesIO(__import__("base64").b64decode(examples[0].image_url.split(",", 1)[1])))
    assert shown.format == "JPEG"


async def test_examples_are_captioned_and_not_stored(client: httpx.AsyncClient, app: FastAPI) -> None:
    gallery = gallery_for(app, GallerySettings(count=3))
    examples = await gallery.pick()
    landed: list[ExampleCaption] = []

    async def on_caption(result: ExampleCaption) -> None:
        landed.append(result)

    await gallery.caption(examples, on_caption)
    assert sorted(r.example.key for r in landed) == sorted(e.key for e in examples)
    assert all(isinstance(r.caption, str) and r.caption for r in landed)
    assert (await client.get("/api/images")).json()["total"] == 0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.caption_batch.max_batch_size = 2
    return settings


async def test_a_gallery_never_delays_an_interactive_upload(
    client: httpx.AsyncClient, app: FastAPI, fake_captioner: FakeCaptioner
) -> None:
    gallery = gallery_for(app, GallerySettings(count=4))
    examples = await gallery.pick()
    fake_captioner.gate.clear()

    async def ignore(_result: ExampleCaption) -> None:
        return None

    showing = asyncio.create_task(gallery.caption(examples, ignore))
    await asyncio.to_thread(fake_captioner.entered.wait, 10)  # two examples on the (slow) model
    batcher = state_of(app).caption_batcher
    async with state_of(app).events.subscribe() as updates:
        upload = asyncio.create_task(client.post("/api/images?wait=true", files=files(photo_bytes(9))))
        await asyncio.wait_for(updates.get(), 30)  # announced once its caption request is queued
    assert batcher.depth == 3  # two examples and the upload wait
    fake_captioner.gate.set()
    assert (await upload).json()["items"][0]["image"]["status"] == "ready"
    await showing
    # The upload (320×240) rode in the very next batch, ahead of the examples queued before it.
    assert (320, 240) in fake_captioner.sizes[1]
    assert all((320, 240) not in sizes for sizes in fake_captioner.sizes[2:])
