"""Live voice streams: PCM in while someone speaks, partial transcripts out, one final transcript at stop.

Per stream the audio grows in one float32 buffer (16 kHz mono, at most `max_seconds`) that doubles when
full: nothing is kept per frame. While recording, the whole buffer is transcribed again and again
through the transcriber's batcher, because Whisper has no streaming mode: each pass sees everything
said so far. At most one pass per stream is ever queued or running; audio that arrives meanwhile waits
and goes into the next pass, all of it at once (coalescing), so a slow model makes partials less
frequent, never later and later.

Partial passes run at background priority and final passes at interactive priority: the person who
pressed stop is waiting for hits, while a partial only refreshes text already on screen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

import numpy as np

from capsearch.batching import Priority
from capsearch.config import VoiceSettings
from capsearch.errors import CapsearchError
from capsearch.periodic import Periodic, sweep_interval
from capsearch.ratelimit import ClientSlots
from capsearch.voice.audio import SAMPLE_RATE, AudioError, loud_samples, no_speech
from capsearch.voice.stream import Pass, StreamOwner, Transcriber, Transcript, VoiceError, VoiceStream

log = logging.getLogger(__name__)


class VoiceStreams:
    """Every live voice stream of the app, keyed by the client's stream id."""

    def __init__(self, settings: VoiceSettings, transcriber: Transcriber) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self._streams: dict[str, VoiceStream] = {}
        self._clients = ClientSlots(settings.max_streams_per_client)
        self._sweeper = Periodic(
            "sweeping voice streams", sweep_interval(settings.stream_timeout_s, ceiling_s=5.0), self.sweep
        )
        self._max_samples = int(settings.max_seconds * SAMPLE_RATE)
        self._min_loud = int(settings.min_speech_ms * SAMPLE_RATE / 1000)
        self._first_partial_loud = max(self._min_loud, int(settings.first_partial_ms * SAMPLE_RATE / 1000))

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()
        for stream in list(self._streams.values()):
            self.discard(stream)

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, stream_id: str) -> VoiceStream | None:
        return self._streams.get(stream_id)

    # ---- streams ------------------------------------------------------------------------------

    def held_by(self, client: str) -> int:
        """How many recordings (live or finishing) this client holds."""
        return self._clients.held(client)

    def open(
        self, stream_id: str, owner: StreamOwner, *, search: bool = True, client: str | None = None
    ) -> VoiceStream:
        """Start a stream; `client` (the socket's IP address) counts it against that client's cap."""
        if stream_id in self._streams:
            raise VoiceError("duplicate_stream_id", "Another recording already uses this id; pick a new one.")
        if client is not None and not self._clients.acquire(client):
            n = self.settings.max_streams_per_client
            raise VoiceError(
                "too_many_streams",
                f"At most {n} recordings from one address can be in progress at once; stop one first.",
                status_code=429,
            )
        if len(self._streams) >= self.settings.max_streams:
            if client is not None:
                self._clients.release(client)
            raise VoiceError(
                "busy", "Too many people are recording right now; try again in a moment.", status_code=503
            )
        stream = VoiceStream(stream_id, owner, search, time.monotonic(), client)
        self._streams[stream_id] = stream
        return stream

    def feed(self, stream: VoiceStream, samples: np.ndarray) -> None:
        """Append one frame's samples and make sure a partial pass will see them."""
        if stream.samples + samples.size > self._max_samples:
            self.discard(stream)
            limit = f"{self.settings.max_seconds:g}"
            raise AudioError(
                "audio_too_long", f"Recordings may be at most {limit} seconds long; this one was stopped."
            )
        if stream.short_frame or samples.size < self.settings.min_frame_samples:
            # Tiny frames cost a message each for next to no audio; only the page's final flush is short.
            if stream.short_frame:
                self.discard(stream)
                n = self.settings.min_frame_samples
                raise AudioError(
                    "frame_too_small",
                    f"Audio frames must hold at least {n:,} samples; only the last one before voice.stop "
                    "may be shorter. This recording was stopped.",
                )
            stream.short_frame = True
        if samples.size == 0:
            return  # no audio is no sign of life: the stall timeout still ends a silent sender
        stream.touched = time.monotonic()
        stream.append(samples, self._max_samples)
        if stream.loud < self._first_partial_loud:
            stream.loud += loud_samples(samples, self.settings.speech_rms)
            stream.speech = stream.loud >= self._min_loud
        # Until someone has said enough there is nothing to transcribe (Whisper invents words for
        # silence and for half a syllable alike).
        if stream.loud >= self._first_partial_loud and stream.task is None:
            stream.task = asyncio.create_task(self._partials(stream), name=f"voice-{stream.id}")

    async def _partials(self, stream: VoiceStream) -> None:
        """Transcribe the growing buffer, one pass at a time, until it stops growing or the stream ends."""
        try:
            while not stream.finishing and stream.samples > (stream.done[0] if stream.done else 0):
                audio = stream.audio()
                try:
                    future = self.transcriber.submit(audio, Priority.BACKGROUND)
                except CapsearchError as e:  # busy or shutting down: skip; the next frame tries again
                    log.debug("voice %s: partial pass skipped: %s", stream.id, e.message)
                    return
                stream.pending = Pass(audio.size, future)
                try:
                    # Shielded: finish() may take this pass over as the final one.
                    text = await asyncio.shield(future)
                except CapsearchError as e:
                    log.debug("voice %s: partial pass failed: %s", stream.id, e.message)
                    return
                finally:
                    stream.pending = None
                stream.done = (audio.size, text)
                if stream.finishing or self._streams.get(stream.id) is not stream:
                    return
                # Sent even when the words did not change: `seconds` shows the page how far it got.
                if text:
                    await stream.owner.voice_partial(stream.id, text, audio.size / SAMPLE_RATE)
        finally:
            stream.task = None

    def finish(self, stream: VoiceStream) -> Coroutine[Any, Any, Transcript]:
        """Stop taking audio now and pick the final pass; await the result for the final transcript.

        Synchronous up to the returned coroutine, so a stop is in effect the moment it is read: later
        frames are refused and a stale partial pass leaves the queue at once. The coroutine raises
        AudioError(no_speech) or the model's CapsearchError; the stream is gone afterwards either way.
        """
        stream.finishing = True
        if not stream.speech:
            self.discard(stream)
            return self._refuse(no_speech())
        total = stream.samples
        pending = stream.pending
        # The last partial pass may already cover every sample (people pause before pressing stop):
        # then it is the final transcript, and the person waits for no model pass at all.
        if stream.done is not None and stream.done[0] == total:
            return self._final(stream, stream.done[1])
        if pending is not None and pending.samples == total:
            return self._final(stream, asyncio.shield(pending.future))
        if pending is not None:
            # Stale: still queued, it leaves the queue; already running, its result is dropped.
            pending.future.cancel()
        try:
            final = self.transcriber.submit(stream.audio(), Priority.INTERACTIVE)
        except CapsearchError as e:  # busy or shutting down
            self.discard(stream)
            return self._refuse(e)
        return self._final(stream, final)

    async def _final(self, stream: VoiceStream, source: str | Awaitable[str]) -> Transcript:
        try:
            text = source if isinstance(source, str) else await source
            if not text:
                raise AudioError("no_speech", "No words were recognised in this recording.")
            return Transcript(text, stream.seconds)
        finally:
            self.discard(stream)

    @staticmethod
    async def _refuse(error: CapsearchError) -> Transcript:
        raise error

    def discard(self, stream: VoiceStream) -> None:
        """Forget a stream and its audio; a partial pass of it still queued leaves the queue."""
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
            if stream.client is not None:
                self._clients.release(stream.client)
        stream.finishing = True
        if stream.pending is not None and not stream.pending.future.done():
            stream.pending.future.cancel()
        if stream.task is not None:
            stream.task.cancel()
        stream.buffer = np.zeros(0, np.float32)  # a pass still running keeps its own view alive

    def discard_owner(self, owner: StreamOwner) -> int:
        """The owner's socket closed: its streams go at once (a recording cannot be resumed)."""
        mine = [s for s in self._streams.values() if s.owner is owner]
        for stream in mine:
            self.discard(stream)
        return len(mine)

    def sweep(self, now: float | None = None) -> int:
        """Time out streams that got no audio for `stream_timeout_s` and were never stopped."""
        now = time.monotonic() if now is None else now
        timeout = self.settings.stream_timeout_s
        stale = [s for s in self._streams.values() if not s.finishing and now - s.touched > timeout]
        for stream in stale:
            self.discard(stream)
            stream.owner.voice_failed(
                stream.id,
                "stream_timeout",
                f"No audio arrived for {timeout:g} seconds and the recording was never stopped; "
                "it was discarded.",
            )
        return len(stale)
