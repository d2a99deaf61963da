"""How well the transcriber hears photo searches: word error rate over spoken phrases.

The phrases are the kind of thing people say to find a photo, written for this benchmark (none is
a caption of the app's examples). Festival's HTS voice speaks them (Debian: `festival
festvox-us-slt-hts`); whisper-base understands it far better than espeak-ng (0.08 against 0.38 word
error rate measured here), so errors left are the model's, not the robot's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from capsearch.voice.audio import SAMPLE_RATE, resample

PHRASES = (
    "a dog running on the beach",
    "my daughter blowing out birthday candles",
    "sunset over the mountains",
    "a plate of spaghetti with tomato sauce",
    "the red car in front of our house",
    "two cats sleeping on the sofa",
    "snow on the pine trees",
    "a man riding a bicycle in the city",
    "fireworks over the river",
    "a bowl of fresh strawberries",
    "kids playing football in the park",
    "the old bridge in the fog",
    "a sailboat on a calm lake",
    "grandma baking bread in the kitchen",
    "a horse standing in a green field",
    "the beach at low tide",
    "a cup of coffee on a wooden table",
    "our tent at the campsite",
    "a black and white photo of a church",
    "ducks swimming in a pond",
    "the view from the top of the tower",
    "a girl with a yellow umbrella",
    "autumn leaves on the path",
    "a birthday cake with chocolate icing",
    "the train station at night",
    "a baby laughing in the bath",
    "a street market full of vegetables",
    "waves crashing against the rocks",
    "a squirrel eating a nut",
    "people dancing at the wedding",
    "a lighthouse on a cliff",
    "the dog asleep by the fireplace",
)

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower case, punctuation gone: Whisper's "Sunset over the mountains." is the phrase said."""
    return _WORD.findall(text.lower().replace("-", " "))


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words in the reference): Levenshtein over words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    errors = total = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        e, n = word_errors(ref, hyp)
        errors, total = errors + e, total + n
    return errors / max(total, 1)


def festival_missing() -> str | None:
    if shutil.which("text2wave") is None:
        return "festival is not installed (apt-get install festival festvox-us-slt-hts)"
    return None


def festival_speech(phrase: str) -> np.ndarray:
    """float32 16 kHz mono: the phrase in Festival's HTS voice (cmu_us_slt_arctic_hts)."""
    with tempfile.TemporaryDirectory(prefix="capsearch-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        voice = "(voice_cmu_us_slt_arctic_hts)"
        command = ["text2wave", "-eval", voice, "-o", str(out)]
        subprocess.run(command, input=phrase.encode(), check=True, capture_output=True)
        with wave.open(str(out)) as w:
            rate, channels = w.getframerate(), w.getnchannels()
            raw = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    mono = raw.reshape(-1, channels).mean(axis=1) if channels > 1 else raw
    return resample(mono, rate) if rate != SAMPLE_RATE else mono


def trim(samples: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """The speech without the synthesiser's own leading/trailing silence: the first word then starts
    at the very first sample, the case a lead-in of silence is meant for."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples


def score(
    transcribe: Callable[[list[np.ndarray]], list[str]], clips: Sequence[np.ndarray], batch: int = 8
) -> tuple[float, list[str]]:
    """WER of `transcribe` over the phrase clips (in batches), and its transcripts."""
    texts: list[str] = []
    for i in range(0, len(clips), batch):
        texts += transcribe(list(clips[i : i + batch]))
    return wer(PHRASES[: len(clips)], texts), texts
