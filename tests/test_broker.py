"""Distributed mode's parts, in one process: idempotent caption writes, the index change feed and its
gaps, request/reply deadlines (a late answer reaches nobody), worker census and the event relay.
Database tests run on SQLite (and Postgres); the Redis ones need Redis at TEST_REDIS_URL or 6379."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from redis.asyncio import Redis
from sqlalchemy import text

from capsearch.batching import Batcher, Priority
from capsearch.broker import writes
from capsearch.broker.feed import EventRelay, IndexFeed
from capsearch.broker.health import Census, Heartbeat
from capsearch.broker.keys import Keys
from capsearch.broker.rpc import RemoteBatcher, RpcClient
from capsearch.broker.serve import RpcServer
from capsearch.broker.settings import BrokerSettings
from capsearch.broker.uploads import SharedUploadRegistry
from capsearch.broker.wire import Reply, decode_input, decode_output, encode_input, encode_output
from capsearch.config import BatchSettings, UploadSettings
from capsearch.db.models import Image, ImageStatus
from capsearch.db.session import create_engine, session_factory
from capsearch.errors import ModelTimeoutError, NoWorkersError
from capsearch.events import EventBus, ImageDeleted
from capsearch.ml.speech import Clip
from capsearch.ws.uploads import UploadError
from tests.distkit import REDIS_URL, redis_reachable

needs_redis = pytest.mark.skipif(not redis_reachable(), reason=f"no Redis at {REDIS_URL}")


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[object]:
    engine = create_engine(db_url)
    yield session_factory(engine)
    await engine.dispose()


async def _row(sessions: object, job: str) -> int:
    async with sessions() as s, s.begin():  # type: ignore[operator]
        image = Image(
            sha256=uuid.uuid4().hex * 2, mime="image/png", width=1, height=1, size_bytes=1, caption_job=job
        )
        s.add(image)
    return int(image.id)


@pytest.mark.postgres
async def test_a_caption_is_written_once_and_only_for_its_own_job(sessions: object) -> None:
    image_id = await _row(sessions, "job-1")
    vector = np.ones(4, np.float32) / 2
    kw = {"caption": "a cat", "caption_model": "m", "vector": vector, "embed_model": "e"}
    assert await writes.write_caption(sessions, image_id, "stale", **kw) is None  # type: ignore[arg-type]
    written = await writes.write_caption(sessions, image_id, "job-1", **kw)  # type: ignore[arg-type]
    assert written is not None and written.status is ImageStatus.READY and written.caption_job is None
    # Delivered again (its worker died after the commit, before the acknowledgement): a no-op.
    assert await writes.write_caption(sessions, image_id, "job-1", **kw) is None  # type: ignore[arg-type]
    assert await writes.write_failure(sessions, image_id, "job-1", "late") is None  # type: ignore[arg-type]
    async with sessions() as s:  # type: ignore[operator]
        changes = (await s.execute(text("SELECT image_id FROM index_changes"))).scalars().all()
    assert changes == [image_id]
    # A newer job for a row takes over: only one of two replicas re-queueing it wins.
    other = await _row(sessions, "old")
    assert await writes.assign_job(sessions, other, "old", "new-a")  # type: ignore[arg-type]
    assert not await writes.assign_job(sessions, other, "old", "new-b")  # type: ignore[arg-type]


class RecordingIndexer:
    def __init__(self) -> None:
        self.followed: list[list[int]] = []

    async def follow(self, image_ids: Sequence[int]) -> None:
        self.followed.append(list(image_ids))


@pytest.mark.postgres
async def test_the_feed_rereads_a_gap_until_it_fills(sessions: object) -> None:
    indexer = RecordingIndexer()
    feed = IndexFeed(
        redis=None,  # type: ignore[arg-type]  # catch_up reads only the database
        keys=Keys("t"),
        settings=BrokerSettings(),
        sessions=sessions,  # type: ignore[arg-type]
        indexer=indexer,  # type: ignore[arg-type]
    )
    await feed.start_position()

    async def change(seq: int, image_id: int) -> None:
        async with sessions() as s, s.begin():  # type: ignore[operator]
            await s.execute(text(f"INSERT INTO index_changes (seq, image_id) VALUES ({seq}, {image_id})"))

    base = feed.seq
    await change(base + 1, 10)
    await change(base + 3, 30)  # seq base+2 is taken by a transaction that has not committed yet
    assert await feed.catch_up() == 2
    assert indexer.followed == [[10, 30]]
    await change(base + 2, 20)  # it commits: the feed goes back for it
    assert await feed.catch_up() == 1
    assert indexer.followed[-1] == [20]
    assert await feed.catch_up() == 0


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


class SlowEcho:
    """An embedder that answers a text's length after `delay` seconds (per batch)."""

    name = "embedder"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def load(self) -> None:
        pass

    def predict(self, batch: list[str]) -> list[np.ndarray]:
        import time

        time.sleep(self.delay)
        return [np.full(3, len(t), np.float32) for t in batch]

    def close(self) -> None:
        pass


