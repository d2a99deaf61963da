"""Is someone speaking? What the live streams need to know after every frame, and the loudness rule.

Two detectors answer it: Silero VAD (capsearch.voice.vad, the default) and, when it is switched off
(`CAPSEARCH_VOICE__VAD=false`), the loudness rule below — 20 ms windows at or above `speech_rms`. The
loudness rule cannot tell a voice from a door slam or music; Silero can, which is what lets a recording
end by itself when the speaker stops without ending it at every loud noise.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from capsearch.config import VoiceSettings
from capsearch.voice.audio import SAMPLE_RATE

_WINDOW = SAMPLE_RATE // 50  # 20 ms


class Activity(Protocol):
    """What a detector knows after a feed, about the whole recording so far."""

    @property
    def heard_speech(self) -> bool: ...  # at least the minimum of speech, in total

    @property
    def speech_ms(self) -> float: ...  # speech heard in total

    @property
    def silence_ms(self) -> float: ...  # silence since the last speech (0 while speaking)

    @property
    def last_speech_end(self) -> int | None: ...  # samples: where the latest speech ended

    @property
    def ended(self) -> bool: ...  # speech, then the end-of-speech silence: time to stop


class ActivityStream(Protocol):
    """One recording's detector state; fed in order, one thread at a time."""

    def feed(self, samples: np.ndarray) -> Activity: ...


class ActivityDetector(Protocol):
    def new_stream(self) -> ActivityStream: ...


@dataclass(frozen=True)
class LoudnessActivity:
    heard_speech: bool
    speech_ms: float
    silence_ms: float
    last_speech_end: int
    ended: bool


class LoudnessStream:
    """The loudness rule, windowed like Silero's chunks so both detectors end speech the same way."""

    def __init__(self, threshold: float, min_speech_ms: float, end_silence_ms: float) -> None:
        self._threshold = threshold
        self._min_speech = min_speech_ms * SAMPLE_RATE / 1000
        self._end_silence = end_silence_ms * SAMPLE_RATE / 1000
        self._tail = np.zeros(0, np.float32)  # samples short of a whole window
        self._seen = 0  # samples judged so far
        self._speech = 0  # loud samples in total
        self._last_end = 0

    def feed(self, samples: np.ndarray) -> LoudnessActivity:
        audio = np.concatenate([self._tail, np.asarray(samples, np.float32).reshape(-1)])
        n = audio.size // _WINDOW * _WINDOW
        windows = audio[:n].reshape(-1, _WINDOW)
        loud = np.sqrt(np.mean(windows * windows, axis=1)) >= self._threshold
        self._tail = audio[n:]
        if loud.any():
            self._speech += int(np.count_nonzero(loud)) * _WINDOW
            self._last_end = self._seen + (int(np.flatnonzero(loud)[-1]) + 1) * _WINDOW
        self._seen += n
        silence = self._seen - self._last_end if self._speech else 0
        heard = self._speech >= self._min_speech and self._speech > 0
        return LoudnessActivity(
            heard_speech=heard,
            speech_ms=self._speech * 1000 / SAMPLE_RATE,
            silence_ms=silence * 1000 / SAMPLE_RATE,
            last_speech_end=self._last_end,
            ended=heard and self._end_silence > 0 and silence >= self._end_silence,
        )


class LoudnessDetector:
    def __init__(self, settings: VoiceSettings) -> None:
        self.settings = settings

    def new_stream(self) -> LoudnessStream:
        s = self.settings
        return LoudnessStream(s.speech_rms, s.min_speech_ms, s.end_silence_ms)


async def start_detector(stack: AsyncExitStack, settings: VoiceSettings) -> ActivityDetector:
    """Silero VAD (a ~1 MB ONNX model, loaded off the loop), or the loudness rule when it is off."""
    if not settings.vad:
        return LoudnessDetector(settings)
    from capsearch.voice.vad import SileroDetector, SileroVad, VadParams

    vad = SileroVad()
    await asyncio.to_thread(vad.load)
    stack.callback(vad.close)
    return SileroDetector(vad, VadParams.from_settings(settings))
