"""Audio in: files (WAV, MP3, OGG, WebM, FLAC) and live PCM frames, to 16 kHz mono float32.

Whisper hears 16 kHz mono, so everything is brought to that once, here. WAV with integer samples
is read with the standard library (no native code at all); every other format goes through PyAV,
which bundles its own FFmpeg libraries, so no system ffmpeg is needed. All of it is CPU work: callers
run it in a worker thread, never on the event loop.

Files are sniffed by their magic bytes and PyAV is told the one demuxer to use. Letting FFmpeg probe
arbitrary input would expose every demuxer it has (playlists that open other URLs, image sequences,
...) to whatever someone uploads.
"""

from __future__ import annotations

import io
import wave
from typing import Any, ClassVar

import numpy as np

from capsearch.errors import CapsearchError

SAMPLE_RATE = 16_000
# Sample rates a file may declare. Real recorders use 8-384 kHz; a header outside this is damaged or
# hostile (0 Hz divides by zero, 4 GHz overflows the resampler), never audio worth hearing.
MIN_FILE_RATE = 1_000
MAX_FILE_RATE = 384_000
# Speech detection looks at the loudness of short windows: 20 ms is a pitch period or two.
_WINDOW = SAMPLE_RATE // 50


class AudioError(CapsearchError):
    """Audio that cannot be used; nothing was kept. `code` is stable API (docs/protocol.md)."""

    STATUS_BY_CODE: ClassVar[dict[str, int]] = {
        "unsupported_audio": 415,
        "corrupt_audio": 422,
        "empty_audio": 422,
        "audio_too_long": 413,
        "no_speech": 422,
        "bad_pcm": 400,
        "bad_audio": 422,
        "frame_too_small": 400,
    }

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code, status_code=self.STATUS_BY_CODE.get(code, 422))


FORMAT_NAMES = {"wav": "WAV", "mp3": "MP3", "ogg": "OGG", "webm": "WebM", "flac": "FLAC"}
SUPPORTED = "WAV, MP3, OGG (Opus or Vorbis), WebM or FLAC"


def sniff_format(head: bytes) -> str | None:
    """The container of an audio file from its first bytes, as PyAV's demuxer name, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM and Matroska share the demuxer
        return "webm"
    if head[:3] == b"ID3":
        return "mp3"
    # A bare MPEG audio frame: 11 sync bits, then a layer other than "reserved" (00 would be AAC/ADTS).
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "mp3"
    return None


def too_long(max_seconds: float) -> AudioError:
    return AudioError(
        "audio_too_long", f"Recordings may be at most {max_seconds:g} seconds long; this one is longer."
    )


def decode_audio(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode a whole audio file to 16 kHz mono float32 in [-1, 1]; raises AudioError."""
    if not data:
        raise AudioError("empty_audio", "This file is empty.")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise AudioError("unsupported_audio", f"This is not an audio file we can read; send {SUPPORTED}.")
    samples = _read_wav(data, max_seconds) if fmt == "wav" else None
    if samples is None:
        samples = _read_with_av(data, fmt, max_seconds)
    if samples.size == 0:
        raise AudioError("empty_audio", "This recording contains no audio.")
    if samples.size > max_seconds * SAMPLE_RATE:
        raise too_long(max_seconds)
    if not np.isfinite(samples).all():  # what the resampler made of samples the checks below let by
        raise not_finite()
    return samples


def not_finite() -> AudioError:
    # The same refusal as a live frame's (bad_pcm): Whisper hears NaN as "!!!!" rather than as silence.
    return AudioError("bad_audio", "This recording contains NaN or infinite samples.")


def _check_rate(rate: int, what: str) -> None:
    if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
        raise AudioError(
            "unsupported_audio",
            f"This {what} file declares a sample rate of {rate:,} Hz; "
            f"{MIN_FILE_RATE:,} to {MAX_FILE_RATE:,} Hz can be read.",
        )