@needs_redis
async def test_a_late_answer_reaches_nobody(redis_client: Redis) -> None:
    keys, settings = Keys(f"test-{uuid.uuid4().hex[:8]}"), BrokerSettings(worker_ttl_s=5)
    local = Batcher(SlowEcho(0.4), BatchSettings(max_batch_size=1, max_wait_ms=1))
    await local.start()
    server = RpcServer(
        redis=redis_client, keys=keys, model="embedder", batcher=local, consumer="w1",
        max_batch=4, in_flight=4, reclaim_after_s=5,
    )  # fmt: skip
    heartbeat = Heartbeat(redis_client, keys, settings, "w1", ["embedder"])
    await heartbeat.start()
    serving = asyncio.create_task(server.run())
    client = RpcClient(redis_client, keys, "replica", deadline_s=5)
    await client.start()
    try:
        with pytest.raises(ModelTimeoutError) as caught:
            await client.call("embedder", "too slow", Priority.INTERACTIVE, deadline_s=0.1)
        assert caught.value.code == "model_timeout"
        # The next request gets its own answer, never the late one (its text is longer).
        vector = await client.call("embedder", "the right answer", Priority.INTERACTIVE)
        assert vector.tolist() == [16.0, 16.0, 16.0]
        assert client.late_replies == 1
    finally:
        await client.stop()
        await server.stop()
        serving.cancel()
        await heartbeat.stop()
        await local.stop()
        await redis_client.delete(*[k async for k in redis_client.scan_iter(f"{keys.prefix}:*")])


@needs_redis
async def test_no_live_worker_is_refused_at_once(redis_client: Redis) -> None:
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}")
    client = RpcClient(redis_client, keys, "replica", deadline_s=30)
    await client.start()
    remote: RemoteBatcher[str, np.ndarray] = RemoteBatcher(
        "embedder", BatchSettings(), client, Census(redis_client, keys)
    )
    await remote.start()
    try:
        async with asyncio.timeout(2):  # at once: not after the 30 s deadline
            with pytest.raises(NoWorkersError):
                await remote.run("a dog")
    finally:
        await remote.stop()
        await client.stop()


@needs_redis
async def test_events_cross_replicas_once_and_never_echo(redis_client: Redis) -> None:
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}")
    bus_a, bus_b = EventBus(), EventBus()
    relay_a, relay_b = EventRelay(redis_client, keys, bus_a, "a"), EventRelay(redis_client, keys, bus_b, "b")
    await relay_a.start()
    await relay_b.start()
    try:
        async with bus_a.subscribe() as on_a, bus_b.subscribe() as on_b:
            bus_a.publish(ImageDeleted(id=7))
            async with asyncio.timeout(5):
                assert await on_b.get() == ImageDeleted(id=7)
            assert await on_a.get() == ImageDeleted(id=7)  # its own, once
            # B's own next event reaches A after anything B forwarded before it (one publisher,
            # one channel: in order), so an echo of 7 would arrive first.
            bus_b.publish(ImageDeleted(id=8))
            async with asyncio.timeout(5):
                assert await on_a.get() == ImageDeleted(id=8)
    finally:
        await relay_a.stop()
        await relay_b.stop()


