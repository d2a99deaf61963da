"""The arbiter between real batchers: a transcription submitted while a caption batch runs stops the
caption's steps until it is answered. Fake models, gated by events and semaphores; step counters,
not timings, are the evidence."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from capsearch.batching import Batcher, ComputeArbiter, Priority
from capsearch.config import BatchSettings
from capsearch.ml.base import Model
from capsearch.ml.yielding import NEVER_YIELD, Yielder, YieldsCompute

SAFETY = 10.0  # seconds; only a net against hangs
STEPS = 12


class SteppingCaptioner:
    """A caption model whose predict is STEPS steps, each let through by the test (`grant`) and
    preceded by the yield point, as the OpenVINO captioner's images and decoding steps are."""

    name = "captioner"

    def __init__(self) -> None:
        self.yield_to: Yielder = NEVER_YIELD
        self._grants = threading.Semaphore(0)
        self._progress = threading.Condition()
        self.steps_done = 0

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def grant(self, steps: int) -> None:
        self._grants.release(steps)

    def wait_steps(self, count: int) -> bool:
        with self._progress:
            return self._progress.wait_for(lambda: self.steps_done >= count, SAFETY)

    def predict(self, batch: list[str]) -> list[str]:
        for _ in range(STEPS):
            if not self._grants.acquire(timeout=SAFETY):
                raise TimeoutError("the test never granted this step")
            self.yield_to.checkpoint()
            with self._progress:
                self.steps_done += 1
                self._progress.notify_all()
        return [f"caption of {item}" for item in batch]


class GatedTranscriber:
    """Answers once `gate` opens; records how far the caption had got when it finished."""

    name = "transcriber"

    def __init__(self, captioner: SteppingCaptioner) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.caption_steps_at_end: int | None = None
        self._captioner = captioner

    def load(self) -> None:
        pass

    def close(self) -> None:
        pass

    def predict(self, batch: list[str]) -> list[str]:
        self.entered.set()
        if not self.gate.wait(SAFETY):
            raise TimeoutError("test gate never opened")
        self.caption_steps_at_end = self._captioner.steps_done
        return [f"words of {item}" for item in batch]


@asynccontextmanager
async def started(
    model: Any,
    *,
    holds: ComputeArbiter | None = None,
    hold_priorities: frozenset[Priority] = frozenset(Priority),
) -> AsyncIterator[Batcher[Any, Any]]:
    assert isinstance(model, Model)
    settings = BatchSettings(max_wait_ms=0)
    batcher: Batcher[Any, Any] = Batcher(model, settings, holds=holds, hold_priorities=hold_priorities)
    await batcher.start()
    try:
        yield batcher
    finally:
        await asyncio.wait_for(batcher.stop(timeout=SAFETY), SAFETY * 2)


async def settle() -> None:
    """Let done-callbacks scheduled by the batcher run (a bare yield to the loop, not a timed wait)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_foreground_requests_hold_from_submit_until_answered() -> None:
    arbiter = ComputeArbiter()
    captioner = SteppingCaptioner()
    model = GatedTranscriber(captioner)
    async with started(model, holds=arbiter) as voice:
        first = voice.submit("a", Priority.INTERACTIVE)
        assert await asyncio.to_thread(model.entered.wait, SAFETY)
        queued = [voice.submit(x, p) for x, p in (("b", Priority.BACKGROUND), ("c", Priority.INTERACTIVE))]
        assert arbiter.held == 3  # one running, two queued, background priority included
        queued[0].cancel()
        await settle()
        assert arbiter.held == 2
        model.gate.set()
        assert await asyncio.wait_for(first, SAFETY) == "words of a"
        assert await asyncio.wait_for(queued[1], SAFETY) == "words of c"
        await settle()
        assert arbiter.held == 0


async def test_only_the_chosen_priorities_hold() -> None:
    """The embedder's background work (caption embeddings, the index backfill) does not hold captions
    back; a query someone waits for does."""
    arbiter = ComputeArbiter()
    model = GatedTranscriber(SteppingCaptioner())
    async with started(model, holds=arbiter, hold_priorities=frozenset({Priority.INTERACTIVE})) as embed:
        background = embed.submit("a", Priority.BACKGROUND)
        assert await asyncio.to_thread(model.entered.wait, SAFETY)
        assert arbiter.held == 0
        query = embed.submit("b", Priority.INTERACTIVE)
        assert arbiter.held == 1
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(background, query), SAFETY)
        await settle()
        assert arbiter.held == 0


async def test_stopping_a_foreground_batcher_releases_what_it_held() -> None:
    arbiter = ComputeArbiter()
    model = GatedTranscriber(SteppingCaptioner())
    async with started(model, holds=arbiter) as voice:
        futures = [voice.submit(str(i)) for i in range(3)]
        assert await asyncio.to_thread(model.entered.wait, SAFETY)
        assert arbiter.held == 3
        model.gate.set()
    await asyncio.gather(*futures, return_exceptions=True)
    await settle()
    assert arbiter.held == 0


async def test_a_transcription_stops_a_running_caption_batch_until_it_is_answered() -> None:
    arbiter = ComputeArbiter(max_pause_s=SAFETY * 10)
    captioner = SteppingCaptioner()
    assert isinstance(captioner, YieldsCompute)
    captioner.yield_to = arbiter
    transcriber = GatedTranscriber(captioner)
    async with started(captioner) as captions, started(transcriber, holds=arbiter) as voice:
        caption = captions.submit("photo", Priority.BACKGROUND)
        captioner.grant(2)
        assert await asyncio.to_thread(captioner.wait_steps, 2)
        words = voice.submit("clip")
        captioner.grant(STEPS)  # every remaining step may go: only the arbiter can stop them now
        assert await asyncio.to_thread(arbiter.wait_until_paused, 1, SAFETY)
        assert await asyncio.to_thread(transcriber.entered.wait, SAFETY)
        assert captioner.steps_done == 2
        transcriber.gate.set()
        assert await asyncio.wait_for(words, SAFETY) == "words of clip"
        # The whole transcription ran while the caption stood still at step 2...
        assert transcriber.caption_steps_at_end == 2
        # ...and the caption went on once it was answered.
        assert await asyncio.wait_for(caption, SAFETY) == "caption of photo"
    assert captioner.steps_done == STEPS
    stats = arbiter.stats()
    assert stats.pauses == 1 and stats.guard_trips == 0


async def test_without_the_arbiter_the_caption_runs_beside_the_transcription() -> None:
    """The control: the same scene unwired, and the caption finishes while the transcription is
    still running."""
    captioner = SteppingCaptioner()
    transcriber = GatedTranscriber(captioner)
    async with started(captioner) as captions, started(transcriber) as voice:
        caption = captions.submit("photo", Priority.BACKGROUND)
        captioner.grant(2)
        assert await asyncio.to_thread(captioner.wait_steps, 2)
        words = voice.submit("clip")
        assert await asyncio.to_thread(transcriber.entered.wait, SAFETY)
        captioner.grant(STEPS)
        assert await asyncio.wait_for(caption, SAFETY) == "caption of photo"
        assert not words.done()
        transcriber.gate.set()
        assert await asyncio.wait_for(words, SAFETY) == "words of clip"
    assert transcriber.caption_steps_at_end == STEPS
