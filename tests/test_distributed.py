"""Distributed mode end to end: two web replicas and two model workers as real processes, sharing
PostgreSQL, Redis and a media directory (tests/distkit.py).

Checked as a deployment sees it: an upload through replica A shows live on a page of replica B and is
found by a search on B; a worker SIGKILLed mid-batch loses no caption and duplicates none (one
change-feed row per image: the caption was written exactly once); a poison job ends as a clear
failure; with every worker stopped requests get `no_workers` at once, and all is well again when a
worker returns; a socket upload begun on A resumes on B. Needs PostgreSQL (TEST_DATABASE_URL, as on
CI) and Redis; marked `faults` (slow).
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import struct
from collections.abc import AsyncIterator, Iterator
from hashlib import sha256
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image as PILImage
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect

from capsearch.batching import Priority
from capsearch.bench.fakemodels import POISON_PIXEL
from capsearch.broker.keys import GROUP, Keys
from capsearch.db import migrate
from capsearch.db.session import create_engine
from tests.apikit import files, until
from tests.conftest import TEST_DATABASE_URL, photo_bytes, scratch_postgres
from tests.distkit import REDIS_URL, Topology, redis_reachable

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(not TEST_DATABASE_URL, reason="distributed mode is tested on PostgreSQL"),
    pytest.mark.skipif(not redis_reachable(), reason=f"no Redis at {REDIS_URL}"),
]


@pytest.fixture
def db_url() -> Iterator[str]:
    with scratch_postgres("capsearch_dist") as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture
async def topology(db_url: str, tmp_path: Path) -> AsyncIterator[Topology]:
    topo = Topology(db_url, tmp_path)
    try:
        yield topo
    finally:
        await asyncio.to_thread(topo.close)


async def query(db_url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql))]
    finally:
        await engine.dispose()


async def page_of(url: str) -> ClientConnection:
    ws_url = url.replace("http://", "ws://") + "/ws"
    return await connect(ws_url, origin=url)  # type: ignore[arg-type]


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (48, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


def pending_of(topo: Topology, consumer: str) -> int:
    """Caption jobs a worker has taken and not acknowledged."""
    client, keys = redis.Redis.from_url(REDIS_URL), Keys(topo.prefix)
    total = 0
    for stream in (keys.captions(p) for p in Priority):
        if client.exists(stream):
            for c in client.xinfo_consumers(stream, GROUP):
                if c["name"].decode() == consumer:
                    total += int(c["pending"])
    return total


async def test_replicas_and_workers_share_the_work_and_lose_nothing(topology: Topology, db_url: str) -> None:
    w1, w2 = await asyncio.gather(topology.worker("worker-1"), topology.worker("worker-2"))
    a, b = await asyncio.gather(topology.web("web-a"), topology.web("web-b"))
    seen_on_b: list[str] = []
    page = await page_of(b.url)

    async def listen() -> None:
        async for message in page:
            seen_on_b.append(str(message))

    listener = asyncio.create_task(listen())
    try:
        async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a:
            ids = []
            for seed in range(12):
                r = await on_a.post("/api/images", files=files(photo_bytes(seed)))
                assert r.status_code == 202, r.text  # accepted: captioned by a worker
                ids.append(r.json()["items"][0]["image"]["id"])
            # Worker 1 dies with a batch in hand: its jobs go to worker 2 after the visibility timeout.
            await until(lambda: pending_of(topology, w1.name) > 0, "worker 1 to take a batch")
            topology.kill(w1)

            async def all_ready() -> bool:
                rows = await query(db_url, "SELECT status FROM images")
                return len(rows) == 12 and all(s == "ready" for (s,) in rows)

            await until(all_ready, "every image to be captioned", 60)
        writes = dict(await query(db_url, "SELECT image_id, count(*) FROM index_changes GROUP BY image_id"))
        assert writes == dict.fromkeys(ids, 1)  # each caption written exactly once, none lost

        # Live on B's page: every image's card arrived (as the typed event, rendered on B).
        await until(lambda: all(f"image-{i}" in "".join(seen_on_b) for i in ids), "the cards on B")
        async with httpx.AsyncClient(base_url=b.url, timeout=30) as on_b:
            caption = (await on_b.get(f"/api/images/{ids[5]}")).json()["caption"]
            hits = (await on_b.get("/api/search", params={"q": caption})).json()["hits"]
            assert hits and hits[0]["image"]["id"] == ids[5]
            # A poison image fails clearly after max_attempts, instead of cycling forever.
            r = await on_b.post(
                "/api/images", files=[("files", ("poison.png", png(POISON_PIXEL), "image/png"))]
            )
            poison = r.json()["items"][0]["image"]["id"]

            async def poison_failed() -> bool:
                body = (await on_b.get(f"/api/images/{poison}")).json()
                return body["status"] == "failed" and "failed 3 times" in body["error"]

            await until(poison_failed, "the poison job to fail", 60)
    finally:
        listener.cancel()
        await page.close()
    assert w2.popen.poll() is None


async def test_no_workers_is_answered_at_once_and_recovers(topology: Topology) -> None:
    worker = await topology.worker("worker-1")
    web = await topology.web("web-a")
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as http:
        assert (await http.get("/readyz")).json()["checks"]["captioner"] == "ok (1 worker)"
        topology.kill(worker, signal.SIGTERM)  # a clean stop withdraws its heartbeat at once
        readyz = await http.get("/readyz")
        assert readyz.status_code == 503
        assert readyz.json()["checks"]["captioner"] == "no live workers"
        r = await http.post("/api/images", files=files(photo_bytes(1)))
        assert r.status_code == 503 and r.json()["code"] == "no_workers"
        r = await http.get("/api/search", params={"q": "a dog"})
        assert r.status_code == 503 and r.json()["code"] == "no_workers"
        rows = await query(topology.db_url, "SELECT count(*) FROM images")
        assert rows == [(0,)]  # refused before anything was written

        await topology.worker("worker-2")
        r = await http.post("/api/images?wait=true", files=files(photo_bytes(1)))
        assert r.status_code == 201, r.text
        assert r.json()["items"][0]["image"]["status"] == "ready"
        assert (await http.get("/api/search", params={"q": "a picture"})).status_code == 200
        assert json.loads((await http.get("/readyz")).text)["status"] == "ready"


def chunk(upload_id: str, offset: int, payload: bytes) -> bytes:
    name = upload_id.encode()
    return struct.pack(">BB", 1, len(name)) + name + struct.pack(">Q", offset) + payload


async def answer(page: ClientConnection, kind: str) -> dict[str, object]:
    """The next message of `kind` (live-feed fragments and acks of other kinds are skipped)."""
    async with asyncio.timeout(20):
        while True:
            message = json.loads(await page.recv())
            if message.get("type") == kind or message.get("type") == "upload.rejected":
                return dict(message)


async def test_a_socket_upload_resumes_on_another_replica(topology: Topology) -> None:
    await topology.worker("worker-1")
    a, b = await asyncio.gather(topology.web("web-a"), topology.web("web-b"))
    data = photo_bytes(7, size=(900, 700))
    half = len(data) // 2
    start = {
        "type": "upload.start",
        "id": "resume-me-1",
        "name": "cat.jpg",
        "size": len(data),
        "mime": "image/jpeg",
    }
    page = await page_of(a.url)
    await page.send(json.dumps(start))
    assert (await answer(page, "upload.accepted"))["offset"] == 0
    await page.send(chunk("resume-me-1", 0, data[:half]))
    assert (await answer(page, "upload.ack"))["offset"] == half
    await page.close(code=4000)  # the connection is lost (not the page closed): kept for a resume
    # The page reconnects; the load balancer sends it to B this time.
    page = await page_of(b.url)
    try:
        await page.send(json.dumps({"type": "upload.resume", "id": "resume-me-1"}))
        accepted = await answer(page, "upload.accepted")
        assert accepted["type"] == "upload.accepted" and accepted["offset"] == half, accepted
        await page.send(chunk("resume-me-1", half, data[half:]))
        await answer(page, "upload.ack")
        await page.send(
            json.dumps({"type": "upload.end", "id": "resume-me-1", "sha256": sha256(data).hexdigest()})
        )
        done = await answer(page, "upload.done")
        assert done["type"] == "upload.done", done
    finally:
        await page.close()
    async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:
        r = await http.get(f"/api/images/{done['image_id']}")
        assert r.json()["size_bytes"] == len(data)
