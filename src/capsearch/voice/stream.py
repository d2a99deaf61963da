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
# With auto-stop off (end_silence_ms=0): how recent speech must be for a speaker to count as talking.
TALKING_MS = 800.0
# A pause a recording may split at (VoiceStream.close_segment): one between phrases, not a breath
# between words; never shorter than the wait before the early final.
SPLIT_PAUSE_MS = 200.0


class Transcriber(Protocol):
    """What the engine needs from the transcriber's batcher."""

    def submit(
        self, item: Clip, priority: Priority = ..., on_start: Callable[[], Clip | None] | None = ...
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


def submit_pass(
    transcriber: Transcriber, clip: Clip, priority: Priority, fresh: Callable[[], Clip] | None = None
) -> asyncio.Future[str]:
    """Queue one pass. Cancelling its future marks the clip dropped, so a backend that has begun it
    can skip what is left (CTranslate2: the decoding after the encoder, ~a quarter of a final).
    `fresh`: called as the pass starts, for the clip to run instead (audio that came meanwhile)."""
    dropped = threading.Event()

    def start() -> Clip | None:
        return dataclasses.replace(fresh(), dropped=dropped) if fresh is not None else None

    future = transcriber.submit(dataclasses.replace(clip, dropped=dropped), priority, start)
    future.add_done_callback(lambda f: dropped.set() if f.cancelled() else None)
    return future


def queue_partial(transcriber: Transcriber, stream: VoiceStream, silence: np.ndarray) -> Pass:
    """Queue a partial over the segment so far, at background priority. As it starts, the audio
    that came while it queued joins it: a partial covers the newest audio it can."""
    audio, reach = stream.partial_audio()

    def fresh() -> Clip:
        latest, run.samples = stream.partial_audio()
        run.started = True
        return pass_clip(latest, silence, final=False)

    clip = pass_clip(audio, silence, final=False)
    run = Pass(reach, submit_pass(transcriber, clip, Priority.BACKGROUND, fresh))
    return run


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


@dataclass(frozen=True)
class Pause:
    start: int  # samples: where the speech before it ended
    end: int  # how far the silence reached when last seen
    speech_ms: float  # speech heard up to it


@dataclass(eq=False)
class Pass:
    samples: int  # how much of the buffer this pass covers
    future: asyncio.Future[str]
    started: bool = False  # a partial's batch went to the model (it cannot be taken back)


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
    hypothesis: str = ""  # the latest partial's words, for the whole recording
    # Partials transcribe buffer[segment:] and put `committed` (the words before it) in front.
    segment: int = 0
    committed: str = ""
    segment_from_ms: float = 0.0  # the detector's speech_ms when the segment began
    pause: Pause | None = None  # the latest pause after the segment's speech, not yet split at
    early_final: Pass | None = None  # a final pass started in a silence (see VoiceStreams.feed)
    task: asyncio.Task[None] | None = None  # the partial loop
    settler: Settler = field(default_factory=Settler)
    live_query: str = ""  # the settled words to search while speaking
    searched: str = ""  # the settled words last searched
    search_task: asyncio.Task[None] | None = None
    final_shown: int = 0  # samples the early final whose words were shown covers (0: none shown)
    words_task: asyncio.Task[None] | None = None  # showing the early final's words

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

    def talking(self, within_ms: float) -> bool:
        """Live, and heard speech in the last `within_ms`: mid-utterance, its partials want the cores."""
        now = self.activity
        return now is not None and now.heard_speech and not self.finishing and now.silence_ms < within_ms

    def quiet(self) -> None:
        """No more partials or live searches: the final's transcript and hits replace them."""
        if self.pending is not None and not self.pending.future.done():
            self.pending.future.cancel()
        for task in (self.task, self.search_task, self.words_task):
            if task is not None:
                task.cancel()

    def partial_audio(self) -> tuple[np.ndarray, int]:
        """What the next partial transcribes, and up to where in the recording it reaches: up to a
        pause not yet split at, so that the segment can close there even if speech went on since."""
        end = self.pause.end if self.pause is not None else self.samples
        return self.buffer[self.segment : end], end

    def heard(self, text: str, covered: int) -> str:
        """A partial over the current segment came back: the words of the whole recording so far."""
        self.covered = covered
        self.hypothesis = " ".join(part for part in (self.committed, text) if part)
        return self.hypothesis

    def note_pause(self, final_after_ms: float) -> None:
        """After each frame: a silence of SPLIT_PAUSE_MS (or `final_after_ms`, if longer) after speech
        is where the segment may split."""
        now, enough = self.activity, max(SPLIT_PAUSE_MS, final_after_ms)
        if now is None or now.silence_ms < enough or self.speech_end <= self.segment:
            return
        self.pause = Pause(self.speech_end, self.samples, now.speech_ms)
        self.close_segment()

    def close_segment(self) -> None:
        """Once a partial reaches into the pause, its words stand for everything said before it, and
        later partials transcribe only what follows. A partial's cost grows with the words it
        decodes (whisper-base int8 on one core: 0.10 s after 1 s of speech, 0.33 s after 6.4 s);
        split at pauses, a long recording's partials stay as cheap as a short one's. The final
        still hears the whole recording."""
        pause = self.pause
        if pause is None or not pause.start <= self.covered <= pause.end:
            return
        self.segment, self.committed, self.segment_from_ms = self.covered, self.hypothesis, pause.speech_ms
        self.pause = None

    def wants_partial(self, first_ms: float) -> bool:
        """New speech to transcribe, and enough of it in this segment: on half a syllable Whisper
        invents words ("Thank you.") that would flash on the page."""
        heard = self.activity.speech_ms - self.segment_from_ms if self.activity is not None else 0.0
        return heard >= first_ms and self.new_speech

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
