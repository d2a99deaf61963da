"""REST end to end: upload, poll, wait=true, duplicates, list, media, errors — with the tiny BLIP."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from fastapi import FastAPI

from capsearch.events import ImageChanged
from tests.apikit import count_rows, files, state_of
from tests.conftest import photo_bytes


async def test_upload_then_poll_until_captioned(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with state_of(app).events.subscribe() as updates:
        r = await client.post("/api/images", files=files(photo_bytes(1)))
        assert r.status_code == 202, r.text
        item = r.json()["items"][0]
        assert item["ok"] and not item["duplicate"]
        image = item["image"]
        assert image["status"] in ("received", "captioning", "ready")
        assert (image["width"], image["height"]) == (320, 240)
        # Wait for the service's own "ready" event rather than sleeping.
        while True:
            ev = await asyncio.wait_for(updates.get(), 30)
            if (
                isinstance(ev, ImageChanged)
                and ev.image_id == image["id"]
                and ev.image.status in ("ready", "failed")
            ):
                break
    polled = (await client.get(f"/api/images/{image['id']}")).json()
    assert polled["status"] == "ready"
    assert isinstance(polled["caption"], str) and polled["caption"].strip()
    assert polled["caption_model"].endswith("blip-captioner")


async def test_wait_true_returns_201_with_captions(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/images?wait=true", files=files(photo_bytes(2), photo_bytes(3)))
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["image"]["status"] for i in items] == ["ready", "ready"]
    for i in items:
        img = i["image"]
        assert img["caption"]
        assert set(img) >= {"id", "status", "caption", "width", "height", "sha256", "url"}
        assert img["url"] == f"/media/originals/{img['sha256']}"


async def test_same_bytes_return_the_existing_image(client: httpx.AsyncClient, app: FastAPI) -> None:
    first = (await client.post("/api/images?wait=true", files=files(photo_bytes(4)))).json()["items"][0]
    again = (await client.post("/api/images?wait=true", files=files(photo_bytes(4)))).json()["items"][0]
    assert again["duplicate"] is True
    assert again["image"]["id"] == first["image"]["id"]
    assert again["image"]["caption"] == first["image"]["caption"]
    assert await count_rows(app) == 1


async def test_each_file_reports_its_own_outcome(client: httpx.AsyncClient, app: FastAPI) -> None:
    blobs = [photo_bytes(5), b"just some text, not an image", b"", photo_bytes(6)]
    r = await client.post("/api/images", files=files(*blobs, names=["a.jpg", "b.png", "c.jpg", "d.jpg"]))
    assert r.status_code == 202
    items = r.json()["items"]
    assert [i["ok"] for i in items] == [True, False, False, True]
    assert items[1]["error"]["code"] == "unsupported_type"
    assert items[2]["error"]["code"] == "empty_file"
    assert items[1]["filename"] == "b.png"
    assert await count_rows(app) == 2


@pytest.mark.parametrize(
    ("blob", "status", "code"),
    [
        (b"", 422, "empty_file"),
        (b"hello, I am text pretending to be a PNG", 415, "unsupported_type"),
        (photo_bytes(7)[:600], 422, "corrupt_image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_type"),
    ],
)
async def test_rejected_file_is_a_json_error_and_nothing_is_written(
    client: httpx.AsyncClient, app: FastAPI, blob: bytes, status: int, code: str
) -> None:
    r = await client.post("/api/images", files=files(blob, names=["x.png"]))
    assert r.status_code == status
    body = r.json()
    assert body["code"] == code and body["detail"]
    assert await count_rows(app) == 0
    assert state_of(app).store.all_files() == []


async def test_oversize_file_is_413(client: httpx.AsyncClient, app: FastAPI) -> None:
    state_of(app).settings.limits.max_image_bytes = 10_000
    r = await client.post("/api/images", files=files(photo_bytes(8, size=(1200, 900))))
    assert r.status_code == 413
    assert r.json()["code"] == "too_large"
    assert await count_rows(app) == 0
    assert state_of(app).store.all_files() == []


async def test_list_is_newest_first_with_cursor(client: httpx.AsyncClient) -> None:
    ids = []
    for seed in range(10, 15):
        r = await client.post("/api/images", files=files(photo_bytes(seed)))
        ids.append(r.json()["items"][0]["image"]["id"])
    page1 = (await client.get("/api/images", params={"limit": 3})).json()
    assert page1["total"] == 5
    assert [i["id"] for i in page1["items"]] == ids[::-1][:3]
    page2 = (await client.get("/api/images", params={"limit": 3, "cursor": page1["next"]})).json()
    assert [i["id"] for i in page2["items"]] == ids[::-1][3:]
    assert page2["next"] is None
    bad = await client.get("/api/images", params={"cursor": "../etc"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


async def test_the_list_finds_an_image_by_its_sha256(client: httpx.AsyncClient) -> None:
    data = photo_bytes(16)
    image = (await client.post("/api/images", files=files(data))).json()["items"][0]["image"]
    await client.post("/api/images", files=files(photo_bytes(17)))
    digest = hashlib.sha256(data).hexdigest()
    for asked in (digest, digest.upper()):
        found = (await client.get("/api/images", params={"sha256": asked})).json()
        assert [(i["id"], i["sha256"]) for i in found["items"]] == [(image["id"], digest)]
        assert found["total"] == 1 and found["next"] is None
    # Not stored is an empty answer, not a 404 (browsers log those as console errors).
    missing = await client.get("/api/images", params={"sha256": "0" * 64})
    assert missing.status_code == 200 and missing.json() == {"items": [], "total": 0, "next": None}
    bad = await client.get("/api/images", params={"sha256": "xyz"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


async def test_media_is_served_with_type_and_nosniff(client: httpx.AsyncClient) -> None:
    blob = photo_bytes(20, size=(1600, 1200))
    img = (await client.post("/api/images", files=files(blob))).json()["items"][0]["image"]
    original = await client.get(img["url"])
    assert original.status_code == 200
    assert original.content == blob
    assert original.headers["content-type"] == "image/jpeg"
    assert original.headers["x-content-type-options"] == "nosniff"
    thumb = await client.get(img["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/jpeg"
    import io

    from PIL import Image as PILImage

    assert max(PILImage.open(io.BytesIO(thumb.content)).size) == 640
    missing = await client.get("/media/thumbs/" + "0" * 64)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert (await client.get("/media/thumbs/..%2F..%2Fetc%2Fpasswd")).status_code == 404


async def test_unknown_image_is_404_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/images/999999")
    assert r.status_code == 404
    assert r.json() == {"detail": "There is no image with id 999999.", "code": "not_found"}


async def test_health_ready_metrics_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": "ok",
        "captioner": "ok",
        "embedder": "ok",
        "transcriber": "ok",
    }
    await client.post("/api/images?wait=true", files=files(photo_bytes(30)))
    metrics = (await client.get("/metrics")).text
    assert 'capsearch_batch_size_count{model="captioner"}' in metrics
    spec = (await client.get("/openapi.json")).json()
    op = spec["paths"]["/api/images"]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert op["summary"] and op["description"].startswith("Upload images")
