"""Live voice streams: PCM in while someone speaks, partial transcripts out, one final transcript at stop.

Per stream the audio grows in one float32 buffer (16 kHz mono, at most `max_seconds`) that doubles
when full. A speech detector (Silero VAD, or the loudness rule) judges every frame in a worker thread.
While the person speaks, the audio since the last pause is transcribed again and again as *partials*
(shortened windows where the backend has them; see VoiceStream.close_segment): at most one pass per
stream is queued or running, audio arriving meanwhile joins the next pass (coalescing), and silence
calls for no pass, so a slow model makes partials less frequent, never later and later. Words two
partials agree on settle (LocalAgreement-2) and are searched while the person still speaks.

The final is always a full-window pass, started early: after `final_after_silence_ms` of quiet, a final
pass over what was said is queued; if the quiet lasts `end_silence_ms` the recording ends by itself
with that pass as its final (speech that resumes discards it). Done before that, its words and their
hits are shown at once (capsearch.voice.partials). That early start is speculation, made
only with compute nobody else needs: while another recording is mid-utterance, a final beside its
partials made them 2-3x slower (four speakers: lag up to 0.8 s instead of 0.4), so this speaker's final
then starts once the others pause, or at its own end of speech. Partials run at background priority,
finals at interactive priority.
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
from capsearch.services.search_options import RELEVANCE, SearchOptions
from capsearch.voice.activity import ActivityDetector, LoudnessDetector
from capsearch.voice.audio import SAMPLE_RATE, AudioError, no_speech
from capsearch.voice.live_search import LiveSearch, Search
from capsearch.voice.partials import run_partials, show_early_final
from capsearch.voice.stream import (
    TALKING_MS,
    Pass,
    StopReason,
    StreamOwner,
    Transcriber,
    Transcript,
    VoiceError,
    VoiceStream,
    lead_in,
    pass_clip,
    short_frame,
    submit_pass,
)

log = logging.getLogger(__name__)


class VoiceStreams:
    """Every live voice stream of the app, keyed by the client's stream id."""

    def __init__(
        self,
        settings: VoiceSettings,
        transcriber: Transcriber,
        *,
        detector: ActivityDetector | None = None,
        search: Search | None = None,
    ) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.detector: ActivityDetector = detector or LoudnessDetector(settings)
        self._live = LiveSearch(search, settings.live_search_interval_ms / 1000) if search else None
        self._streams: dict[str, VoiceStream] = {}
        self._clients = ClientSlots(settings.max_streams_per_client)
        self._sweeper = Periodic(
            "sweeping voice streams", sweep_interval(settings.stream_timeout_s, ceiling_s=5.0), self.sweep
        )
        self._max_samples = int(settings.max_seconds * SAMPLE_RATE)
        self._lead_in = lead_in(settings.lead_in_ms)

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
        self,
        stream_id: str,
        owner: StreamOwner,
        *,
        search: bool = True,
        options: SearchOptions = RELEVANCE,
        client: str | None = None,
    ) -> VoiceStream:
        """Start a stream searching with `options`; `client` (its socket's address) counts against a cap."""
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
        now = time.monotonic()
        stream = VoiceStream(stream_id, owner, search, now, self.detector.new_stream(), client, options)
        self._streams[stream_id] = stream
        return stream

    async def feed(self, stream: VoiceStream, samples: np.ndarray) -> StopReason | None:
        """Append one frame's samples, judge them, and start whatever passes they call for. Returns why
        the recording should end now (the speaker went quiet, or the cap), or None to go on."""
        error = short_frame(stream, samples.size, self.settings.min_frame_samples)
        if error is not None:
            self.discard(stream)
            raise error
        room = self._max_samples - stream.samples
        capped = samples.size >= room
        samples = samples[:room]
        if samples.size == 0:
            # No audio is no sign of life: the stall timeout still ends a silent sender.
            return "max_seconds" if capped else None
        stream.touched = time.monotonic()
        stream.append(samples, self._max_samples)
        activity = await asyncio.to_thread(stream.detector.feed, samples)
        if stream.finishing or self._streams.get(stream.id) is not stream:
            return None
        stream.activity = activity
        stream.note_pause(self.settings.final_after_silence_ms)
        if not stream.speech:
            return "max_seconds" if capped else None
        s = self.settings
        # Only new speech, and enough of it since the last split, calls for a partial.
        if stream.task is None and stream.wants_partial(s.first_partial_ms):
            passes = run_partials(
                stream, self.transcriber, self._lead_in, s.first_partial_ms, self._live, self._alive
            )
            stream.task = asyncio.create_task(passes, name=f"voice-{stream.id}")
        self._early_final(stream, activity.silence_ms)
        if capped:
            return "max_seconds"
        return "silence" if activity.ended and s.end_silence_ms > 0 else None

    def _submit_final(self, audio: np.ndarray) -> asyncio.Future[str]:
        return submit_pass(
            self.transcriber, pass_clip(audio, self._lead_in, final=True), Priority.INTERACTIVE
        )

    def _early_final(self, stream: VoiceStream, silence_ms: float) -> None:
        """Start the final pass in a silence; drop one that speech has since made stale."""
        early = stream.early_final
        if early is not None and early.samples < stream.speech_end:
            early.future.cancel()  # the speaker went on: it no longer covers what was said
            stream.early_final = early = None
        if early is not None or silence_ms < self.settings.final_after_silence_ms:
            return
        within = self.settings.end_silence_ms or TALKING_MS
        if any(other.talking(within) for other in self._streams.values() if other is not stream):
            return  # speculation waits for spare compute (module docstring)
        audio = stream.audio()
        pending = stream.pending
        # A queued partial that the final covers would only make it wait; one that has started
        # costs the same whether or not its words are shown (on one queue, dropping it too left a
        # speaker who pauses briefly without any partial).
        if pending is not None and pending.samples <= audio.size and not pending.started:
            pending.future.cancel()
        try:
            run = stream.early_final = Pass(audio.size, self._submit_final(audio))
        except CapsearchError as e:  # busy or shutting down: the stop will try again
            log.debug("voice %s: early final skipped: %s", stream.id, e.message)
            return
        run.future.add_done_callback(lambda _: show_early_final(stream, run, self._live, self._alive))

    def _alive(self, stream: VoiceStream) -> bool:
        return self._streams.get(stream.id) is stream

    def finish(self, stream: VoiceStream) -> Coroutine[Any, Any, Transcript]:
        """Stop taking audio now and pick the final pass; await the result for the final transcript.

        Synchronous up to the returned coroutine, so a stop is in effect the moment it is read: later
        frames are refused and a partial pass still queued leaves it at once. The coroutine raises
        AudioError(no_speech) or the model's CapsearchError; the stream is gone afterwards either way.
        """
        stream.finishing = True
        stream.quiet()
        if not stream.speech:
            self.discard(stream)
            return self._refuse(no_speech())
        early = stream.early_final
        # An early final that covers every word said (only silence came after it) is the final.
        if early is not None and early.samples >= stream.speech_end and not early.future.cancelled():
            return self._final(stream, early.future)
        if early is not None:
            early.future.cancel()
        try:
            final = self._submit_final(stream.audio())
        except CapsearchError as e:  # busy or shutting down
            self.discard(stream)
            return self._refuse(e)
        return self._final(stream, final)

    async def _final(self, stream: VoiceStream, source: Awaitable[str]) -> Transcript:
        try:
            text = await source
            if not text:
                raise AudioError("no_speech", "No words were recognised in this recording.")
            return Transcript(text, stream.seconds)
        finally:
            self.discard(stream)

    @staticmethod
    async def _refuse(error: CapsearchError) -> Transcript:
        raise error

    def discard(self, stream: VoiceStream) -> None:
        """Forget a stream and its audio; its passes still queued leave the queue."""
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
            if stream.client is not None:
                self._clients.release(stream.client)
        stream.finishing = True
        stream.quiet()
        early = stream.early_final
        if early is not None and not early.future.done():
            early.future.cancel()
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
