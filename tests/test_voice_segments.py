"""What keeps several live recordings' partials cheap: a recording splits at its pauses so later
partials hear only what follows, a partial that waited in the queue takes the audio that came
meanwhile, and a speculative final waits while someone else is mid-utterance. Orderings are forced
by the gated model, never by sleeping."""

from __future__ import annotations

from capsearch.batching import Batcher
from capsearch.config import VoiceSettings
from capsearch.ml.speech import Clip
from capsearch.voice.streams import VoiceStreams
from tests.streamkit import PLAIN, Owner, batcher, busy, entered, f32, model, streams
from tests.voicekit import GatedTranscriber, silence, tone

__all__ = ["batcher", "model", "streams"]  # fixtures, used by name


async def test_a_recording_splits_at_a_pause_and_later_partials_hear_only_what_follows(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    settings = VoiceSettings(**(PLAIN | {"final_after_silence_ms": 200, "first_partial_ms": 300}))
    streams = VoiceStreams(settings, batcher)
    owner = Owner()
    stream = streams.open("split-1", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    model.release()
    assert (await owner.next_partial()).text == "heard 6400 samples"
    await streams.feed(stream, f32(silence(0.2)))  # a pause the partial reaches into: split there
    await entered(model)  # the early final over all of it
    model.release()
    assert (await owner.next_partial()).text == "heard 9600 samples"  # done while still open: shown
    assert (stream.segment, stream.committed) == (6400, "heard 6400 samples")
    await streams.feed(stream, f32(tone(0.2)))
    assert stream.task is None  # 200 ms of new speech is too little for a partial of its own
    await streams.feed(stream, f32(tone(0.2)))
    await entered(model)
    model.release()
    partial = await owner.next_partial()
    # The pause's silence and the new speech (3200 + 6400 samples), after the words said before it.
    assert partial.text == "heard 6400 samples heard 9600 samples"
    assert partial.seconds == 1.0 and model.batches[-1] == [9600]
    final = streams.finish(stream)
    model.release(10)
    assert (await final).text == "heard 16000 samples"  # the final hears the whole recording
    await streams.stop()


async def test_a_split_waits_for_a_partial_that_reaches_into_the_pause(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    """The speaker paused while the model was busy and went on before a partial came back: the next
    partial stops at the pause, so the recording can still split there."""
    settings = VoiceSettings(**(PLAIN | {"final_after_silence_ms": 200}))
    streams = VoiceStreams(settings, batcher)
    owner = Owner()
    stream = streams.open("split-2", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)  # a partial over the first 6400 samples is running
    await streams.feed(stream, f32(tone(0.2)))
    await streams.feed(stream, f32(silence(0.2)))  # the pause: past what the running partial covers
    await streams.feed(stream, f32(tone(0.4)))  # and on
    # The early final the pause started went stale with the speech after the pause, before it ran.
    model.release(2)  # the running partial, and the next one: it stops at the pause's end
    assert (await owner.next_partial()).text == "heard 6400 samples"
    assert (await owner.next_partial()).text == "heard 12800 samples"
    assert (stream.segment, stream.committed) == (12800, "heard 12800 samples")  # split at the pause
    await entered(model)
    model.release()
    assert (await owner.next_partial()).text == "heard 12800 samples heard 6400 samples"
    assert model.batches == [[6400], [12800], [6400]] and model.finals == [[False]] * 3
    await streams.stop()


async def test_a_queued_partial_takes_the_audio_that_came_meanwhile(
    streams: VoiceStreams, batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    owner = Owner()
    stream = streams.open("fresh-1", owner)
    busy(batcher)
    await entered(model)
    await streams.feed(stream, f32(tone(0.4)))  # its partial queues behind the busy model...
    await streams.feed(stream, f32(tone(0.2)))
    await streams.feed(stream, f32(tone(0.2)))  # ...while 400 ms more arrive
    model.release()
    await entered(model)
    model.release()
    partial = await owner.next_partial()
    assert partial.text == "heard 12800 samples" and partial.seconds == 0.8
    assert model.batches == [[1600], [12800]]
    assert stream.covered == 12800 and stream.task is None  # nothing left uncovered: no other pass


async def test_a_speculative_final_waits_while_someone_else_is_mid_utterance(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    settings = VoiceSettings(**(PLAIN | {"final_after_silence_ms": 200, "end_silence_ms": 600}))
    streams = VoiceStreams(settings, batcher)
    paused, talking = streams.open("pause-a", Owner()), streams.open("talk-b", Owner())
    await streams.feed(talking, f32(tone(0.4)))
    await streams.feed(paused, f32(tone(0.4)))
    await streams.feed(paused, f32(silence(0.2)))
    # Quiet long enough for an early final, but the other speaker's partials need the cores.
    assert paused.early_final is None
    assert await streams.feed(talking, f32(silence(0.6))) == "silence"  # the other is done now
    await streams.feed(paused, f32(silence(0.2)))
    early = paused.early_final
    assert early is not None and early.samples == 12800
    final = streams.finish(paused)
    model.release(10)
    assert (await final).text == "heard 12800 samples" and model.finals[-1] == [True]
    await streams.stop()
