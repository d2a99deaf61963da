"""Voice activity detection with Silero VAD (v6) on onnxruntime: is anyone speaking, and have they stopped?

The model is the ONNX file that ships inside the faster-whisper wheel, run here directly: importing
faster_whisper would load CTranslate2, and Silero's own package pulls torchaudio. It hears 16 kHz audio
in 512-sample (32 ms) chunks, each preceded by the last 64 samples of the chunk before, and carries an
LSTM state (h, c) from chunk to chunk. The ONNX graph treats its first axis as time, so all the chunks
of one `feed` go through in a single `run`.

One `SileroVad` (one session) serves every stream; each `VadStream` owns its state. ORT's `run` is
thread-safe and releases the GIL, so streams may be fed from worker threads, one thread per stream at a
time (`feed` takes a lock, but frame order is the caller's to keep).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from capsearch.errors import ModelUnavailableError

if TYPE_CHECKING:
    from capsearch.config import VoiceSettings

SAMPLE_RATE = 16_000
CHUNK = 512
CONTEXT = 64
CHUNK_MS = CHUNK * 1000 / SAMPLE_RATE  # 32 ms
MODEL_FILE = "silero_vad_v6.onnx"
_STATE_SHAPE = (1, 1, 128)


def default_model_path() -> Path | None:
    """Where faster-whisper's wheel keeps the model, or None when it is not installed.

    find_spec on the top-level name locates the package without running its __init__ (which would
    import CTranslate2); `importlib.resources` on faster_whisper.assets would run it."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "assets" / MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def _unavailable(why: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"The Silero voice activity model cannot be loaded: {why}. Install faster-whisper and "
        "onnxruntime (pip install 'faster-whisper>=1.2,<2' 'onnxruntime>=1.20,<2'), or set "
        "voice.vad to false to fall back to the loudness rule."
    )


@dataclass(frozen=True, slots=True)
class VadParams:
    """How a stream turns per-chunk speech probabilities into decisions."""

    # Silero's defaults: a chunk starts speech at `threshold`; once speaking, it stays speech down to
    # `neg_threshold` (None: threshold - 0.15), so a soft syllable doesn't split a word.
    threshold: float = 0.5
    neg_threshold: float | None = None
    # Total speech, as the loudness rule counts it: a cough or a click is shorter than this.
    min_speech_ms: float = 150.0
    # Silence after speech that ends the recording; 0 never ends it.
    end_silence_ms: float = 800.0

    @classmethod
    def from_settings(cls, voice: VoiceSettings) -> VadParams:
        return cls(
            threshold=voice.vad_threshold,
            min_speech_ms=voice.min_speech_ms,
            end_silence_ms=voice.end_silence_ms,
        )

    @property
    def low(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, slots=True)
class VadUpdate:
    """A stream's state after one `feed`. Positions count samples from the stream's start; only whole
    chunks count as heard (`samples_heard`), the few samples after the last one wait for the next feed."""

    samples_heard: int
    speech_ms: float  # all speech so far, in 32 ms chunks
    heard_speech: bool  # speech_ms reached min_speech_ms
    in_speech: bool  # the last chunk was speech
    speech_started_at: int | None  # first sample of the first speech chunk
    last_speech_end: int | None  # sample after the last speech chunk
    silence_ms: float  # since last_speech_end, or since the start when nobody has spoken
    # Speech was heard, then end_silence_ms of silence: stop recording. Stays True once set, so that
    # speech resuming later in the same frame cannot hide it, whatever the frame sizes.
    ended: bool
    ended_at: int | None  # the chunk boundary where the silence reached end_silence_ms
    probs: tuple[float, ...] = field(default=())  # this feed's chunks, for tests and debugging


