"""The end of speech and what comes while speaking: the final pass starts in a silence and a long one
ends the recording, speech that resumes makes it stale, words settle and are searched, and a lead-in
of silence goes before every pass. Orderings are forced by the gated model, never by sleeping.
"""

from __future__ import annotations

import asyncio

from capsearch.batching import Batcher
from capsearch.config import VoiceSettings
from capsearch.ml.speech import Clip
from capsearch.services.search import SearchResult
from capsearch.services.search_options import SearchOptions
from capsearch.voice.streams import VoiceStreams
from tests.streamkit import PLAIN, WAIT_S, Owner, batcher, busy, entered, f32, model, streams
from tests.voicekit import GatedTranscriber, silence, tone

__all__ = ["batcher", "model", "streams"]  # fixtures, used by name


def early_final_streams(batcher: Batcher[Clip, str]) -> VoiceStreams:
    """Streams whose final pass starts after 200 ms of quiet (and that never stop by themselves)."""
    return VoiceStreams(VoiceSettings(**(PLAIN | {"final_after_silence_ms": 200})), batcher)


async def test_the_final_starts_in_a_silence_and_a_long_one_ends_the_recording(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    settings = VoiceSettings(**(PLAIN | {"final_after_silence_ms": 200, "end_silence_ms": 800}))
    streams = VoiceStreams(settings, batcher)
    owner = Owner()
    stream = streams.open("auto-1", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    model.release()  # the partial
    await owner.next_partial()
    assert await streams.feed(stream, f32(silence(0.2))) is None
    await entered(model)  # 200 ms of quiet: the final pass over what was said is under way
    assert model.finals == [[False]]
    reasons = [await streams.feed(stream, f32(silence(0.2))) for _ in range(3)]
    assert reasons == [None, None, "silence"]  # 800 ms of quiet: the speaker is done
    final = streams.finish(stream)
    model.release()
    assert (await final).text == "heard 9600 samples"  # that pass is the final: no other one
    assert model.batches == [[6400], [9600]] and model.finals == [[False], [True]]
    await streams.stop()


async def test_an_early_final_drops_a_partial_still_queued(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    streams = early_final_streams(batcher)
    owner = Owner()
    stream = streams.open("queued-1", owner)
    busy(batcher)
    await entered(model)  # the model is busy: the stream's partial waits in the queue
    await streams.feed(stream, f32(tone(0.4)))
    await asyncio.sleep(0)  # a bare yield: the partial loop queues its pass
    queued = stream.pending
    assert queued is not None and not queued.started
    await streams.feed(stream, f32(silence(0.2)))
    assert queued.future.cancelled()  # the final covers it: it would only make the final wait
    model.release(10)
    final = streams.finish(stream)
    assert (await final).text == "heard 9600 samples" and owner.partials.empty()
    assert model.batches == [[1600], [9600]]
    await streams.stop()


async def test_speech_after_an_early_final_makes_it_stale(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    streams = early_final_streams(batcher)
    stream = streams.open("pause-2", Owner())
    # Another recording would hold the final back (it is mid-utterance): keep the model busy directly.
    busy(batcher)
    await entered(model)  # the model is busy: what the stream queues next stays queued
    await streams.feed(stream, f32(tone(0.4)))
    await streams.feed(stream, f32(silence(0.2)))
    early = stream.early_final
    assert early is not None and not early.future.done()
    await streams.feed(stream, f32(tone(0.2)))  # the speaker goes on
    assert early.future.cancelled() and stream.early_final is None
    final = streams.finish(stream)
    model.release(10)
    assert (await final).text == f"heard {6400 + 3200 + 3200} samples"
    await streams.stop()


async def test_words_settle_and_are_searched_while_speaking(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    searched: list[tuple[str, SearchOptions]] = []
    newest = SearchOptions(sort="newest")

    async def search(query: str, options: SearchOptions) -> SearchResult:
        searched.append((query, options))
        return SearchResult(query=query, hits=[])

    settings = VoiceSettings(**(PLAIN | {"live_search_interval_ms": 0}))
    streams = VoiceStreams(settings, batcher, search=search)
    owner = Owner()
    stream = streams.open("settle-1", owner, options=newest)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    model.release()
    first = await owner.next_partial()
    assert (first.settled, first.tentative) == ("", "heard 6400 samples")  # one pass settles nothing
    await streams.feed(stream, f32(tone(0.2)))
    await entered(model)
    model.release()
    second = await owner.next_partial()
    # "heard" agrees across both passes; the rest differs.
    assert (second.settled, second.tentative) == ("heard", "9600 samples")
    assert await asyncio.wait_for(owner.hits.get(), WAIT_S) == "heard"
    assert searched == [("heard", newest)]  # with the recording's own sort and date range
    final = streams.finish(stream)
    model.release(10)
    await final
    assert owner.hits.empty()


async def test_a_lead_in_of_silence_goes_before_every_pass(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    streams = VoiceStreams(VoiceSettings(**(PLAIN | {"lead_in_ms": 250})), batcher)
    owner = Owner()
    stream = streams.open("lead-1", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)
    model.release()
    assert (await owner.next_partial()).text == f"heard {6400 + 4000} samples"
    assert stream.seconds == 0.4  # the recording itself has no lead-in
    final = streams.finish(stream)
    model.release(10)
    assert (await final).text == f"heard {6400 + 4000} samples"


async def test_no_partial_runs_beside_a_final_that_covers_every_word(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    streams = early_final_streams(batcher)
    owner = Owner()
    stream = streams.open("beside-1", owner)
    await streams.feed(stream, f32(tone(0.4)))
    await entered(model)  # a partial over the speech is running
    await streams.feed(stream, f32(silence(0.2)))
    assert stream.early_final is not None
    model.release()
    # The partial had started: it costs the same shown or not, so its words are shown.
    assert (await owner.next_partial()).text == "heard 6400 samples"
    assert not model.clips[0][0].abandoned
    await entered(model)  # the final runs
    await streams.feed(stream, f32(silence(0.2)))
    # Every word said is in the running final: another partial over them would only slow it down.
    assert stream.task is None and stream.pending is None
    final = streams.finish(stream)
    model.release(10)
    assert (await final).text == "heard 9600 samples"
    assert model.finals == [[False], [True]]
    assert not model.clips[1][0].abandoned  # the final was wanted to the end
    await streams.stop()
