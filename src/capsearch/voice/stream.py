"""One live voice stream and what it talks to: its growing audio buffer, its owner (the socket), the
transcriber it queues passes on, its speech detector, and the transcripts passes give back. The engine
is capsearch.voice.streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from capsearch.batching import Priority
from capsearch.errors import CapsearchError
from capsearch.ml.speech import Clip
from capsearch.services.search import SearchResult
from capsearch.services.search_options import RELEVANCE, SearchOptions
from capsearch.voice.activity import Activity, ActivityStream
from capsearch.voice.agreement import Settler
from capsearch.voice.audio import SAMPLE_RATE, AudioError

# Why a recording ended without voice.stop.
StopReason = Literal["silence", "max_seconds"]
# A stream's buffer starts at 2 s of audio and doubles: a 30 s recording is copied four times in all.
_FIRST_CAPACITY = 2 * SAMPLE_RATE


class Transcriber(Protocol):
    """What the engine needs from the transcriber's batcher."""

    def submit(
        self, item: Clip, priority: Priority = ..., on_start: Callable[[], None] | None = ...
    ) -> asyncio.Future[str]: ...


def short_frame(stream: VoiceStream, size: int, min_samples: int) -> AudioError | None:
    """Tiny frames cost a message each for next to no audio: only the page's last flush may be short.
    Returns the error that ends the recording when a second one arrives."""
    if size >= min_samples and not stream.short_frame:
        return None
    if stream.short_frame:
        return AudioError(
            "frame_too_small",
            f"Audio frames must hold at least {min_samples:,} samples; only the last one before "
            "voice.stop may be shorter. This recording was stopped.",
        )
    stream.short_frame = True
    return None


def lead_in(ms: float) -> np.ndarray:
    """Silence to put before a pass's audio (VoiceSettings.lead_in_ms)."""
    return np.zeros(int(ms * SAMPLE_RATE / 1000), np.float32)


def pass_clip(audio: np.ndarray, silence: np.ndarray, *, final: bool) -> Clip:
    """One pass's request: the audio after the lead-in silence."""
    return Clip(np.concatenate([silence, audio]) if silence.size else audio, final=final)


def submit_pass(transcriber: Transcriber, clip: Clip, priority: Priority) -> asyncio.Future[str]:
    """Queue one pass. Cancelling its future marks the clip dropped, so a backend that has begun it
    can skip what is left (CTranslate2: the decoding after the encoder, ~a quarter of a final)."""
    dropped = threading.Event()
    future = transcriber.submit(dataclasses.replace(clip, dropped=dropped), priority)
    future.add_done_callback(lambda f: dropped.set() if f.cancelled() else None)
    return future


@dataclass(frozen=True)
class Partial:
    """Words heard so far: `settled` ones two passes agreed on, then `tentative` ones (LocalAgreement-2)."""

    text: str
    settled: str
    tentative: str
    seconds: float  # how much of the recording the pass covered


class StreamOwner(Protocol):
    """The socket a stream belongs to."""

    async def voice_partial(self, stream_id: str, partial: Partial) -> None: ...

    async def voice_live_hits(self, stream_id: str, query: str, result: SearchResult) -> None: ...

    def voice_failed(self, stream_id: str, code: str, detail: str) -> None: ...


class VoiceError(CapsearchError):
    """A stream that cannot start or go on. Codes: duplicate_stream_id, too_many_streams, busy."""

    def __init__(self, code: str, message: str, status_code: int = 409) -> None:
        super().__init__(message, code=code, status_code=status_code)


@dataclass(frozen=True)
class Transcript:
    text: str
    seconds: float  # length of the audio it covers


@dataclass(eq=False)
class Pass:
    samples: int  # how much of the buffer this pass covers
    future: asyncio.Future[str]


@dataclass(eq=False)
class VoiceStream:
    id: str
    owner: StreamOwner
    search: bool  # run a search with the final transcript (and with settled words while speaking)
    touched: float  # monotonic time of the last frame with samples (or the start)
    detector: ActivityStream
    client: str | None = None  # whose per-client slot it holds (None: not counted)
    options: SearchOptions = RELEVANCE  # the order and date range of its searches
    # The audio so far is buffer[:samples]; the rest is room to grow into.
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    samples: int = 0
    short_frame: bool = False  # a frame below the minimum arrived: only voice.stop may follow it
    activity: Activity | None = None  # the detector's view after the latest frame
    finishing: bool = False  # stopped: no more audio, the final pass is on its way
    pending: Pass | None = None  # the partial pass queued or running
    covered: int = 0  # samples the latest finished partial pass covered
    early_final: Pass | None = None  # a final pass started in a silence (see VoiceStreams.feed)
    task: asyncio.Task[None] | None = None  # the partial loop
    settler: Settler = field(default_factory=Settler)
    live_query: str = ""  # the settled words to search while speaking
    searched: str = ""  # the settled words last searched
    search_task: asyncio.Task[None] | None = None

    @property
    def speech(self) -> bool:
        return self.activity is not None and self.activity.heard_speech

    @property
    def new_speech(self) -> bool:
        """Speech that neither the latest partial nor a live early final covers: a partial beside
        such a final would only slow it down (measured 1.29 s instead of 1.01 s on two cores)."""
        early = self.early_final
        live = early.samples if early is not None and not early.future.cancelled() else 0
        return self.speech_end > max(self.covered, live)

    @property
    def speech_end(self) -> int:
        """Samples up to the end of the latest speech (0: none heard yet)."""
        return (self.activity.last_speech_end or 0) if self.activity is not None else 0

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def audio(self) -> np.ndarray:
        """Everything received so far: a view that later frames never change (they land past its end,
        or in a new buffer once this one is full), so a pass may read it while more audio arrives."""
        return self.buffer[: self.samples]

    def append(self, samples: np.ndarray, max_samples: int) -> None:
        end = self.samples + samples.size
        if end > self.buffer.size:
            capacity = min(max_samples, max(end, 2 * self.buffer.size, _FIRST_CAPACITY))
            grown = np.empty(capacity, np.float32)
            grown[: self.samples] = self.buffer[: self.samples]
            self.buffer = grown
        self.buffer[self.samples : end] = samples
        self.samples = end
