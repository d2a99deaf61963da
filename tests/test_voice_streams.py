"""The streaming engine: partials coalesce and skip silence, words settle and are searched, the final
starts in a silence and a long one ends the recording, streams end cleanly.

The model is a gate (tests/voicekit.GatedTranscriber) the test opens one batch at a time, so every
ordering below is forced by the test, never by sleeping and hoping. Speech is a loud tone judged by
the loudness rule (the engine's detector when none is given); Silero has its own tests.
"""

from __future__ import annotations

import time

import pytest

from capsearch.batching import Batcher
from capsearch.config import VoiceSettings
from capsearch.errors import CapsearchError
from capsearch.ml.speech import Clip
from capsearch.voice.audio import AudioError
from capsearch.voice.streams import VoiceStreams
from tests.streamkit import PLAIN, Owner, batcher, entered, f32, model, streams
from tests.voicekit import GatedTranscriber, silence, tone

__all__ = ["batcher", "model", "streams"]  # fixtures, used by name


async def test_audio_arriving_during_a_pass_coalesces_into_one_next_pass(
    streams: VoiceStreams, batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("stream-1", owner)
    await streams.feed(stream, f32(tone(0.4)))  # speech: the first partial pass starts
    await entered(model)
    for _ in range(5):  # five frames arrive while that pass runs...
        await streams.feed(stream, f32(tone(0.2)))
    assert batcher.depth == 0  # ...and none of them queued a pass of its own
    model.release()
    first = await owner.next_partial()
    assert (first.text, first.seconds) == ("heard 6400 samples", 0.4)
    await entered(model)  # the next pass: all five frames at once
    model.release()
    assert (await owner.next_partial()).text == "heard 22400 samples"
    assert model.batches == [[6400], [22400]] and model.finals == [[False], [False]]
    # Partials may run on shortened windows: the final is always a pass of its own.
    final = streams.finish(stream)
    await entered(model)
    model.release()
    transcript = await final
    assert (transcript.text, transcript.seconds) == ("heard 22400 samples", 1.4)
    assert model.finals[-1] == [True]
    assert len(streams) == 0


async def test_the_first_partial_waits_for_enough_speech(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    settings = VoiceSettings(**(PLAIN | {"min_speech_ms": 100, "first_partial_ms": 500}))
    streams = VoiceStreams(settings, batcher)
    owner = Owner()
    stream = streams.open("stream-1", owner)
    await streams.feed(stream, f32(tone(0.2)))  # speech, but too little to transcribe
    await streams.feed(stream, f32(silence(1.0)))
    await streams.feed(stream, f32(tone(0.2)))
    assert stream.task is None and batcher.depth == 0 and model.batches == []
    await streams.feed(stream, f32(tone(0.2)))  # 0.6 s of speech now: the first pass goes
    await entered(model)
    model.release()
    assert (await owner.next_partial()).text == "heard 25600 samples"
    await streams.stop()


async def test_silence_after_speech_calls_for_no_more_partials(
    streams: VoiceStreams, batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("pause-1", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    model.release()
    await owner.next_partial()
    for _ in range(5):
        await streams.feed(stream, f32(silence(0.2)))
    assert stream.task is None and batcher.depth == 0  # nothing new was said
    await streams.feed(stream, f32(tone(0.2)))  # speech again: a pass over all of it
    await entered(model)
    model.release()
    assert (await owner.next_partial()).text == f"heard {6400 + 16000 + 3200} samples"


async def test_concurrent_streams_share_a_batch(streams: VoiceStreams, model: GatedTranscriber) -> None:
    owners = [Owner() for _ in range(3)]
    blocker = streams.open("blocker-0", Owner())
    await streams.feed(blocker, f32(tone(0.2)))
    await entered(model)  # the model is busy: the three streams' first passes queue up together
    live = [streams.open(f"stream-{i}", o) for i, o in enumerate(owners)]
    for i, stream in enumerate(live):
        await streams.feed(stream, f32(tone(0.2 * (i + 1))))
    model.release()
    await entered(model)
    model.release()
    for i, owner in enumerate(owners):
        assert (await owner.next_partial()).text == f"heard {3200 * (i + 1)} samples"
    assert model.batches == [[3200], [3200, 6400, 9600]]


async def test_stop_during_a_partial_drops_it_and_runs_the_final(
    streams: VoiceStreams, batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("stream-3", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    await streams.feed(stream, f32(tone(0.2)))
    final = streams.finish(stream)
    assert batcher.depth == 1  # the final pass is queued at once, beside the running partial
    model.release()  # the partial pass ends; its result is dropped
    await entered(model)
    model.release()
    assert (await final).text == "heard 9600 samples"
    assert model.batches == [[6400], [9600]] and model.finals == [[False], [True]]
    assert owner.partials.empty()


async def test_silence_never_reaches_the_model(streams: VoiceStreams, model: GatedTranscriber) -> None:
    stream = streams.open("quiet-1", Owner())
    for _ in range(10):
        assert await streams.feed(stream, f32(silence(0.2))) is None
    assert stream.task is None
    with pytest.raises(AudioError) as caught:
        await streams.finish(stream)
    assert caught.value.code == "no_speech"
    assert "No speech heard" in caught.value.message
    assert model.batches == []
    assert len(streams) == 0


async def test_the_cap_ends_the_recording_with_what_fits(
    streams: VoiceStreams, model: GatedTranscriber
) -> None:
    stream = streams.open("too-long", Owner())
    reasons = [await streams.feed(stream, f32(tone(0.3))) for _ in range(17)]  # 5.1 s against 5 s
    assert reasons[:-1] == [None] * 16 and reasons[-1] == "max_seconds"
    assert stream.samples == 5 * 16_000  # the frame that crossed the cap was cut, not refused
    final = streams.finish(stream)
    model.release(10)
    assert (await final).text == "heard 80000 samples"


async def test_a_stream_never_stopped_times_out(streams: VoiceStreams, model: GatedTranscriber) -> None:
    owner = Owner()
    stream = streams.open("forgotten", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    assert streams.sweep(time.monotonic()) == 0
    later = time.monotonic() + streams.settings.stream_timeout_s + 1
    assert streams.sweep(later) == 1
    assert owner.failed and owner.failed[0][:2] == ("forgotten", "stream_timeout")
    assert "never stopped" in owner.failed[0][2]
    assert len(streams) == 0
    model.release()  # the pass it had running ends; nobody hears of it
    assert owner.partials.empty()


async def test_stream_limits(batcher: Batcher[Clip, str]) -> None:
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
