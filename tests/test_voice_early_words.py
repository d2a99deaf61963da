"""The early final's words and hits before the recording ends: shown as soon as that pass is done if
nobody spoke since, never when speech resumed, and searched without the live search's interval.
Orderings are forced by the gated model, never by sleeping.
"""

from __future__ import annotations

import asyncio

from capsearch.batching import Batcher
from capsearch.config import VoiceSettings
from capsearch.ml.speech import Clip
from capsearch.services.search import SearchResult
from capsearch.services.search_options import SearchOptions
from capsearch.voice.streams import VoiceStreams
from tests.streamkit import PLAIN, WAIT_S, Owner, batcher, entered, f32, model, spoken
from tests.voicekit import GatedTranscriber, silence, tone

__all__ = ["batcher", "model"]  # fixtures, used by name


def searching_streams(batcher: Batcher[Clip, str], searched: list[str], stuck: str = "\0") -> VoiceStreams:
    """Final after 200 ms of quiet, auto-stop after 800, and a live search interval far longer than
    any test. A search for `stuck` never returns."""

    async def search(query: str, options: SearchOptions) -> SearchResult:
        searched.append(query)
        if query == stuck:
            await asyncio.Event().wait()
        return SearchResult(query=query, hits=[])

    overrides = {"final_after_silence_ms": 200, "end_silence_ms": 800, "live_search_interval_ms": 600_000}
    return VoiceStreams(VoiceSettings(**(PLAIN | overrides)), batcher, search=search)


async def test_the_early_final_shows_its_words_and_hits_before_the_recording_ends(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    searched: list[str] = []
    streams = searching_streams(batcher, searched, stuck="heard")
    owner = Owner()
    stream = streams.open("early-words-1", owner)
    await spoken(streams, stream, model, 0.4)
    await spoken(streams, stream, model, 0.2)  # "heard" settles; its live search starts (and hangs)
    assert await streams.feed(stream, f32(silence(0.2))) is None
    await entered(model)  # 200 ms of quiet: the final pass over what was said
    model.release()
    # Done while the recording is still open: its words, and its transcript's hits at once, without
    # waiting for the search of older words still running, or out the interval after it.
    words = await owner.next_partial()
    assert (words.text, words.seconds) == ("heard 12800 samples", 0.8)
    assert await asyncio.wait_for(owner.hits.get(), WAIT_S) == "heard 12800 samples"
    assert searched == ["heard", "heard 12800 samples"]
    reasons = [await streams.feed(stream, f32(silence(0.2))) for _ in range(3)]
    assert reasons == [None, None, "silence"]
    transcript = await streams.finish(stream)
    assert transcript.text == "heard 12800 samples"  # the same pass is the final: no other one
    assert model.finals == [[False], [False], [True]]
    await streams.stop()


async def test_words_of_an_early_final_that_speech_made_stale_are_never_shown(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    searched: list[str] = []
    streams = searching_streams(batcher, searched)
    owner = Owner()
    stream = streams.open("early-words-2", owner)
    await spoken(streams, stream, model, 0.4)
    await streams.feed(stream, f32(silence(0.2)))
    await entered(model)  # the early final runs
    early = stream.early_final
    assert early is not None
    await streams.feed(stream, f32(tone(0.2)))  # the speaker goes on before it is done
    model.release()
    await entered(model)  # the partial over the new speech: the stale final has come back by now
    assert early.future.cancelled() and stream.final_shown == 0
    model.release()
    # The pause split the recording: this partial heard what followed it.
    assert (await owner.next_partial()).text == "heard 6400 samples heard 6400 samples"
    final = streams.finish(stream)
    model.release(10)
    assert (await final).text == f"heard {6400 + 3200 + 3200} samples"
    # Only the settled words were searched, never the stale final's "heard 9600 samples".
    assert searched == ["heard 6400 samples"] and owner.partials.empty()
    await streams.stop()


async def test_an_early_final_done_after_the_stop_only_makes_the_final(
    batcher: Batcher[Clip, str], model: GatedTranscriber
) -> None:
    searched: list[str] = []
    streams = searching_streams(batcher, searched)
    owner = Owner()
    stream = streams.open("early-words-3", owner)
    await spoken(streams, stream, model, 0.4)
    await streams.feed(stream, f32(silence(0.2)))
    await entered(model)
    final = streams.finish(stream)  # the page pressed stop while the early final ran
    model.release()
    assert (await final).text == "heard 9600 samples"
    assert owner.partials.empty() and searched == []  # voice.final carries its words
    await streams.stop()
