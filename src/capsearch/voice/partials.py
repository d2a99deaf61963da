"""What a live recording shows while it lasts: the partial passes' words, and the early final's.

Partials transcribe the growing buffer one pass at a time while new speech keeps coming
(capsearch.voice.streams has the rules). When the speaker pauses, the final pass starts early; if it
is done before the recording ends, its words are shown at once and its transcript is searched
without the live search's debounce: the hits of what the person said arrive as soon as the pass
is done, not only once the silence has lasted `end_silence_ms` and the recording ends (the final
then carries the same words). On a fast model this is most of the wait: a 50 ms pass on a GPU would
otherwise show its hits only 0.8 s later, at the auto-stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from capsearch.errors import CapsearchError
from capsearch.voice.audio import SAMPLE_RATE
from capsearch.voice.live_search import LiveSearch
from capsearch.voice.stream import Partial, Pass, Transcriber, VoiceStream, queue_partial

log = logging.getLogger(__name__)


async def show_words(
    stream: VoiceStream, text: str, samples: int, live: LiveSearch | None, *, whole: bool = False
) -> None:
    """Send the words of a pass over the first `samples` and search them. `whole`: the final pass
    over everything said, whose transcript is searched at once (a partial's settled words wait
    for the live search's interval)."""
    words = stream.settler.update(text)
    # Sent even when the words did not change: `seconds` shows the page how far it got.
    await stream.owner.voice_partial(
        stream.id, Partial(text, words.settled, words.tentative, samples / SAMPLE_RATE)
    )
    if not stream.search or live is None:
        return
    if whole:
        live.request(stream, text, at_once=True)
    elif words.settled_changed:
        live.request(stream, words.settled)


async def run_partials(
    stream: VoiceStream,
    transcriber: Transcriber,
    silence: np.ndarray,
    first_partial_ms: float,
    live: LiveSearch | None,
    alive: Callable[[VoiceStream], bool],
) -> None:
    """Transcribe the growing buffer, one pass at a time, while new speech keeps coming."""
    try:
        while not stream.finishing and stream.wants_partial(first_partial_ms):
            try:
                run = stream.pending = queue_partial(transcriber, stream, silence)
            except CapsearchError as e:  # busy or shutting down: skip; the next frame tries again
                log.debug("voice %s: partial pass skipped: %s", stream.id, e.message)
                return
            try:
                text = await run.future
            except (CapsearchError, asyncio.CancelledError) as e:
                if not run.future.cancelled():
                    log.debug("voice %s: partial pass failed: %s", stream.id, e)
                return
            finally:
                stream.pending = None
            text = stream.heard(text, run.samples)
            if stream.finishing or not alive(stream):
                return
            # A partial that came back after the early final's words would take words back.
            if text and run.samples > stream.final_shown:
                await show_words(stream, text, run.samples, live)
            stream.close_segment()
    finally:
        stream.task = None


def show_early_final(
    stream: VoiceStream, run: Pass, live: LiveSearch | None, alive: Callable[[VoiceStream], bool]
) -> None:
    """Done callback of an early final: if the recording is still live and nobody spoke since what
    it covers, show its words and search them now (module docstring)."""
    future = run.future
    if future.cancelled() or future.exception() is not None:
        return  # a failed early final: the stop submits the final again and reports the error
    if stream.finishing or not alive(stream) or stream.early_final is not run:
        return
    text = future.result()
    if not text or run.samples < stream.speech_end:
        return
    stream.final_shown = run.samples
    stream.words_task = asyncio.create_task(
        show_words(stream, text, run.samples, live, whole=True), name=f"voice-final-words-{stream.id}"
    )
