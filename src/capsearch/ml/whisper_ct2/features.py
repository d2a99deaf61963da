"""Log-mel features in numpy (faster-whisper's extractor, no torch), and how long a window is.

A final pads its audio to the full window (30 s = 3000 frames) before the spectrogram, exactly as
transformers' WhisperFeatureExtractor does, so both backends feed the encoder the same numbers (up to
float rounding) and decode the same tokens. A partial pads only to the audio heard so far plus a
margin of silence: the encoder's cost grows with the frames, and Whisper, trained on 30 s windows,
drifts when the window is cut right at the last word, which the margin guards against.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.ml.speech import SAMPLE_RATE

# CTranslate2 4.8 accepts any frame count from 1 to the full window (checked; more is refused).
# Whisper's conv2 has stride 2, so frames become encoder positions in pairs: an even count keeps the
# last position a whole pair rather than half a pair and the convolution's padding.
FRAME_MULTIPLE = 2
# What transformers and faster-whisper both assume; a checkpoint that says otherwise is refused.
_EXPECTED = {"sampling_rate": SAMPLE_RATE, "hop_length": 160, "n_fft": 400, "chunk_length": 30}
_FEATURE_FILES = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class FeatureSpec:
    n_mels: int
    hop_length: int = 160
    n_fft: int = 400
    chunk_length: int = 30

    @property
    def full_frames(self) -> int:
        return self.chunk_length * SAMPLE_RATE // self.hop_length

    def to_json(self) -> dict[str, int]:
        return {"n_mels": self.n_mels, "hop_length": self.hop_length, "n_fft": self.n_fft,
                "chunk_length": self.chunk_length}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(**{k: int(v) for k, v in data.items()})

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> FeatureSpec:
        """Read the extractor's settings from the checkpoint; refuse what this module cannot match."""
        config = json.loads((checkpoint / "config.json").read_text())
        extractor: dict[str, Any] = {}
        for name in _FEATURE_FILES:
            path = checkpoint / name
            if path.is_file():
                data = json.loads(path.read_text())
                # transformers 5 may nest the extractor inside processor_config.json.
                extractor = data.get("feature_extractor", data)
                break
        n_mels = int(config["num_mel_bins"])
        found = {key: int(extractor.get(key, value)) for key, value in _EXPECTED.items()}
        if found != _EXPECTED or int(extractor.get("feature_size", n_mels)) != n_mels:
            raise ValueError(
                f"unsupported Whisper feature settings in {checkpoint}: {extractor} (model n_mels {n_mels})"
            )
        return cls(n_mels=n_mels, hop_length=found["hop_length"], n_fft=found["n_fft"],
                   chunk_length=found["chunk_length"])  # fmt: skip


def partial_frames(samples: int, margin_s: float, spec: FeatureSpec) -> int:
    """Frames of a partial's window: its audio plus `margin_s` of silence, in whole pairs, capped at
    the full window."""
    seconds = samples / SAMPLE_RATE + margin_s
    frames = math.ceil(seconds * SAMPLE_RATE / spec.hop_length / FRAME_MULTIPLE) * FRAME_MULTIPLE
    return max(FRAME_MULTIPLE, min(spec.full_frames, frames))


class LogMel:
    """[batch, n_mels, frames] float32 features, each clip zero-padded (or cut) to `frames`."""

    def __init__(self, spec: FeatureSpec) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self.spec = spec
        self._extract: Any = FeatureExtractor(
            feature_size=spec.n_mels,
            sampling_rate=SAMPLE_RATE,
            hop_length=spec.hop_length,
            chunk_length=spec.chunk_length,
            n_fft=spec.n_fft,
        )

    def __call__(self, clips: list[np.ndarray], frames: int) -> np.ndarray:
        samples = frames * self.spec.hop_length
        out = np.empty((len(clips), self.spec.n_mels, frames), dtype=np.float32)
        for row, clip in enumerate(clips):
            audio = np.zeros(samples, dtype=np.float32)
            audio[: min(clip.size, samples)] = clip[:samples]
            # padding=0: the audio is already padded; the centred STFT gives frames + 1 columns and
            # the extractor drops the last, as transformers' does.
            out[row] = self._extract(audio, padding=0)
        return out
