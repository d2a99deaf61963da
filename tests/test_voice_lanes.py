"""Finals and partials on separate lanes: a running final never holds up a partial."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from capsearch.batching import Batcher, Priority
from capsearch.config import BatchSettings
from capsearch.ml.speech import Clip
from capsearch.voice.lanes import TranscriberLanes, lanes_of

WAIT_S = 30.0  # safety net only


class FinalGate:
    """A transcriber whose finals wait for the test; partials answer at once. Records the order in
    which passes finished."""

    name = "transcriber"

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        self.final_inside = threading.Event()
        self.let_final_go = threading.Event()
        self.done: list[str] = []

    def load(self) -> None:
        pass

    def predict(self, batch: list[Clip]) -> list[str]:
        kinds = ["final" if clip.final else "partial" for clip in batch]
        if "final" in kinds:
            self.final_inside.set()
            if not self.let_final_go.wait(WAIT_S):
                raise TimeoutError("the test never let the final finish")
        self.done += kinds
        return kinds

    def close(self) -> None:
        pass


def _clip(final: bool) -> Clip:
    return Clip(np.zeros(1600, np.float32), final=final)


async def _lanes(model: FinalGate) -> AsyncIterator[TranscriberLanes]:
    settings = BatchSettings(max_batch_size=8, max_wait_ms=0)
    finals: Batcher[Clip, str] = Batcher(model, settings)
    partials = Batcher(model, settings, name="transcriber-partials") if lanes_of(model) > 1 else None
    for b in {finals, partials or finals}:
        await b.start()
    lanes = TranscriberLanes(finals, partials)
    yield lanes
    model.let_final_go.set()
    for b in {finals, partials or finals}:
        await b.stop(5)


@pytest.fixture
def two() -> FinalGate:
    return FinalGate(lanes=2)


@pytest.fixture
async def two_lanes(two: FinalGate) -> AsyncIterator[TranscriberLanes]:
    async for lanes in _lanes(two):
        yield lanes


async def test_a_partial_passes_a_final_that_is_still_running(
    two: FinalGate, two_lanes: TranscriberLanes
) -> None:
    final = two_lanes.submit(_clip(final=True))
    await asyncio.to_thread(two.final_inside.wait, WAIT_S)
    partial = await asyncio.wait_for(two_lanes.run(_clip(final=False), Priority.BACKGROUND), WAIT_S)
    assert partial == "partial"
    assert not final.done()  # the partial did not wait for it
    two.let_final_go.set()
    assert await asyncio.wait_for(final, WAIT_S) == "final"
    assert two.done == ["partial", "final"]
    assert two_lanes.running


async def test_one_lane_keeps_one_queue_for_both_kinds() -> None:
    one = FinalGate(lanes=1)
    async for lanes in _lanes(one):
        assert lanes.finals is lanes.partials
        final = lanes.submit(_clip(final=True))
        await asyncio.to_thread(one.final_inside.wait, WAIT_S)
        partial = lanes.submit(_clip(final=False), Priority.BACKGROUND)
        one.let_final_go.set()
        await asyncio.wait_for(asyncio.gather(final, partial), WAIT_S)
        assert one.done == ["final", "partial"]  # the partial waited behind the final


def test_a_backend_without_lanes_has_one() -> None:
    class Plain:
        name = "transcriber"

    assert lanes_of(Plain()) == 1  # type: ignore[arg-type]
    assert lanes_of(FinalGate(lanes=2)) == 2
