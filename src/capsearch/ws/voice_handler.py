"""The voice messages of one socket: start, PCM frames, stop, cancel (docs/protocol.md, "Voice").

Every `voice.error` ends its recording and drops its audio; the socket itself stays usable.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol

from capsearch.config import VoiceSettings
from capsearch.errors import CapsearchError, RateLimitedError
from capsearch.pipelines.voice import VoicePipeline
from capsearch.ratelimit import RateLimits
from capsearch.services.search import SearchResult
from capsearch.shapes import SearchScope, search_response, search_results_html
from capsearch.voice.audio import SAMPLE_RATE, pcm_to_float
from capsearch.voice.stream import Partial, Transcript, VoiceStream
from capsearch.voice.streams import VoiceStreams
from capsearch.ws.frames import PcmFrame
from capsearch.ws.messages import (
    ProtocolError,
    ServerMessage,
    VoiceAccepted,
    VoiceCancel,
    VoiceErrorOut,
    VoiceFinal,
    VoiceHits,
    VoicePartial,
    VoiceStart,
    VoiceStop,
    VoiceStopped,
)

log = logging.getLogger(__name__)


class Channel(Protocol):
    """What the voice handler needs from its socket."""

    @property
    def id(self) -> str: ...

    @property
    def client(self) -> str: ...  # the client's key for per-client limits (its IP address)

    async def send(self, message: ServerMessage) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


def _not_started(stream_id: str) -> ProtocolError:
    return ProtocolError(
        "voice_not_started", "No recording with this id is in progress on this connection.", stream_id
    )


class _Results:
    """One recording's final transcript and hits, as socket messages (the pipeline's VoiceOut)."""

    def __init__(self, channel: Channel, stream_id: str) -> None:
        self.channel, self.stream_id = channel, stream_id

    async def final(self, transcript: Transcript) -> None:
        seconds = round(transcript.seconds, 2)
        await self.channel.send(VoiceFinal(id=self.stream_id, text=transcript.text, seconds=seconds))

    async def hits(self, transcript: Transcript, result: SearchResult) -> None:
        await self.channel.send(hits_message(self.stream_id, transcript.text, result, partial=False))


def hits_message(stream_id: str, transcript: str, result: SearchResult, *, partial: bool) -> VoiceHits:
    response = search_response(result)
    return VoiceHits(
        id=stream_id,
        transcript=transcript,
        query=result.query,
        hits=response.hits,
        no_match=response.no_match,
        # The results panel itself, from the search template: the page shows it as it is.
        html=search_results_html(response),
        **response.model_dump(include=set(SearchScope.model_fields)),
        partial=partial,
    )


class VoiceHandler:
    def __init__(
        self,
        channel: Channel,
        *,
        streams: VoiceStreams,
        voice: VoicePipeline,
        settings: VoiceSettings,
        rate_limits: RateLimits,
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.rate_limits = rate_limits
        self.streams = streams
        self.voice = voice
        self._mine: dict[str, VoiceStream] = {}  # recording or finishing on this socket
        # Ended by the server (silence, cap): frames and a stop the page sent before it heard so are
        # dropped without an error. The latest few ids; the page starts each recording with a new one.
        self._ended: deque[str] = deque(maxlen=16)

    async def _error(self, stream_id: str, code: str, detail: str, retry_after: int | None = None) -> None:
        await self.channel.send(
            VoiceErrorOut(id=stream_id, code=code, detail=detail, retry_after=retry_after)
        )

    def _recording(self, stream_id: str) -> VoiceStream:
        stream = self._mine.get(stream_id)
        if stream is None or stream.finishing or self.streams.get(stream_id) is not stream:
            raise _not_started(stream_id)
        return stream

    # ---- called by the engine -----------------------------------------------------------------

    async def voice_partial(self, stream_id: str, partial: Partial) -> None:
        await self.channel.send(
            VoicePartial(
                id=stream_id,
                text=partial.text,
                settled=partial.settled,
                tentative=partial.tentative,
                seconds=round(partial.seconds, 2),
            )
        )

    async def voice_live_hits(self, stream_id: str, query: str, result: SearchResult) -> None:
        await self.channel.send(hits_message(stream_id, query, result, partial=True))

    def voice_failed(self, stream_id: str, code: str, detail: str) -> None:
        self._mine.pop(stream_id, None)
        self.channel.spawn(self._error(stream_id, code, detail))

    # ---- messages -----------------------------------------------------------------------------

    async def start(self, message: VoiceStart) -> None:
        try:
            self.rate_limits.take(self.rate_limits.voice, self.channel.client)
        except RateLimitedError as e:
            wait = math.ceil(e.retry_after) if e.retry_after is not None else None
            await self._error(message.id, e.code, e.message, wait)
            return
        if message.sample_rate != SAMPLE_RATE:
            rate = message.sample_rate
            detail = f"Audio must be sent at {SAMPLE_RATE} Hz, not {rate} Hz; resample it first."
            await self._error(message.id, "unsupported_sample_rate", detail)
            return
        # Forget streams the engine already ended (timed out, failed) before counting.
        self._mine = {k: s for k, s in self._mine.items() if self.streams.get(k) is s}
        limit = self.settings.max_streams_per_connection
        if message.id not in self._mine and len(self._mine) >= limit:
            detail = f"At most {limit} recordings can be in progress at once; stop one first."
            await self._error(message.id, "too_many_streams", detail)
            return
        try:
            options = message.options()  # bad_sort, bad_date, bad_date_range, bad_time_zone
            stream = self.streams.open(
                message.id, self, search=message.search, options=options, client=self.channel.client
            )
        except CapsearchError as e:
            await self._error(message.id, e.code, e.message)
            return
        self._mine[stream.id] = stream
        await self.channel.send(
            VoiceAccepted(id=stream.id, sample_rate=SAMPLE_RATE, max_seconds=self.settings.max_seconds)
        )

    async def frame(self, frame: PcmFrame) -> None:
        if frame.stream_id in self._ended:
            return
        stream = self._recording(frame.stream_id)
        try:
            samples = pcm_to_float(frame.payload, frame.encoding)
            reason = await self.streams.feed(stream, samples)
        except CapsearchError as e:  # bad_pcm, frame_too_small: the recording is over
            self._drop(stream)
            await self._error(stream.id, e.code, e.message)
            return
        if reason is not None and not stream.finishing:
            self._ended.append(stream.id)
            await self.channel.send(VoiceStopped(id=stream.id, reason=reason))
            self._stop(stream)

    async def stop(self, message: VoiceStop) -> None:
        if message.id in self._ended:
            return  # the server ended it first; the page's stop crossed our voice.stopped
        self._stop(self._recording(message.id))

    def _stop(self, stream: VoiceStream) -> None:
        final = self.streams.finish(stream)  # in effect now: later frames for it are refused
        # Its own task: transcribing and searching take a while, and other messages keep flowing.
        self.channel.spawn(self._finish(stream, final))

    async def cancel(self, message: VoiceCancel) -> None:
        stream = self._mine.get(message.id)
        # Cancelling what is already gone needs no answer, like upload.cancel.
        if stream is not None:
            self._drop(stream)

    def _drop(self, stream: VoiceStream) -> None:
        self._mine.pop(stream.id, None)
        self.streams.discard(stream)

    async def _finish(self, stream: VoiceStream, final: Coroutine[Any, Any, Transcript]) -> None:
        try:
            await self.voice.finish(stream, final, _Results(self.channel, stream.id))
        except CapsearchError as e:  # no_speech, busy, model_error, ...
            await self._error(stream.id, e.code, e.message)
        except Exception:
            log.exception("finishing voice stream %s failed", stream.id)
            await self._error(stream.id, "internal_error", "The server could not transcribe this; try again.")
        finally:
            self._mine.pop(stream.id, None)

    async def close(self) -> None:
        """The socket closed: its recordings end at once (there is no resuming a live recording)."""
        self._mine.clear()
        self._ended.clear()
        self.streams.discard_owner(self)