def _read_wav(data: bytes, max_seconds: float) -> np.ndarray | None:
    """Integer PCM WAV with the standard library; None for WAV variants it cannot read (float, ...)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, frames = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            _check_rate(rate, "WAV")
            if channels < 1 or width not in (1, 2, 3, 4):
                return None
            # The header's frame count is checked before reading: a lying header cannot make us allocate.
            if frames > max_seconds * rate + rate:
                raise too_long(max_seconds)
            raw = w.readframes(frames)
    except (wave.Error, EOFError):
        return None  # PyAV reads the variants `wave` refuses, and judges real damage
    usable = len(raw) - len(raw) % (width * channels)
    if usable == 0:
        raise AudioError("empty_audio", "This recording contains no audio.")
    pcm: np.ndarray = _int_pcm(raw[:usable], width).reshape(-1, channels).mean(axis=1, dtype=np.float32)
    if rate == SAMPLE_RATE:
        return pcm
    try:
        return resample(pcm, rate)
    except Exception as exc:  # whatever FFmpeg makes of a header the checks above let by
        raise AudioError("corrupt_audio", "This WAV file is damaged and could not be decoded.") from exc


def _int_pcm(raw: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    if width == 3:  # no numpy dtype for 24-bit: widen each sample to 32 bits, sign preserved
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        return ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float32) / 2**23
    dtype = "<i2" if width == 2 else "<i4"
    return np.frombuffer(raw, dtype).astype(np.float32) / float(2 ** (8 * width - 1))


def _av() -> Any:
    import av  # only when a non-WAV file arrives: loading FFmpeg's libraries costs time and memory

    return av


def _resampler(av: Any) -> Any:
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at `rate` → 16 kHz, with FFmpeg's resampler (filtered, unlike interpolation)."""
    av = _av()
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = _resampler(av)
    parts = [f.to_ndarray()[0] for f in (*resampler.resample(frame), *resampler.resample(None))]
    if not parts:
        return np.zeros(0, np.float32)
    out: np.ndarray = np.concatenate(parts).astype(np.float32)
    return out


_FLOAT_FORMATS = frozenset({"flt", "fltp", "dbl", "dblp"})


def _read_with_av(data: bytes, fmt: str, max_seconds: float) -> np.ndarray:
    av = _av()
    limit = int(max_seconds * SAMPLE_RATE)
    parts: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), format=fmt, mode="r") as container:
            if not container.streams.audio:
                raise AudioError("unsupported_audio", "This file has no audio track.")
            stream = container.streams.audio[0]
            _check_rate(int(stream.codec_context.sample_rate or 0), FORMAT_NAMES[fmt])
            resampler = _resampler(av)
            for frame in container.decode(stream):
                # Checked before resampling, which would smear a NaN over its neighbours or clip an
                # infinity to full scale.
                if frame.format.name in _FLOAT_FORMATS and not np.isfinite(frame.to_ndarray()).all():
                    raise not_finite()
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray()[0])
                    total += parts[-1].size
                # Stop at the cap: a few KB of compressed audio can decode to hours of samples.
                if total > limit:
                    raise too_long(max_seconds)
            parts += [out.to_ndarray()[0] for out in resampler.resample(None)]
    except AudioError:
        raise
    except Exception as exc:  # FFmpeg errors, and whatever a hostile header makes the resampler raise
        what = FORMAT_NAMES[fmt]
        raise AudioError(
            "corrupt_audio", f"This {what} file is damaged or incomplete and could not be decoded."
        ) from exc
    if not parts:
        return np.zeros(0, np.float32)
    samples: np.ndarray = np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32, copy=False)
    return samples


# ---- live PCM frames (docs/protocol.md, "Voice") ------------------------------------------------

PCM_S16LE = 0x01
PCM_F32LE = 0x02


def pcm_to_float(payload: bytes, encoding: int) -> np.ndarray:
    """One frame's samples as float32; raises AudioError("bad_pcm") for a frame that cannot be audio."""
    if encoding == PCM_S16LE:
        if len(payload) % 2:
            raise AudioError(
                "bad_pcm", f"This audio frame has {len(payload):,} bytes; 16-bit PCM needs an even number."
            )
        return np.frombuffer(payload, "<i2").astype(np.float32) / 32768.0
    if encoding == PCM_F32LE:
        if len(payload) % 4:
            raise AudioError(
                "bad_pcm",
                f"This audio frame has {len(payload):,} bytes; 32-bit float PCM needs a multiple of 4.",
            )
        samples = np.frombuffer(payload, "<f4")
        if not np.isfinite(samples).all():
            raise AudioError("bad_pcm", "This audio frame contains NaN or infinite samples.")
        clipped: np.ndarray = np.clip(samples, -1.0, 1.0).astype(np.float32)
        return clipped
    raise AudioError(
        "bad_pcm", f"Unknown sample encoding 0x{encoding:02x}; use 0x01 (int16) or 0x02 (float32)."
    )


# ---- is anyone speaking? -------------------------------------------------------------------------


def loud_samples(samples: np.ndarray, threshold: float) -> int:
    """How many samples lie in 20 ms windows whose RMS reaches `threshold` (full scale = 1.0)."""
    if samples.size == 0:
        return 0
    n = samples.size // _WINDOW * _WINDOW
    windows = samples[:n].reshape(-1, _WINDOW)
    loud = int(np.count_nonzero(np.sqrt(np.mean(windows * windows, axis=1)) >= threshold)) * _WINDOW
    tail = samples[n:]
    if tail.size and float(np.sqrt(np.mean(tail * tail))) >= threshold:
        loud += tail.size
    return loud


def no_speech() -> AudioError:
    return AudioError("no_speech", "No speech heard: the recording is silent or too quiet.")
