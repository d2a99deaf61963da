"""One live voice stream and what it talks to: its growing audio buffer, its owner (the socket), the
transcriber it queues passes on, and the transcript a pass gives back. The engine is
capsearch.voice.streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from capsearch.batching import Priority
from capsearch.errors import CapsearchError
from capsearch.voice.audio import SAMPLE_RATE

# A stream's buffer starts at 2 s of audio and doubles: a 30 s recording is copied four times in all.
_FIRST_CAPACITY = 2 * SAMPLE_RATE


class Transcriber(Protocol):
    """What the engine needs from the transcriber's batcher."""

    def submit(
        self, item: np.ndarray, priority: Priority = ..., on_start: Callable[[], None] | None = ...
    ) -> asyncio.Future[str]: ...


class StreamOwner(Protocol):
    """The socket a stream belongs to."""

    async def voice_partial(self, stream_id: str, text: str, seconds: float) -> None: ...

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
    search: bool  # run a search with the final transcript
    touched: float  # monotonic time of the last frame with samples (or the start)
    client: str | None = None  # whose per-client slot it holds (None: not counted)
    # The audio so far is buffer[:samples]; the rest is room to grow into.
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    samples: int = 0
    short_frame: bool = False  # a frame below the minimum arrived: only voice.stop may follow it
    loud: int = 0  # samples in windows loud enough to be speech
    speech: bool = False
    finishing: bool = False  # stopped: no more audio, the final pass is on its way
    pending: Pass | None = None  # the partial pass queued or running
    done: tuple[int, str] | None = None  # (samples covered, text) of the latest finished pass
    task: asyncio.Task[None] | None = None  # the partial loop

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
