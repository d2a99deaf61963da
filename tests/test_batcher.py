"""Batcher behaviour with fake models gated by threading.Events; no timing-based synchronisation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from capsearch.batching import Batcher, Priority
from capsearch.batching.metrics import render_metrics
from capsearch.config import BatchSettings
from capsearch.errors import BusyError, ModelError, ShuttingDownError
from capsearch.ml.base import Model

SAFETY = 5  # seconds; only a net against hangs, never used to order events


def times_ten(batch: list[Any]) -> list[Any]:
    return [x * 10 for x in batch]


class FakeModel:
    """Implements Model; records each batch and blocks in predict until `gate` is set."""

    def __init__(self, name: str, fn: Callable[[list[Any]], list[Any]] = times_ten, *, gated: bool = True):
        self.name = name
        self.fn = fn
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.batches: list[list[Any]] = []
        self.threads: list[str] = []
        self._entered = threading.Condition()

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def predict(self, batch: list[Any]) -> list[Any]:
        with self._entered:
            self.batches.append(list(batch))
            self.threads.append(threading.current_thread().name)
            self._entered.notify_all()
        if not self.gate.wait(SAFETY):
            raise RuntimeError("test gate never opened")
        return self.fn(batch)

    def _wait_entered(self, count: int) -> bool:
        with self._entered:
            return self._entered.wait_for(lambda: len(self.batches) >= count, SAFETY)

    async def entered(self, count: int = 1) -> None:
        """Wait until predict has been called `count` times (the worker holds that batch)."""
        assert await asyncio.to_thread(self._wait_entered, count), "predict was never called"


async def enqueued(batcher: Batcher[Any, Any], depth: int) -> None:
    """Let already-created caller tasks reach their first await, then check they are queued."""
    for _ in range(50):
        if batcher.depth >= depth:
            return
        await asyncio.sleep(0)  # a bare yield to the loop, not a timed wait
    raise AssertionError(f"depth stayed {batcher.depth}, expected {depth}")


@asynccontextmanager
async def running(model: FakeModel, workers: int = 1, **overrides: Any) -> AsyncIterator[Batcher[Any, Any]]:
    assert isinstance(model, Model)
    settings = BatchSettings(**{"max_batch_size": 8, "max_wait_ms": 0, **overrides})
    batcher: Batcher[Any, Any] = Batcher(model, settings, workers=workers)
    await batcher.start()
    try:
        yield batcher
    finally:
        model.gate.set()
        await asyncio.wait_for(batcher.stop(timeout=SAFETY), SAFETY * 2)


async def gather(*aws: Any) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*aws, return_exceptions=True), SAFETY)


async def test_requests_that_arrive_while_the_model_is_busy_form_one_batch() -> None:
    model = FakeModel("grouping")
    async with running(model) as batcher:
        first = asyncio.create_task(batcher.run(0))
        await model.entered(1)
        later = [asyncio.create_task(batcher.run(i)) for i in range(1, 6)]
        await enqueued(batcher, 5)
        model.gate.set()
        results = await gather(first, *later)
    assert results == [0, 10, 20, 30, 40, 50]
    assert model.batches == [[0], [1, 2, 3, 4, 5]]
    # predict runs on the batcher's own thread, never on the event loop
    assert all(name.startswith("grouping") for name in model.threads)


async def test_max_batch_size_is_respected() -> None:
    model = FakeModel("max-size", gated=False)
    async with running(model, max_batch_size=8) as batcher:
        results = await gather(*(batcher.run(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert all(len(batch) <= 8 for batch in model.batches)
    assert max(len(batch) for batch in model.batches) == 8
    assert [x for batch in model.batches for x in batch] == list(range(20))


async def test_wait_window_collects_requests_until_the_batch_is_full() -> None:
    model = FakeModel("window", gated=False)
    # A window far longer than the test: only a full batch can end it, so this proves it is not waited out.
    async with running(model, max_batch_size=4, max_wait_ms=10_000) as batcher:
        results = await gather(*(batcher.run(i) for i in range(4)))
    assert results == [0, 10, 20, 30]
    assert model.batches == [[0, 1, 2, 3]]


def fail_on_negative(batch: list[int]) -> list[int]:
    if any(x < 0 for x in batch):
        raise RuntimeError("bad input")
    return times_ten(batch)


async def test_predict_exception_fails_only_its_batch() -> None:
    model = FakeModel("failing", fail_on_negative)
    async with running(model) as batcher:
        doomed = asyncio.create_task(batcher.run(-1))
        await model.entered(1)
        fine = [asyncio.create_task(batcher.run(i)) for i in (1, 2, 3)]
        await enqueued(batcher, 3)
        model.gate.set()
        error, *results = await gather(doomed, *fine)
        assert results == [10, 20, 30]
        assert isinstance(error, ModelError)
        assert "failing" in error.message and "bad input" in error.message
        assert isinstance(error.__cause__, RuntimeError)
        # the worker survived and serves the next batch
        assert await asyncio.wait_for(batcher.run(4), SAFETY) == 40
    assert model.batches == [[-1], [1, 2, 3], [4]]


async def test_wrong_length_output_fails_that_batch() -> None:
    def drop_last(batch: list[int]) -> list[int]:
        return times_ten(batch)[:-1] if len(batch) > 1 else times_ten(batch)

    model = FakeModel("short-output", drop_last)
    async with running(model) as batcher:
        first = asyncio.create_task(batcher.run(0))
        await model.entered(1)
        pair = [asyncio.create_task(batcher.run(i)) for i in (1, 2)]
        await enqueued(batcher, 2)
        model.gate.set()
        ok, *errors = await gather(first, *pair)
        assert ok == 0
        for error in errors:
            assert isinstance(error, ModelError)
            assert "short-output" in error.message
            assert "1 results for a batch of 2" in error.message
        assert await asyncio.wait_for(batcher.run(5), SAFETY) == 50


async def test_cancelled_request_is_never_predicted() -> None:
    model = FakeModel("cancelling")
    async with running(model) as batcher:
        first = asyncio.create_task(batcher.run(0))
        await model.entered(1)
        quitter = asyncio.create_task(batcher.run(1))
        stayer = asyncio.create_task(batcher.run(2))
        await enqueued(batcher, 2)
        dropped_future = batcher.submit(3)
        quitter.cancel()
        dropped_future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        assert batcher.depth == 1  # cancelled requests give their queue slots back at once
        model.gate.set()
        assert await gather(first, stayer) == [0, 20]
    assert model.batches == [[0], [2]]


async def test_full_queue_raises_busy() -> None:
    model = FakeModel("bounded")
    async with running(model, queue_limit=3) as batcher:
        first = asyncio.create_task(batcher.run(0))
        await model.entered(1)  # the running batch no longer counts against the queue
        queued = [batcher.submit(i) for i in (1, 2, 3)]
        with pytest.raises(BusyError) as caught:
            batcher.submit(4)
        assert "bounded" in caught.value.message and caught.value.status_code == 503
        with pytest.raises(BusyError):
            batcher.submit(5, Priority.BACKGROUND)
        model.gate.set()
        assert await gather(first, *queued) == [0, 10, 20, 30]


async def test_background_work_cannot_fill_the_whole_queue() -> None:
    model = FakeModel("share")
    async with running(model, queue_limit=4, background_share=0.5) as batcher:
        first = asyncio.create_task(batcher.run(0))
        await model.entered(1)
        background = [batcher.submit(i, Priority.BACKGROUND) for i in (1, 2)]
        with pytest.raises(BusyError):
            batcher.submit(3, Priority.BACKGROUND)
        interactive = [batcher.submit(i) for i in (4, 5)]
        with pytest.raises(BusyError):
            batcher.submit(6)
        model.gate.set()
        assert await gather(first, *background, *interactive) == [0, 10, 20, 40, 50]


async def test_interactive_requests_jump_ahead_of_background() -> None:
    model = FakeModel("priorities", lambda batch: batch)
    async with running(model, max_batch_size=2) as batcher:
        first = asyncio.create_task(batcher.run("first"))
        await model.entered(1)
        bg = [asyncio.create_task(batcher.run(f"bg{i}", Priority.BACKGROUND)) for i in (1, 2)]
        fg = [asyncio.create_task(batcher.run(f"fg{i}")) for i in (1, 2)]
        await enqueued(batcher, 4)
        model.gate.set()
        assert await gather(first, *bg, *fg) == ["first", "bg1", "bg2", "fg1", "fg2"]
    assert model.batches == [["first"], ["fg1", "fg2"], ["bg1", "bg2"]]


async def test_batch_mixes_priorities_only_to_fill_up() -> None:
    model = FakeModel("mixing", lambda batch: batch)
    async with running(model, max_batch_size=4) as batcher:
        first = asyncio.create_task(batcher.run("first"))
        await model.entered(1)
        bg = [batcher.submit(f"bg{i}", Priority.BACKGROUND) for i in (1, 2, 3, 4)]
        fg = batcher.submit("fg1")
        model.gate.set()
        await gather(first, *bg, fg)
    assert model.batches == [["first"], ["fg1", "bg1", "bg2", "bg3"], ["bg4"]]


async def test_stop_lets_pending_work_finish_then_refuses_more() -> None:
    model = FakeModel("draining")
    batcher: Batcher[int, int] = Batcher(model, BatchSettings(max_batch_size=2, max_wait_ms=0))
    await batcher.start()
    first = asyncio.create_task(batcher.run(0))
    await model.entered(1)
    pending = [batcher.submit(i) for i in (1, 2, 3)]
    stopping = asyncio.create_task(batcher.stop(timeout=SAFETY))
    # Opening the gate from a thread lets `stopping` start first, so stop() is already draining.
    await asyncio.to_thread(model.gate.set)
    await asyncio.wait_for(stopping, SAFETY)
    assert await gather(first, *pending) == [0, 10, 20, 30]
    assert model.batches == [[0], [1, 2], [3]]
    with pytest.raises(ShuttingDownError):
        batcher.submit(4)
    await batcher.stop()  # a second stop is harmless


async def test_stop_with_stuck_predict_returns_and_fails_callers() -> None:
    model = FakeModel("stuck")
    batcher: Batcher[int, int] = Batcher(model, BatchSettings(max_wait_ms=0))
    await batcher.start()
    try:
        running_call = asyncio.create_task(batcher.run(0))
        await model.entered(1)
        queued = batcher.submit(1)
        # The tiny timeout belongs to the code under test: stop() must give up on the stuck thread.
        await asyncio.wait_for(batcher.stop(timeout=0.05), SAFETY)
        errors = await gather(running_call, queued)
        assert all(isinstance(error, ShuttingDownError) for error in errors), errors
        assert model.batches == [[0]]
    finally:
        model.gate.set()  # let the abandoned thread end so the interpreter can exit


async def test_submit_before_start_is_refused() -> None:
    batcher: Batcher[int, int] = Batcher(FakeModel("unstarted"), BatchSettings())
    with pytest.raises(ShuttingDownError):
        batcher.submit(1)


async def test_custom_name_overrides_model_name() -> None:
    batcher: Batcher[int, int] = Batcher(FakeModel("inner"), BatchSettings(), name="outer")
    assert batcher.name == "outer"


async def test_metrics_report_batches_per_model() -> None:
    model = FakeModel("metrics-probe", gated=False)
    async with running(model) as batcher:
        await gather(*(batcher.run(i) for i in range(3)))
    payload, content_type = render_metrics()
    text = payload.decode()
    assert content_type.startswith("text/plain")
    assert 'capsearch_batch_size_count{model="metrics-probe"}' in text
    assert 'capsearch_model_requests_total{model="metrics-probe",outcome="ok"} 3.0' in text
    assert 'capsearch_queue_depth{model="metrics-probe"} 0.0' in text
    assert 'capsearch_model_seconds_count{model="metrics-probe"}' in text
    assert 'capsearch_queue_wait_seconds_count{model="metrics-probe"}' in text
