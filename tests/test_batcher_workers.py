"""A batcher with several workers (live partials on one single-threaded worker per core), and a request
that hands a fresher item as its batch starts. Orderings are forced by gates, never by sleeping."""

from __future__ import annotations

import asyncio

from capsearch.batching import Batcher
from capsearch.config import BatchSettings
from capsearch.errors import ShuttingDownError
from tests.test_batcher import SAFETY, FakeModel, enqueued, gather, running


async def test_two_workers_run_two_batches_at_once() -> None:
    model = FakeModel("side-by-side")
    async with running(model, workers=2) as batcher:
        first = batcher.submit(0)
        await model.entered(1)
        second = batcher.submit(1)
        await model.entered(2)  # while the first is still inside predict
        assert model.batches == [[0], [1]] and batcher.running
        model.gate.set()
        assert await gather(first, second) == [0, 10]
    assert len(set(model.threads)) == 2


async def test_a_free_worker_takes_its_share_of_the_queue() -> None:
    """Three queued behind two busy workers: the first one free takes two, the other the third,
    so they run side by side rather than all three on one worker while the other idles."""
    model = FakeModel("shares")
    async with running(model, workers=2) as batcher:
        busy = [batcher.submit(0), batcher.submit(1)]
        await model.entered(2)
        queued = [batcher.submit(i) for i in (2, 3, 4)]
        await enqueued(batcher, 3)
        model.gate.set()
        assert await gather(*busy, *queued) == [0, 10, 20, 30, 40]
    assert sorted(len(batch) for batch in model.batches[2:]) == [1, 2]
    assert sorted(x for batch in model.batches[2:] for x in batch) == [2, 3, 4]


async def test_stop_fails_every_running_batch() -> None:
    model = FakeModel("stuck-two")
    batcher: Batcher[int, int] = Batcher(model, BatchSettings(max_wait_ms=0), workers=2)
    await batcher.start()
    try:
        running = [batcher.submit(0), batcher.submit(1)]
        await model.entered(2)
        queued = batcher.submit(2)
        await asyncio.wait_for(batcher.stop(timeout=0.05), SAFETY)
        errors = await gather(*running, queued)
        assert all(isinstance(error, ShuttingDownError) for error in errors), errors
    finally:
        model.gate.set()  # let the abandoned threads end so the interpreter can exit


async def test_a_request_may_hand_a_fresher_item_as_its_batch_starts() -> None:
    model = FakeModel("fresh")
    async with running(model, workers=2) as batcher:
        newest = {"value": 1}
        blocked = [batcher.submit(0), batcher.submit(0)]
        await model.entered(2)  # both workers busy: the next request waits in the queue
        stale = batcher.submit(1, on_start=lambda: newest["value"])
        kept = batcher.submit(2, on_start=lambda: None)  # None: the item as submitted
        await enqueued(batcher, 2)
        newest["value"] = 7  # what arrived while it queued
        model.gate.set()
        assert await gather(*blocked, stale, kept) == [0, 0, 70, 20]
    assert sorted(x for batch in model.batches[2:] for x in batch) == [2, 7]
