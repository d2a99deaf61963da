"""The streaming engine: partial passes coalesce, the final pass reuses what it can, streams end cleanly.

The model is a gate (tests/voicekit.GatedTranscriber) the test opens one batch at a time, so every
ordering below is forced by the test, never by sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from capsearch.batching import Batcher
from capsearch.config import BatchSettings, VoiceSettings
from capsearch.errors import CapsearchError
from capsearch.voice.audio import AudioError
from capsearch.voice.streams import VoiceStreams
from tests.voicekit import GatedTranscriber, silence, tone

WAIT_S = 30.0  # safety net only


class Owner:
    def __init__(self) -> None:
        self.partials: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
        self.failed: list[tuple[str, str, str]] = []

    async def voice_partial(self, stream_id: str, text: str, seconds: float) -> None:
        await self.partials.put((stream_id, text, seconds))

    def voice_failed(self, stream_id: str, code: str, detail: str) -> None:
        self.failed.append((stream_id, code, detail))

    async def next_partial(self) -> tuple[str, str, float]:
        return await asyncio.wait_for(self.partials.get(), WAIT_S)


def f32(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768


@pytest.fixture
def model() -> GatedTranscriber:
    return GatedTranscriber()


@pytest.fixture
async def batcher(model: GatedTranscriber) -> AsyncIterator[Batcher[np.ndarray, str]]:
    b: Batcher[np.ndarray, str] = Batcher(model, BatchSettings(max_batch_size=8, max_wait_ms=0))
    await b.start()
    yield b
    model.release(100)  # let anything still inside finish
    await b.stop(5)


@pytest.fixture
async def streams(batcher: Batcher[np.ndarray, str]) -> AsyncIterator[VoiceStreams]:
    # first_partial_ms=0: these tests are about passes and coalescing; the threshold has its own test.
    s = VoiceStreams(VoiceSettings(max_seconds=5, first_partial_ms=0), batcher)
    yield s
    await s.stop()


async def entered(model: GatedTranscriber) -> None:
    await asyncio.to_thread(model.wait_entered, WAIT_S)


async def test_audio_arriving_during_a_pass_coalesces_into_one_next_pass(
    streams: VoiceStreams, batcher: Batcher[np.ndarray, str], model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("stream-1", owner)
    streams.feed(stream, f32(tone(0.4)))  # speech: the first partial pass starts
    await entered(model)
    for _ in range(5):  # five frames arrive while that pass runs...
        streams.feed(stream, f32(tone(0.2)))
    assert batcher.depth == 0  # ...and none of them queued a pass of its own
    model.release()
    assert await owner.next_partial() == ("stream-1", "heard 6400 samples", 0.4)
    await entered(model)  # the next pass: all five frames at once
    assert batcher.depth == 0
    model.release()
    assert await owner.next_partial() == ("stream-1", "heard 22400 samples", 1.4)
    assert model.batches == [[6400], [22400]]
    # Nothing new since: stopping reuses that pass as the final transcript, with no model call.
    transcript = await streams.finish(stream)
    assert (transcript.text, transcript.seconds) == ("heard 22400 samples", 1.4)
    assert model.batches == [[6400], [22400]]
    assert len(streams) == 0


async def test_the_first_partial_waits_for_enough_speech(
    batcher: Batcher[np.ndarray, str], model: GatedTranscriber
) -> None:
    streams = VoiceStreams(VoiceSettings(max_seconds=5, min_speech_ms=100, first_partial_ms=500), batcher)
    owner = Owner()
    stream = streams.open("stream-1", owner)
    streams.feed(stream, f32(tone(0.2)))  # speech, but too little to transcribe
    streams.feed(stream, f32(silence(1.0)))
    streams.feed(stream, f32(tone(0.2)))
    assert stream.task is None and batcher.depth == 0 and model.batches == []
    streams.feed(stream, f32(tone(0.2)))  # 0.6 s of speech now: the first pass goes
    await entered(model)
    model.release()
    assert (await owner.next_partial())[1] == "heard 25600 samples"
    await streams.stop()


async def test_concurrent_streams_share_a_batch(streams: VoiceStreams, model: GatedTranscriber) -> None:
    owners = [Owner() for _ in range(3)]
    blocker = streams.open("blocker-0", Owner())
    streams.feed(blocker, f32(tone(0.2)))
    await entered(model)  # the model is busy: the three streams' first passes queue up together
    live = [streams.open(f"stream-{i}", o) for i, o in enumerate(owners)]
    for i, stream in enumerate(live):
        streams.feed(stream, f32(tone(0.2 * (i + 1))))
    model.release()
    await entered(model)
    model.release()
    for i, owner in enumerate(owners):
        assert (await owner.next_partial())[1] == f"heard {3200 * (i + 1)} samples"
    assert model.batches == [[3200], [3200, 6400, 9600]]


async def test_stop_during_a_pass_over_everything_waits_for_it(
    streams: VoiceStreams, model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("stream-2", owner)
    streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    final = streams.finish(stream)
    model.release()
    assert (await final).text == "heard 6400 samples"
    assert model.batches == [[6400]]
    assert owner.partials.empty()  # that pass became the final; no partial for it


async def test_stop_after_new_audio_runs_a_final_pass_over_all_of_it(
    streams: VoiceStreams, batcher: Batcher[np.ndarray, str], model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("stream-3", owner)
    streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    streams.feed(stream, f32(tone(0.2)))
    final = streams.finish(stream)
    assert batcher.depth == 1  # the final pass is queued at once, beside the running partial
    model.release()  # the stale partial pass ends; its result is dropped
    await entered(model)
    model.release()
    assert (await final).text == "heard 9600 samples"
    assert model.batches == [[6400], [9600]]
    assert owner.partials.empty()


async def test_silence_never_reaches_the_model(streams: VoiceStreams, model: GatedTranscriber) -> None:
    stream = streams.open("quiet-1", Owner())
    for _ in range(10):
        streams.feed(stream, f32(silence(0.2)))
    assert stream.task is None
    with pytest.raises(AudioError) as caught:
        await streams.finish(stream)
    assert caught.value.code == "no_speech"
    assert "No speech heard" in caught.value.message
    assert model.batches == []
    assert len(streams) == 0


async def test_the_buffer_cap_ends_the_stream(streams: VoiceStreams, model: GatedTranscriber) -> None:
    stream = streams.open("too-long", Owner())
    with pytest.raises(AudioError) as caught:
        for _ in range(30):  # 6 s against a 5 s cap
            streams.feed(stream, f32(silence(0.2)))
    assert caught.value.code == "audio_too_long"
    assert "at most 5 seconds" in caught.value.message
    assert streams.get("too-long") is None
    assert stream.buffer.size == 0  # its audio is gone


async def test_a_stream_never_stopped_times_out(streams: VoiceStreams, model: GatedTranscriber) -> None:
    owner = Owner()
    stream = streams.open("forgotten", owner)
    streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    assert streams.sweep(time.monotonic()) == 0
    later = time.monotonic() + streams.settings.stream_timeout_s + 1
    assert streams.sweep(later) == 1
    assert owner.failed and owner.failed[0][:2] == ("forgotten", "stream_timeout")
    assert "never stopped" in owner.failed[0][2]
    assert len(streams) == 0
    model.release()  # the pass it had running ends; nobody hears of it
    assert owner.partials.empty()


async def test_stream_limits(batcher: Batcher[np.ndarray, str]) -> None:
    streams = VoiceStreams(VoiceSettings(max_streams=2, first_partial_ms=0), batcher)
    owner = Owner()
    first = streams.open("stream-a", owner)
    with pytest.raises(CapsearchError) as duplicate:
        streams.open("stream-a", owner)
    assert duplicate.value.code == "duplicate_stream_id"
    streams.open("stream-b", owner)
    with pytest.raises(CapsearchError) as busy:
        streams.open("stream-c", owner)
    assert busy.value.code == "busy"
    streams.discard(first)
    streams.open("stream-c", owner)
    assert streams.discard_owner(owner) == 2
    assert len(streams) == 0
