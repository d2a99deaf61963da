"""The voice flow, one step after another: audio → transcript → search → publish.

Two ways in, one way through:

* a file (REST `/api/voice/*`): `decode` (any format → 16 kHz mono, worker thread) → `transcribe`
  (silence is refused without asking the model; one interactive pass) → `search_transcript`;
* a live recording (the page's socket): PCM frames feed a stream in capsearch.voice.streams, which
  pushes partial transcripts while the person talks; at stop, `finish` awaits the final pass, pushes
  the transcript, searches it, and pushes the hits (rendered by the socket with the search template).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

import numpy as np

from capsearch.batching import Priority
from capsearch.config import VoiceSettings
from capsearch.errors import CapsearchError
from capsearch.services.search import SearchResult, SearchService
from capsearch.services.search_options import RELEVANCE, SearchOptions
from capsearch.voice.activity import ActivityDetector
from capsearch.voice.audio import SAMPLE_RATE, AudioError, decode_audio, no_speech
from capsearch.voice.lanes import TranscriberLanes
from capsearch.voice.stream import Transcript, VoiceStream, lead_in, pass_clip

log = logging.getLogger(__name__)
_CHUNK = 512  # Silero VAD's chunk: 32 ms at 16 kHz


def has_speech(samples: np.ndarray, detector: ActivityDetector) -> bool:
    """At least `min_speech_ms` of speech, judged as live recordings are (Silero VAD, or the loudness
    rule): quiet rooms, clicks and (with Silero) hums stay silent."""
    pad = -samples.size % _CHUNK  # the detector hears whole chunks: the clip's last one too
    clip = np.pad(samples, (0, pad)) if pad else samples
    return detector.new_stream().feed(clip).heard_speech


def query_of(transcript: str, max_chars: int) -> str:
    """The transcript as a search query: 30 s of speech can outrun the query limit, so keep what fits,
    cut at a word boundary, rather than refuse the whole recording."""
    if len(transcript) <= max_chars:
        return transcript
    space = transcript.rfind(" ", 0, max_chars + 1)  # transcripts are tidy: single spaces only
    return transcript[:space] if space > 0 else transcript[:max_chars]


class VoiceOut(Protocol):
    """Where a live recording's results go (the page's socket)."""

    async def final(self, transcript: Transcript) -> None: ...

    async def hits(self, transcript: Transcript, result: SearchResult) -> None: ...


class VoicePipeline:
    def __init__(
        self,
        *,
        settings: VoiceSettings,
        transcriber: TranscriberLanes,
        search: SearchService,
        detector: ActivityDetector,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.transcriber = transcriber
        self.search = search
        self._lead_in = lead_in(settings.lead_in_ms)

    async def decode(self, data: bytes) -> np.ndarray:
        """Any supported file to 16 kHz mono float32, in a worker thread; raises AudioError."""
        try:
            return await asyncio.to_thread(decode_audio, data, self.settings.max_seconds)
        except CapsearchError:
            raise
        except Exception as exc:
            # Whatever a hostile file makes the decoders raise is that file's fault, not a server error.
            log.warning("decoding an audio file failed unexpectedly", exc_info=True)
            raise AudioError("corrupt_audio", "This audio file is damaged and could not be decoded.") from exc

    async def transcribe(self, samples: np.ndarray) -> Transcript:
        """Transcribe a whole clip; raises AudioError(no_speech) for silence without asking the model."""
        if not await asyncio.to_thread(has_speech, samples, self.detector):
            raise no_speech()
        text = await self.transcriber.run(pass_clip(samples, self._lead_in, final=True), Priority.INTERACTIVE)
        if not text:
            raise AudioError("no_speech", "No words were recognised in this recording.")
        return Transcript(text, samples.size / SAMPLE_RATE)

    async def transcribe_file(self, data: bytes) -> Transcript:
        return await self.transcribe(await self.decode(data))

    async def search_transcript(
        self, transcript: str, options: SearchOptions = RELEVANCE, k: int | None = None
    ) -> SearchResult:
        """The search hook of voice: a final transcript → hits, exactly like a typed query."""
        query = query_of(transcript, self.search.settings.max_query_chars)
        return await self.search.search(query, k, options)

    async def finish(self, stream: VoiceStream, final: Awaitable[Transcript], out: VoiceOut) -> None:
        """The end of a live recording: its final pass → the transcript → (if asked) hits, each pushed
        to `out` as soon as it is known. Raises CapsearchError (no_speech, busy, ...) for `out` to show."""
        transcript = await final
        await out.final(transcript)
        if stream.search:
            await out.hits(transcript, await self.search_transcript(transcript.text, stream.options))
