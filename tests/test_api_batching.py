"""The API under concurrent clients, a full queue, a failing model, and a restart — with fake models."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from capsearch.app import create_app
from capsearch.config import BatchSettings, Settings
from capsearch.events import ImageChanged
from tests.apikit import count_rows, files, state_of
from tests.conftest import _serve, photo_bytes
from tests.fakes import FakeCaptioner

pytestmark = pytest.mark.fake_captioner


async def test_concurrent_clients_are_grouped_into_batches(
    client: httpx.AsyncClient, fake_captioner: FakeCaptioner
) -> None:
    # Hold the model on the first request so the other seven pile up behind it, then release.
    fake_captioner.gate.clear()
    app = client._transport.app  # type: ignore[attr-defined]
    first = asyncio.create_task(client.post("/api/images?wait=true", files=files(photo_bytes(100))))
    await asyncio.to_thread(fake_captioner.entered.wait, 10)
    async with state_of(app).events.subscribe() as updates:
        rest = [
            asyncio.create_task(client.post("/api/images?wait=true", files=files(photo_bytes(101 + i))))
            for i in range(7)
        ]
        # Each image is announced only after its caption request is queued: seven announcements
        # mean seven requests wait behind the held batch.
        announced: set[int] = set()
        while len(announced) < 7:
            ev = await asyncio.wait_for(updates.get(), 30)
            announced.add(ev.image_id)
    assert state_of(app).caption_batcher.depth == 7
    fake_captioner.gate.set()
    responses = await asyncio.gather(first, *rest)
    assert all(r.status_code == 201 for r in responses)
    assert fake_captioner.batches[0] == 1
    assert fake_captioner.batches[1] == 7
    assert sorted({r.json()["items"][0]["image"]["status"] for r in responses}) == ["ready"]


async def test_full_queue_answers_503_and_stores_nothing(
    settings: Settings, fake_captioner: FakeCaptioner
) -> None:
    settings.caption_batch = BatchSettings(max_batch_size=1, max_wait_ms=0, queue_limit=2)
    app = create_app(settings, captioner_factory=lambda _s: fake_captioner)
    fake_captioner.gate.clear()
    async for client in _serve(app):
        running = asyncio.create_task(client.post("/api/images", files=files(photo_bytes(200))))
        await asyncio.to_thread(fake_captioner.entered.wait, 10)
        await running
        queued = [await client.post("/api/images", files=files(photo_bytes(201 + i))) for i in range(2)]
        assert [r.status_code for r in queued] == [202, 202]
        busy = await client.post("/api/images", files=files(photo_bytes(250)))
        assert busy.status_code == 503
        assert busy.json()["code"] == "busy"
        assert busy.headers["retry-after"]
        assert await count_rows(app) == 3
        assert len(state_of(app).store.all_files()) == 3 * 2
        fake_captioner.gate.set()


async def test_a_failing_batch_fails_its_images_and_the_server_keeps_serving(
    settings: Settings,
) -> None:
    fake = FakeCaptioner(fail=lambda batch: any(im.width == 111 for im in batch))
    app = create_app(settings, captioner_factory=lambda _s: fake)
    async for client in _serve(app):
        bad = await client.post("/api/images?wait=true", files=files(photo_bytes(300, size=(111, 90))))
        assert bad.status_code == 201
        image = bad.json()["items"][0]["image"]
        assert image["status"] == "failed"
        assert "failed on purpose" in image["error"]
        good = await client.post("/api/images?wait=true", files=files(photo_bytes(301)))
        assert good.json()["items"][0]["image"]["status"] == "ready"
        # Sending the same bytes again retries a failed caption.
        fake._fail = None
        retry = await client.post("/api/images?wait=true", files=files(photo_bytes(300, size=(111, 90))))
        assert retry.json()["items"][0]["image"]["status"] == "ready"


async def test_work_left_by_a_stopped_server_is_captioned_on_the_next_start(
    settings: Settings, fake_captioner: FakeCaptioner
) -> None:
    settings.caption_batch.shutdown_timeout_s = 0.05
    fake_captioner.gate.clear()
    app = create_app(settings, captioner_factory=lambda _s: fake_captioner)
    async for client in _serve(app):
        r = await client.post("/api/images", files=files(photo_bytes(400)))
        image_id = r.json()["items"][0]["image"]["id"]
        await asyncio.to_thread(fake_captioner.entered.wait, 10)
    # The model was still busy when the server stopped: the image is kept, waiting.
    fake_captioner.gate.set()
    fresh = FakeCaptioner()
    app2 = create_app(settings, captioner_factory=lambda _s: fresh)
    async for client in _serve(app2):
        async with state_of(app2).events.subscribe() as updates:
            status = (await client.get(f"/api/images/{image_id}")).json()["status"]
            assert status in ("received", "captioning", "ready")
            while status != "ready":
                ev = await asyncio.wait_for(updates.get(), 10)
                status = (
                    ev.image.status if isinstance(ev, ImageChanged) and ev.image_id == image_id else status
                )
        assert fresh.batches == [1]
        assert (await client.get(f"/api/images/{image_id}")).json()["caption"].startswith("a picture")


async def test_unmigrated_database_refuses_to_start(settings: Settings, tmp_path: object) -> None:
    settings.database.url = f"sqlite+aiosqlite:///{tmp_path}/empty.db"
    app: FastAPI = create_app(settings, captioner_factory=lambda _s: FakeCaptioner())
    with pytest.raises(RuntimeError, match="capsearch migrate"):
        async with app.router.lifespan_context(app):
            pass
