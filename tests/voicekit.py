"""Audio for the voice tests: real speech from espeak-ng, other formats made with PyAV, a gated fake."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from capsearch.ml.speech import Clip

SAMPLE_RATE = 16_000
PHRASE = "a dog running on the beach"
FRAME_SAMPLES = SAMPLE_RATE // 5  # the page sends about every 200 ms


def make_speech_wav(directory: Path, phrase: str = PHRASE) -> Path:
    """espeak-ng says `phrase`; sox makes it 16 kHz mono 16-bit, as the issue's recipe does."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install espeak-ng sox)")
    raw, out = directory / "raw.wav", directory / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), phrase], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out


def read_wav(data: bytes) -> np.ndarray:
    """16-bit mono WAV → int16 samples."""
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getsampwidth(), w.getnchannels()) == (2, 1)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy()


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    """int16 samples (interleaved when `channels` > 1) as a WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def encode(samples: np.ndarray, fmt: str, codec: str, rate: int = 48_000) -> bytes:
    """int16 16 kHz mono samples encoded with PyAV (MP3, OGG/Opus, WebM/Opus, FLAC)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for resampled in (*resampler.resample(frame), *resampler.resample(None)):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def tone(seconds: float, amplitude: float = 0.3, hz: float = 220.0) -> np.ndarray:
    """int16 samples loud enough to count as speech for the energy check (the fake model needs no words)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)


def silence(seconds: float, noise: float = 0.001, seed: int = 0) -> np.ndarray:
    """int16 samples of a quiet room: faint noise, far below the speech threshold."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * noise * 32767).astype(np.int16)


def frames(samples: np.ndarray, size: int = FRAME_SAMPLES) -> list[bytes]:
    """int16 samples cut into the page's 200 ms frames, as little-endian bytes."""
    return [samples[i : i + size].astype("<i2").tobytes() for i in range(0, len(samples), size)]


class GatedTranscriber:
    """A `Model[Clip, str]` that holds every batch until the test lets exactly one through.

    `entered` counts batches that reached the model; `release(n)` lets n batches finish. The answer
    names the clip's length (and a final's kind), so a test can tell which audio each pass covered.
    """

    name = "transcriber"
    model_id = "gated-fake-whisper"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # clip lengths (samples) of each batch, in order
        self.finals: list[list[bool]] = []  # which of them were final passes
        self.clips: list[list[Clip]] = []  # every batch as it entered, before it was let through
        self._release = threading.Semaphore(0)
        self._entered = threading.Semaphore(0)
        self.closed = False

    def load(self) -> None:
        pass

    def predict(self, batch: list[Clip]) -> list[str]:
        self.clips.append(list(batch))
        self._entered.release()
        if not self._release.acquire(timeout=30):
            raise TimeoutError("the test never released this batch")
        self.batches.append([clip.samples.size for clip in batch])
        self.finals.append([clip.final for clip in batch])
        return [f"heard {clip.samples.size} samples" for clip in batch]

    def wait_entered(self, timeout: float = 30) -> None:
        """Block until one more batch is inside predict (call from a thread, not the event loop)."""
        if not self._entered.acquire(timeout=timeout):
            raise TimeoutError("no batch reached the model")

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._release.release()

    def close(self) -> None:
        self.closed = True
