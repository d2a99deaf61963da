"""Time a Whisper checkpoint on both transcriber backends: full-window passes (transformers vs
CTranslate2) and CTranslate2 partials by audio length and margin. A measurement, not a test.

    python -m capsearch.bench.transcriber_backends WHISPER_DIR [--wav SPEECH.wav] [--repeat 3]

WHISPER_DIR is a transformers checkpoint directory (../shared/tools/whisper_base_offline.sh builds
whisper-base offline). Without --wav the audio is espeak-ng saying a photo-search phrase (if it is
installed), else a tone. Each time is the fastest of --repeat runs after one warm-up: a shared CPU
only ever makes a run slower.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.ml.speech import SAMPLE_RATE, Clip

# Long enough (~5 s) that the partials below hear a prefix of it, as a live recording's do.
PHRASE = "a dog running on the beach near the water, and two children playing with a red ball"
PARTIAL_SECONDS = (1.0, 2.0, 3.0, 5.0)
MARGINS = (1.0, 1.5, 2.0)


def _speech(wav: Path | None) -> np.ndarray:
    if wav is None and shutil.which("espeak-ng") and shutil.which("sox"):
        tmp = Path(tempfile.mkdtemp())
        subprocess.run(["espeak-ng", "-w", str(tmp / "raw.wav"), PHRASE], check=True, capture_output=True)
        sox = ["sox", str(tmp / "raw.wav"), "-r", "16000", "-c", "1", "-b", "16", str(tmp / "s.wav")]
        subprocess.run(sox, check=True)
        wav = tmp / "s.wav"
    if wav is None:
        t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
        return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with wave.open(str(wav)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    # Whisper tends to drop a first word that starts at the very first sample.
    return np.concatenate([np.zeros(SAMPLE_RATE // 4, np.float32), audio])


def _fastest(run: Callable[[], list[str]], repeat: int) -> tuple[float, str]:
    texts = run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), " | ".join(texts)


def _clip(audio: np.ndarray, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    return audio[:n] if audio.size >= n else np.pad(audio, (0, n - audio.size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--wav", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers backend")
    args = parser.parse_args(argv)

    from capsearch.ml.whisper_ct2 import CT2WhisperTranscriber

    audio = _speech(args.wav)
    print(f"audio: {audio.size / SAMPLE_RATE:.2f} s; repeat {args.repeat}")
    cache_dir = args.model_dir.parent
    fast = CT2WhisperTranscriber(str(args.model_dir), cache_dir=cache_dir, num_threads=args.threads)
    started = time.perf_counter()
    fast.load()
    print(f"ctranslate2 load (conversion if not cached) {time.perf_counter() - started:.1f} s")
    whole = [Clip(audio)]
    int8 = CT2WhisperTranscriber(
        str(args.model_dir), cache_dir=cache_dir, num_threads=args.threads, int8=True
    )
    int8.load()
    engines: dict[str, Any] = {"ctranslate2 float32": fast, "ctranslate2 int8 (unverified)": int8}
    if not args.no_transformers:
        from capsearch.ml.transcriber import WhisperTranscriber

        ref = WhisperTranscriber(str(args.model_dir), cache_dir=cache_dir)
        ref.load()
        engines = {"transformers float32": ref, **engines}
    # Round-robin, so that a neighbour's burst of work on a shared CPU slows every engine alike.
    texts = {name: " | ".join(engine.predict(whole)) for name, engine in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeat):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.predict(whole)
            times[name].append(time.perf_counter() - started)
    print("\nfull 30 s window (final), batch 1: fastest and median of the runs")
    for name, runs in times.items():
        median = sorted(runs)[len(runs) // 2]
        print(f"  {name:30s} {min(runs):6.3f} s {median:6.3f} s  {texts[name]!r}")
    for engine in engines.values():
        if engine is not fast:
            engine.close()

    print("\nctranslate2 partials, batch 1: seconds (frames) and text, by audio heard and margin")
    for heard in PARTIAL_SECONDS:
        clip = [Clip(_clip(audio, heard), final=False)]
        print(f"  {heard:3.0f} s, full window     {fast.predict([Clip(clip[0].samples)])[0]!r}")
        for margin in MARGINS:
            fast.partial_margin_s = margin
            seconds, text = _fastest(lambda clip=clip: fast.predict(clip), args.repeat)  # type: ignore[misc]
            print(f"  {heard:3.0f} s + {margin:.1f} s  {seconds:6.3f} s ({fast.last_frames[0]:4d})  {text!r}")

    fast.partial_margin_s = 1.5
    mixed = [Clip(_clip(audio, s), final=False) for s in PARTIAL_SECONDS]
    together, _ = _fastest(lambda: fast.predict(mixed), args.repeat)
    alone = sum(_fastest(lambda c=c: fast.predict([c]), args.repeat)[0] for c in mixed)  # type: ignore[misc]
    print(f"\npartials of {PARTIAL_SECONDS} s, margin 1.5: one padded batch {together:.3f} s, "
          f"one pass each {alone:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
