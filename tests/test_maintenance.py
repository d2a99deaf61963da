"""Faults heal without a restart (in-process, on SQLite and Postgres): captions and file names are
cleaned alike on both databases, the maintenance sweep re-queues stuck rows and removes temp files and
orphans, a duplicate upload restarts a lost caption, and shutdown answers waiters within its grace.

The same behaviour with real processes (a PostgreSQL cluster stopped mid-traffic, a SIGKILLed server,
SIGTERM) is in tests/test_faults.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from capsearch.app import create_app
from capsearch.compose import index_dir
from capsearch.config import MaintenanceSettings, ServerSettings, Settings
from capsearch.db.models import Image, ImageStatus, utcnow
from capsearch.services.maintenance import Maintenance, SweepReport
from capsearch.shutdown import ShutdownClock
from capsearch.text import clean_text
from tests.apikit import files, state_of
from tests.conftest import TEST_HOSTS, photo_bytes
from tests.fakes import FakeCaptioner

pytestmark = pytest.mark.fake_captioner

HOUR_AGO = time.time() - 3600


@asynccontextmanager
async def serving(
    settings: Settings, captioner: FakeCaptioner | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    fake = captioner or FakeCaptioner()
    app = create_app(settings, captioner_factory=lambda _s: fake)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


async def until(condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
    """Poll a condition (another task's work) until it holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await _holds(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], object]) -> bool:
    result = condition()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


async def stored_row(app: FastAPI, seed: int, status: ImageStatus, idle_s: float) -> Image:
    """A row with its files, as a process that died (or whose caption write gave up) leaves it: no task."""
    state = state_of(app)
    norm = await state.images.normalise(photo_bytes(seed))
    state.store.put(norm.sha256, norm.mime, photo_bytes(seed), norm.thumbnail_jpeg)
    image = Image(
        sha256=norm.sha256,
        mime=norm.mime,
        width=norm.width,
        height=norm.height,
        size_bytes=norm.size_bytes,
        status=status,
        updated_at=utcnow() - timedelta(seconds=idle_s),
    )
    async with state.sessions() as s, s.begin():
        s.add(image)
    return image


def plant(path: Path, data: bytes = b"x", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def orphan_pair(root: Path, sha: str, mtime: float | None) -> list[Path]:
    """An original and a thumbnail for a hash no row names (a kill between file write and insert)."""
    return [
        plant(root / "originals" / sha[:2] / sha[2:4] / f"{sha}.jpg", photo_bytes(1), mtime),
        plant(root / "thumbs" / sha[:2] / sha[2:4] / f"{sha}.jpg", photo_bytes(1), mtime),
    ]


# ---- text that cannot be stored ---------------------------------------------------------------------


def test_clean_text_removes_what_hides_or_cannot_be_stored() -> None:
    assert clean_text("a\x00b") == "ab"  # NUL: PostgreSQL text cannot hold it
    assert clean_text("evil\u202egpj.exe") == "evilgpj.exe"  # bidi override
    assert clean_text("zero\u200bwidth\u200c\u200d\ufeff") == "zerowidth"
    assert clean_text("\u2066isolate\u2069 \u00adsoft") == "isolate soft"
    assert clean_text("lone \ud800 surrogate") == "lone surrogate"
    assert clean_text("  two\tlines\r\nhere  ") == "two lines here"
    assert clean_text("cafe\u0301") == "caf\u00e9"  # NFC: one way to spell each letter
    assert clean_text("\u200b\u202e\ufeff \x00") == ""


async def test_a_caption_is_cleaned_and_an_invisible_one_is_refused(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    r = await client.post("/api/images?wait=true", files=files(photo_bytes(11)))
    image_id = r.json()["items"][0]["image"]["id"]
    r = await client.patch(
        f"/api/images/{image_id}", json={"caption": "a\x00 dog\u202e on\u200b the\ngrass\ufeff"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["caption"] == "a dog on the grass"
    assert (await client.get(f"/api/images/{image_id}")).json()["user_caption"] == "a dog on the grass"
    found = (await client.get("/api/search", params={"q": "dog on the grass"})).json()
    assert found["hits"][0]["image"]["id"] == image_id

    for invisible in ("\u200b", "\u202e\u200d\ufeff", "\x00\x01"):
        r = await client.patch(f"/api/images/{image_id}", json={"caption": invisible})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "empty_caption"
        assert r.json()["detail"].endswith(".")
    # The page's form: the reason is shown on the card, and the caption is unchanged.
    r = await client.post(f"/ui/images/{image_id}/caption", data={"caption": "\u200b\u202e"})
    assert r.status_code == 422
    assert "Write a caption" in r.text and 'role="alert"' in r.text
    r = await client.post(f"/ui/images/{image_id}/caption", data={"caption": "two\x00 cats\u202e"})
    assert r.status_code == 200 and '<p class="caption">two cats</p>' in r.text
    assert (await client.get(f"/api/images/{image_id}")).json()["caption"] == "two cats"


class DirtyCaptioner(FakeCaptioner):
    """A model whose output carries what a database must not be given."""

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        return [f"a\x00 red\u202e car\u200b {caption}" for caption in super().predict(batch)]


async def test_a_model_caption_and_a_file_name_are_cleaned_before_they_are_stored(settings: Settings) -> None:
    async with serving(settings, DirtyCaptioner()) as (_app, client):
        name = "holiday\u200b\u202egpj.exe.jpg"
        r = await client.post("/api/images?wait=true", files=files(photo_bytes(12), names=[name]))
        assert r.status_code == 201, r.text
        image = r.json()["items"][0]["image"]
        assert image["status"] == "ready"
        assert image["caption"].startswith("a red car a picture 320x240")
        assert "\x00" not in image["caption"] and "\u202e" not in image["caption"]
        assert image["filename"] == "holidaygpj.exe.jpg"


# ---- stuck rows ---------------------------------------------------------------------------------------


async def test_the_sweep_requeues_rows_stuck_without_a_task(settings: Settings) -> None:
    async with serving(settings) as (app, client):
        stuck = await stored_row(app, 21, ImageStatus.CAPTIONING, idle_s=3600)
        fresh = await stored_row(app, 22, ImageStatus.RECEIVED, idle_s=0)
        sweeper = Maintenance(settings.maintenance, state_of(app).images)
        report = await sweeper.sweep()
        assert report.requeued == 1
        # Queued again and tracked: a second sweep does not queue it twice.
        assert (await sweeper.sweep()).requeued == 0
        ready = await state_of(app).images.wait_captioned(stuck.id)
        assert ready.status is ImageStatus.READY and ready.caption
        # Not stuck long enough yet: left alone.
        assert (await client.get(f"/api/images/{fresh.id}")).json()["status"] == "received"


async def test_a_stuck_row_is_captioned_without_a_restart(settings: Settings) -> None:
    settings.maintenance = MaintenanceSettings(sweep_interval_s=0.05, stuck_after_s=0.05)
    async with serving(settings) as (app, client):
        stuck = await stored_row(app, 23, ImageStatus.RECEIVED, idle_s=1)

        async def ready() -> bool:
            return (await client.get(f"/api/images/{stuck.id}")).json()["status"] == "ready"

        await until(ready, "the periodic sweep to caption the stuck row")


async def test_a_duplicate_upload_restarts_a_lost_caption_and_waits_for_it(settings: Settings) -> None:
    async with serving(settings) as (app, client):
        lost = await stored_row(app, 24, ImageStatus.CAPTIONING, idle_s=0)
        r = await client.post("/api/images?wait=true", files=files(photo_bytes(24)))
        assert r.status_code == 201, r.text
        item = r.json()["items"][0]
        assert item["duplicate"] and item["image"]["id"] == lost.id
        assert item["image"]["status"] == "ready" and item["image"]["caption"].startswith("a picture")


# ---- temp files and orphans -----------------------------------------------------------------------------


async def test_start_up_removes_temp_files_and_orphans_but_nothing_a_row_names(settings: Settings) -> None:
    root = settings.storage.dir
    async with serving(settings) as (app, client):  # a first run stores one real image
        r = await client.post("/api/images?wait=true", files=files(photo_bytes(31)))
        kept = r.json()["items"][0]["image"]
    kept_files = [p for p in state_of(app).store.all_files() if kept["sha256"] in p.name]
    for p in kept_files:
        os.utime(p, (HOUR_AGO, HOUR_AGO))
    old_orphan = orphan_pair(root, "a" * 64, HOUR_AGO)
    new_orphan = orphan_pair(root, "b" * 64, None)  # within the grace: an upload may be about to insert
    old_tmp = plant(root / "originals" / "ab" / "cd" / ".tmp-dead.jpg", mtime=HOUR_AGO)
    new_tmp = plant(root / "thumbs" / "ab" / "cd" / ".tmp-live.jpg")
    old_index_tmp = plant(index_dir(settings) / ".tmp-index.faiss-x", mtime=HOUR_AGO)
    stranger = plant(root / "originals" / "ab" / "cd" / "notes.txt", mtime=HOUR_AGO)

    async with serving(settings) as (app, client):
        assert not any(p.exists() for p in [*old_orphan, old_tmp, old_index_tmp])
        assert all(p.exists() for p in [*new_orphan, new_tmp, stranger, *kept_files])
        for kind in ("originals", "thumbs"):
            assert (await client.get(f"/media/{kind}/{kept['sha256']}")).status_code == 200
            # Files on disk, but no row: never served.
            r = await client.get(f"/media/{kind}/{'b' * 64}")
            assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert (await client.get(f"/api/images/{kept['id']}")).json()["status"] == "ready"


async def test_orphans_an_upload_is_writing_are_left_alone(settings: Settings) -> None:
    settings.maintenance = MaintenanceSettings(orphan_grace_s=0.01, temp_file_age_s=0.01)
    async with serving(settings) as (app, _client):
        service = state_of(app).images
        orphan = orphan_pair(settings.storage.dir, "c" * 64, HOUR_AGO)
        sweeper = Maintenance(settings.maintenance, service)
        async with service.claims.hold("c" * 64):  # as an upload holds it from file write to insert
            await sweeper.sweep_files(SweepReport())
            assert all(p.exists() for p in orphan)
        report = SweepReport()
        await sweeper.sweep_files(report)
        assert report.orphan_files == 2 and not any(p.exists() for p in orphan)


async def test_new_temp_files_and_orphans_go_without_a_restart(settings: Settings) -> None:
    settings.maintenance = MaintenanceSettings(sweep_interval_s=0.05, orphan_grace_s=0.2, temp_file_age_s=0.2)
    async with serving(settings) as (_app, client):
        orphan = orphan_pair(settings.storage.dir, "d" * 64, None)
        tmp = plant(settings.storage.dir / "thumbs" / "dd" / "dd" / ".tmp-abandoned.jpg")
        await until(lambda: not any(p.exists() for p in [*orphan, tmp]), "the sweep to remove the orphans")
        r = await client.get(f"/media/thumbs/{'d' * 64}")
        assert r.status_code == 404


# ---- shutdown -----------------------------------------------------------------------------------------


async def test_shutdown_answers_a_waiting_upload_503_within_the_grace(settings: Settings) -> None:
    settings.server = ServerSettings(allowed_hosts=TEST_HOSTS, shutdown_grace_s=0.3)
    settings.caption_batch.shutdown_timeout_s = 0.05
    held = FakeCaptioner()
    held.gate.clear()
    try:
        async with serving(settings, held) as (app, client):
            waiting = asyncio.create_task(client.post("/api/images?wait=true", files=files(photo_bytes(41))))
            await asyncio.to_thread(held.entered.wait, 10)
            clock: ShutdownClock = app.state.shutdown_clock
            clock.begin()  # what the server does on SIGTERM (capsearch.server.Server)
            r = await asyncio.wait_for(waiting, 10)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "shutting_down" and r.headers["Retry-After"]
            image_id = (await client.get("/api/images", params={"limit": 1})).json()["items"][0]["id"]
    finally:
        held.gate.set()
    # Acknowledged before the shutdown, so not lost: the next start captions it.
    async with serving(settings) as (app, client):
        ready = await state_of(app).images.wait_captioned(image_id)
        assert ready.status is ImageStatus.READY
