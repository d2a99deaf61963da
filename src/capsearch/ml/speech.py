"""What a transcriber is asked: one clip of audio, and which kind of pass it is.

A live recording is transcribed again and again while the person talks (partials) and once more at
the end (the final). Whisper was trained on 30 s windows: a final always pads to the full window,
which keeps its accuracy; a partial may run on a shortened window (the audio so far plus a margin),
which costs a fraction of a full pass on a CPU. A backend that cannot shorten the window (transformers'
feature extractor refuses to) treats both kinds alike.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

SAMPLE_RATE = 16_000
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, eq=False)
class Clip:
    samples: np.ndarray  # 16 kHz mono float32, at most 30 s
    final: bool = True  # False: a live partial, which may run on a shortened window
    # Set once nobody wants the answer (a final made stale by more speech): a backend that runs in
    # steps may skip the rest. A pass already under way cannot be taken back from the batcher.
    dropped: threading.Event | None = None

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @property
    def abandoned(self) -> bool:
        return self.dropped is not None and self.dropped.is_set()


# What a transcriber's predict() takes: Clips, or bare arrays (older callers), which are finals.
ClipLike: TypeAlias = Clip | np.ndarray


def as_clips(batch: Sequence[ClipLike]) -> list[Clip]:
    """Every request as a Clip of flat float32 samples."""
    clips = []
    for item in batch:
        clip = item if isinstance(item, Clip) else Clip(item)
        clips.append(Clip(np.asarray(clip.samples, dtype=np.float32).reshape(-1), clip.final, clip.dropped))
    return clips


def tidy_transcript(text: str) -> str:
    """Collapse whitespace; Whisper starts every transcript with a space."""
    return _SPACES.sub(" ", text).strip()
