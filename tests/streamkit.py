"""The live streams' test kit: an owner that records what a stream tells its socket, the gated model
behind a real batcher, and settings that keep each test to its own subject."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from capsearch.batching import Batcher
from capsearch.config import BatchSettings, VoiceSettings
from capsearch.ml.speech import Clip
from capsearch.services.search import SearchResult
from capsearch.voice.stream import Partial, VoiceStream
from capsearch.voice.streams import VoiceStreams
from tests.voicekit import GatedTranscriber, tone

WAIT_S = 30.0  # safety net only
# Settings that keep early finals and auto-stop out of the tests that are not about them.
PLAIN = {
    "max_seconds": 5,
    "first_partial_ms": 0,
    "final_after_silence_ms": 60_000,
    "end_silence_ms": 0,
    "lead_in_ms": 0,
}


class Owner:
    def __init__(self) -> None:
        self.partials: asyncio.Queue[tuple[str, Partial]] = asyncio.Queue()
        self.hits: asyncio.Queue[str] = asyncio.Queue()
        self.failed: list[tuple[str, str, str]] = []

    async def voice_partial(self, stream_id: str, partial: Partial) -> None:
        await self.partials.put((stream_id, partial))

    async def voice_live_hits(self, stream_id: str, query: str, result: SearchResult) -> None:
        await self.hits.put(query)

    def voice_failed(self, stream_id: str, code: str, detail: str) -> None:
        self.failed.append((stream_id, code, detail))

    async def next_partial(self) -> Partial:
        return (await asyncio.wait_for(self.partials.get(), WAIT_S))[1]


def f32(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768


@pytest.fixture
def model() -> GatedTranscriber:
    return GatedTranscriber()


@pytest.fixture
async def batcher(model: GatedTranscriber) -> AsyncIterator[Batcher[Clip, str]]:
    b: Batcher[Clip, str] = Batcher(model, BatchSettings(max_batch_size=8, max_wait_ms=0))
    await b.start()
    yield b
    model.release(100)  # let anything still inside finish
    await b.stop(5)


@pytest.fixture
async def streams(batcher: Batcher[Clip, str]) -> AsyncIterator[VoiceStreams]:
    s = VoiceStreams(VoiceSettings(**PLAIN), batcher)
    yield s
    await s.stop()


def busy(batcher: Batcher[Clip, str]) -> None:
    """Hand the model a pass of nobody's, so that what a recording queues next stays queued."""
    batcher.submit(Clip(np.zeros(1600, np.float32), final=False))


async def entered(model: GatedTranscriber) -> None:
    await asyncio.to_thread(model.wait_entered, WAIT_S)


async def spoken(
    streams: VoiceStreams, stream: VoiceStream, model: GatedTranscriber, seconds: float
) -> Partial:
    """Say `seconds` of speech into `stream` and let the partial pass over it through: that partial."""
    await streams.feed(stream, f32(tone(seconds)))
    await entered(model)
    model.release()
    owner = stream.owner
    assert isinstance(owner, Owner)
    return await owner.next_partial()