class Page:
    """An UploadOwner: one page's socket."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.moved: list[str] = []

    def upload_failed(self, upload_id: str, code: str, detail: str) -> None:
        pass

    def upload_moved(self, upload_id: str) -> None:
        self.moved.append(upload_id)


@needs_redis
async def test_an_upload_begun_on_one_replica_resumes_on_another(redis_client: Redis, tmp_path: Path) -> None:
    keys, shared = Keys(f"test-{uuid.uuid4().hex[:8]}"), tmp_path / "tmp" / "uploads"
    settings = UploadSettings()
    census = Census(redis_client, keys)
    kw = {"redis": redis_client, "keys": keys, "census": census}
    a = SharedUploadRegistry(settings, shared / "web-a", holder="web-a", **kw)  # type: ignore[arg-type]
    b = SharedUploadRegistry(settings, shared / "web-b", holder="web-b", **kw)  # type: ignore[arg-type]
    with pytest.raises(UploadError) as refused:  # no captioner worker: refused before a byte moves
        await a.create("upload-0", name="x.jpg", size=10, mime="image/jpeg", owner=Page("p0"), client="c")
    assert refused.value.code == "no_workers" and len(a) == 0
    heartbeat = Heartbeat(redis_client, keys, BrokerSettings(), "w1", ["captioner"])
    await heartbeat.start()
    await a.start()
    await b.start()
    try:
        first = await a.create(
            "upload-1", name="cat.jpg", size=10, mime="image/jpeg", owner=Page("p1"), client="c"
        )
        assert await a.write(first, 0, b"hello") == 5
        a.detach([first], first.owner)  # type: ignore[list-item]  # the socket dropped
        # The page reconnects, and the load balancer sends it to replica B.
        second = await b.resume("upload-1", Page("p2"))
        assert second.offset == 5 and second.path.parent == shared / "web-b"
        assert await b.write(second, 5, b"world") == 10
        await a.sweep()  # A lets go of it (its bytes moved to B): the client's slot is free there again
        assert len(a) == 0 and a.held_by("c") == 0
        received = await b.complete(second, hashlib.sha256(b"helloworld").hexdigest())
        assert received.path.read_bytes() == b"helloworld"
        # Back on A, the upload is not A's any more: it lets go of it, and it is over.
        with pytest.raises(UploadError) as caught:
            await a.resume("upload-1", Page("p3"))
        assert caught.value.code == "unknown_upload"
    finally:
        await heartbeat.stop()
        await a.stop()
        await b.stop()
        await redis_client.delete(*[k async for k in redis_client.scan_iter(f"{keys.prefix}:*")] or ["none"])


def test_model_inputs_and_outputs_cross_redis_unchanged() -> None:
    samples = np.linspace(-1, 1, 16_000, dtype=np.float32)
    clip = decode_input(
        "transcriber",
        {k.encode(): v for k, v in encode_input("transcriber", Clip(samples, final=False)).items()},
    )
    assert isinstance(clip, Clip) and not clip.final and np.array_equal(clip.samples, samples)
    image = PILImage.new("RGB", (40, 30), (200, 10, 10))
    back = decode_input("captioner", {b"data": encode_input("captioner", image)["data"]})
    assert (
        back.size == (40, 30)
        and max(abs(a - b) for a, b in zip(back.getpixel((5, 5)), (200, 10, 10), strict=True)) < 8
    )
    vector = np.arange(384, dtype=np.float32)
    assert np.array_equal(decode_output("embedder", encode_output("embedder", vector)), vector)
    assert (
        decode_output("transcriber", encode_output("transcriber", "a dog on a beach")) == "a dog on a beach"
    )
    reply = Reply("id-1", False, b"", "busy", "The model is busy.\nTry again.")
    assert Reply.from_bytes(reply.to_bytes()) == reply
