"""What the simulated people send: distinct JPEGs and one short spoken query (made once per run)."""

from __future__ import annotations

import io
import itertools
import math
import os
import shutil
import struct
import subprocess
import tempfile
import wave
from pathlib import Path

from PIL import Image

SAMPLE_RATE = 16_000
_counter = itertools.count()


def distinct_jpeg(width: int = 192, height: int = 144) -> bytes:
    """A JPEG no other call returns: random pixels (so never a duplicate) under a smooth gradient
    (so it compresses like a photo, a few tens of KB, not like noise)."""
    n = next(_counter)
    noise = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    base = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    tint = Image.new("RGB", (width, height), ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    image = Image.blend(Image.blend(base, tint, 0.5), noise, 0.25)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def spoken_wav(phrase: str) -> tuple[bytes, str]:
    """16 kHz mono WAV of `phrase` and how it was made: espeak-ng (+ sox to resample) when present,
    else a synthetic voiced signal (a 120 Hz buzz through vowel-like formants, syllable-paced)."""
    if shutil.which("espeak-ng") and shutil.which("sox"):
        with tempfile.TemporaryDirectory() as tmp:
            raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
            subprocess.run(["espeak-ng", "-w", str(raw), phrase], check=True, capture_output=True)
            subprocess.run(
                ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out)],
                check=True,
                capture_output=True,
            )
            return out.read_bytes(), "espeak-ng"
    return _synthetic_voice(seconds=2.0), "synthetic"


def _synthetic_voice(seconds: float) -> bytes:
    samples = []
    for i in range(int(seconds * SAMPLE_RATE)):
        t = i / SAMPLE_RATE
        syllables = 0.5 * (1 - math.cos(2 * math.pi * 4 * t))  # about four syllables a second
        voice = sum(math.sin(2 * math.pi * 120 * h * t) / h for h in range(1, 12))
        formants = 0.6 * math.sin(2 * math.pi * 700 * t) + 0.4 * math.sin(2 * math.pi * 1200 * t)
        samples.append(int(6000 * syllables * voice * (0.6 + 0.4 * formants)))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *(max(-32768, min(32767, s)) for s in samples)))
    return out.getvalue()