class SileroVad:
    """The shared ONNX session. `load` before `new_stream`; `close` when the app stops."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._model_path = model_path
        self._session: Any = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Blocking (0.1-0.4 s, mostly importing onnxruntime): run it off the event loop."""
        if self._session is not None:
            return
        path = self._model_path or default_model_path()
        if path is None:
            raise _unavailable(f"faster-whisper (whose wheel ships {MODEL_FILE}) is not installed")
        if not path.is_file():
            raise _unavailable(f"{path} does not exist")
        try:
            import onnxruntime
        except ImportError as exc:
            raise _unavailable("onnxruntime is not installed") from exc
        opts = onnxruntime.SessionOptions()
        # The model is tiny (1.2 MB, ~0.15 ms a chunk): more threads would only contend with the
        # captioner and the transcriber for the cores.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped exceptions for corrupt files
            raise _unavailable(f"{path} is not a usable ONNX model ({exc})") from exc
        # The first run allocates; do it now rather than in the first person's first frame.
        state = np.zeros(_STATE_SHAPE, np.float32)
        session.run(None, {"input": np.zeros((1, CONTEXT + CHUNK), np.float32), "h": state, "c": state})
        self._session = session

    def close(self) -> None:
        self._session = None

    def new_stream(self, params: VadParams | None = None) -> VadStream:
        self._require()
        return VadStream(self, params or VadParams())

    def speech_in(self, samples: np.ndarray, params: VadParams | None = None) -> bool:
        """Whether a whole clip (16 kHz mono float32) holds at least min_speech_ms of speech."""
        stream = self.new_stream(params)
        # Pad the tail to a whole chunk so the clip's last 32 ms are heard too.
        tail = -samples.size % CHUNK
        padded = np.pad(np.asarray(samples, np.float32), (0, tail)) if tail else samples
        return stream.feed(padded).heard_speech

    def _require(self) -> Any:
        session = self._session
        if session is None:
            raise RuntimeError("SileroVad is not loaded (call load() first) or was closed")
        return session

    def run(
        self, batch: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Speech probabilities of `batch` (n x 576: 64 samples of context + a 512-sample chunk, in
        time order) and the LSTM state after it. VadStream builds the batch; this is its one use."""
        probs, h, c = self._require().run(None, {"input": batch, "h": h, "c": c})
        return np.asarray(probs, np.float32).reshape(-1), h, c


class VadStream:
    """One recording's detector. Feed it every frame, in order; it keeps the samples that don't fill a
    chunk for the next feed."""

    def __init__(self, vad: SileroVad, params: VadParams) -> None:
        self._vad = vad
        self.params = params
        self._lock = threading.Lock()
        self._h = np.zeros(_STATE_SHAPE, np.float32)
        self._c = np.zeros(_STATE_SHAPE, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._low = params.low
        self._end_silence = params.end_silence_ms * SAMPLE_RATE / 1000
        self._heard = 0  # samples in whole chunks
        self._speech_chunks = 0
        self._triggered = False  # the last chunk was speech
        self._started_at: int | None = None
        self._last_end: int | None = None
        self._ended_at: int | None = None

    def feed(self, samples: np.ndarray) -> VadUpdate:
        """Hear `samples` (1-D, 16 kHz float32, any length, finite: the socket checks that) and say
        where the stream stands. Blocking: ~0.15 ms per 32 ms of audio; call it from a worker thread."""
        if samples.ndim != 1:
            raise ValueError(f"VadStream.feed wants 1-D samples, got shape {samples.shape}")
        with self._lock:
            return self._feed(np.asarray(samples, np.float32))

    def _feed(self, samples: np.ndarray) -> VadUpdate:
        data = np.concatenate((self._pending, samples)) if self._pending.size else samples
        n = data.size // CHUNK
        probs: tuple[float, ...] = ()
        if n:
            chunks = data[: n * CHUNK].reshape(n, CHUNK)
            batch = np.empty((n, CONTEXT + CHUNK), np.float32)
            batch[0, :CONTEXT] = self._context
            batch[1:, :CONTEXT] = chunks[:-1, -CONTEXT:]
            batch[:, CONTEXT:] = chunks
            out, self._h, self._c = self._vad.run(batch, self._h, self._c)
            self._context = chunks[-1, -CONTEXT:].copy()
            probs = tuple(out.tolist())
            for prob in probs:
                self._hear(prob)
        # Copy: `data` may be the caller's buffer, which it is free to reuse.
        self._pending = data[n * CHUNK :].copy()
        return self._update(probs)

    def _hear(self, prob: float) -> None:
        start = self._heard
        self._heard += CHUNK
        # Silero's hysteresis: speech starts at `threshold`, ends below `low`; in between it stays as it was.
        if prob >= self.params.threshold:
            self._triggered = True
        elif prob < self._low:
            self._triggered = False
        if self._triggered:
            self._speech_chunks += 1
            if self._started_at is None:
                self._started_at = start
            self._last_end = self._heard
        elif (
            self._ended_at is None
            and self._end_silence > 0
            and self._last_end is not None
            and self._heard_enough()
            and self._heard - self._last_end >= self._end_silence
        ):
            self._ended_at = self._heard

    def _heard_enough(self) -> bool:
        # `> 0` too: with min_speech_ms = 0, silence must still not count as speech.
        return self._speech_chunks > 0 and self._speech_chunks * CHUNK_MS >= self.params.min_speech_ms

    def _update(self, probs: tuple[float, ...]) -> VadUpdate:
        return VadUpdate(
            samples_heard=self._heard,
            speech_ms=self._speech_chunks * CHUNK_MS,
            heard_speech=self._heard_enough(),
            in_speech=self._triggered,
            speech_started_at=self._started_at,
            last_speech_end=self._last_end,
            silence_ms=(self._heard - (self._last_end or 0)) * 1000 / SAMPLE_RATE,
            ended=self._ended_at is not None,
            ended_at=self._ended_at,
            probs=probs,
        )


@dataclass(frozen=True, slots=True)
class SileroDetector:
    """The live streams' detector (capsearch.voice.activity.ActivityDetector): the shared session, with
    the app's settings for every recording."""

    vad: SileroVad
    params: VadParams

    def new_stream(self) -> VadStream:
        return self.vad.new_stream(self.params)
