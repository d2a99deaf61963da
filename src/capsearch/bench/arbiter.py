"""How much a running caption batch slows a voice pass, with and without the compute arbiter.

The captioner is the OpenVINO backend over a BLIP-base-size random checkpoint (the compute of the
real one; converted once, ~40-60 s). The transcriber is a real whisper-base directory if one is
given, else a transformers Whisper built at base size (d_model 512, 6+6 layers, 8 heads, 80 mels)
with random weights, its output pinned to a fixed number of tokens so every pass costs the same.

Each measurement goes through real batchers on one event loop, as in the app: a transcription is
timed from submit to answer, one at a time, first with the CPU idle, then while a background batch
of captions runs, `gap_s` apart until it is captioned. In each gap the caption runs on its own, so
each pass arrives in the middle of a vision pass or of decoding, as a live recording's partials do.
The caption batch is also timed alone and amid the passes: what giving way costs the captions.
`python -m capsearch.bench.arbiter [WORKDIR]` prints the table.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from capsearch.batching import Batcher, ComputeArbiter, Priority
from capsearch.bench.offline import format_table, sample_images
from capsearch.config import BatchSettings
from capsearch.ml.yielding import NEVER_YIELD

TARGET = 1.2  # a voice pass during a caption batch ≤ 1.2x its idle time
CAPTION_TOKENS = 20
VOICE_TOKENS = 24  # a spoken search phrase, with Whisper's prompt on top
CAPTION_BATCH = 8


def _blip_checkpoint(workdir: Path, tiny: bool) -> Path:
    from capsearch.bench.blip_fast import image_dependent
    from capsearch.ml.tiny import build_random_blip_base, tiny_blip_in_memory

    out = workdir / ("blip-tiny" if tiny else "blip-base-random")
    if not (out / "config.json").is_file():
        model, processor = tiny_blip_in_memory() if tiny else build_random_blip_base()
        image_dependent(model)  # captions follow the image; random BLIP would caption all alike
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def _whisper_base_random(workdir: Path) -> Path:
    """Whisper at base size with random weights; the tiny model's byte-level tokenizer and prompt."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from capsearch.ml.tiny import tiny_whisper_in_memory

    out = workdir / "whisper-base-random"
    if (out / "config.json").is_file():
        return out
    tiny, processor = tiny_whisper_in_memory()
    sizes = {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_ffn_dim": 2048}
    sizes |= {"decoder_ffn_dim": 2048, "encoder_attention_heads": 8, "decoder_attention_heads": 8}
    # The real vocabulary's size: the output projection is part of every decoding step's cost.
    sizes |= {"vocab_size": 51865, "max_target_positions": 448}
    config: Any = WhisperConfig(**{**tiny.config.to_dict(), **sizes})
    whisper: Any = WhisperForConditionalGeneration
    model = whisper(config).eval()
    gen = tiny.generation_config
    gen.min_new_tokens = VOICE_TOKENS  # a random model may stop at once; pin the length
    gen.max_length = 448
    model.generation_config = gen
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _models(workdir: Path, whisper_dir: str | None, tiny: bool) -> tuple[Any, Any, str]:
    from capsearch.ml.blip_ov import OpenVinoBlipCaptioner
    from capsearch.ml.tiny import build_tiny_whisper
    from capsearch.ml.transcriber import WhisperTranscriber

    blip = _blip_checkpoint(workdir, tiny)
    captioner = OpenVinoBlipCaptioner(
        str(blip), cache_dir=workdir / "cache", max_new_tokens=CAPTION_TOKENS, convert_in_subprocess=not tiny
    )
    captioner.load()
    label = "whisper-base" if whisper_dir else "whisper-base size, random weights"
    if tiny:
        label, whisper_dir = "tiny models: a smoke run, no meaningful numbers", str(workdir / "whisper-tiny")
        build_tiny_whisper(Path(whisper_dir))
    directory = whisper_dir or str(_whisper_base_random(workdir))
    transcriber = WhisperTranscriber(directory, cache_dir=workdir, max_new_tokens=VOICE_TOKENS)
    transcriber.load()
    return captioner, transcriber, label


def _clip() -> np.ndarray:
    """A spoken search phrase (espeak-ng, or a hum where it is missing) after 0.25 s of silence."""
    from capsearch.bench.voice_page import speech_clip

    speech, _ = speech_clip()
    return np.concatenate([np.zeros(4_000, np.float32), speech.astype(np.float32) / 32768])


async def _voice_pass(voice: Batcher[Any, Any], clip: np.ndarray) -> float:
    started = time.perf_counter()
    await voice.run(clip)
    return time.perf_counter() - started


async def _caption_batch(captions: Batcher[Any, str], images: list[Any]) -> tuple[asyncio.Future[Any], float]:
    """Submit one background batch; returns its gathered future and when it went to the model."""
    started = asyncio.Event()
    batch = asyncio.gather(*(captions.submit(im, Priority.BACKGROUND, on_start=started.set) for im in images))
    await started.wait()
    return batch, time.perf_counter()


async def _measure(
    captioner: Any, transcriber: Any, arbiter: ComputeArbiter | None, passes: int, gap_s: float
) -> dict[str, Any]:
    captioner.yield_to = arbiter or NEVER_YIELD
    settings = BatchSettings(max_batch_size=CAPTION_BATCH, max_wait_ms=0)
    captions: Batcher[Any, str] = Batcher(captioner, settings)
    voice: Batcher[Any, str] = Batcher(transcriber, BatchSettings(max_wait_ms=10), holds=arbiter)
    await captions.start()
    await voice.start()
    clip, images = _clip(), sample_images(CAPTION_BATCH, seed=11)
    try:
        idle = [await _voice_pass(voice, clip) for _ in range(passes)]
        batch, t0 = await _caption_batch(captions, images)
        await batch
        alone = time.perf_counter() - t0
        # The same batch again, now with voice passes `gap_s` apart until it is captioned: each
        # arrives while the caption is mid-way through a vision pass or decoding.
        batch, t0 = await _caption_batch(captions, images)
        busy = []
        while True:
            await asyncio.wait({batch}, timeout=gap_s)  # the voice cadence; ends early with the batch
            if batch.done():
                break
            took = await _voice_pass(voice, clip)
            if not batch.done():  # a pass that outlived the captions was partly uncontended
                busy.append(took)
        await batch
        with_voice = time.perf_counter() - t0
    finally:
        await voice.stop(timeout=60)
        await captions.stop(timeout=60)
    row: dict[str, Any] = {"idle": statistics.median(idle), "busy": statistics.median(busy or [0.0])}
    row |= {"worst": max(busy or [0.0]), "n": len(busy), "captions_alone": alone, "captions_busy": with_voice}
    row |= {"passes_idle": idle, "passes_busy": busy}
    if arbiter is not None:
        stats = arbiter.stats()
        row |= {"pauses": stats.pauses, "paused_s": stats.paused_s, "interrupts": stats.interrupts}
        row |= {"guard_trips": stats.guard_trips}
    return row


def bench_interference(
    *,
    passes: int = 3,
    gap_s: float = 1.0,
    workdir: Path | None = None,
    whisper_dir: str | None = None,
    tiny: bool = False,
) -> dict[str, Any]:
    """Voice pass times (median seconds) idle and during a caption batch, without and with the
    arbiter, and their ratios to idle (target ≤ TARGET with the arbiter); and how long the caption
    batch took alone and beside the voice passes. `tiny`: tiny models, only to check that it runs."""
    with tempfile.TemporaryDirectory(prefix="capsearch-arbiter-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        captioner, transcriber, label = _models(where, whisper_dir, tiny)
        result: dict[str, Any] = {"transcriber": label, "gap_s": gap_s, "load_before": os.getloadavg()}
        for mode, arbiter in (("without", None), ("with", ComputeArbiter())):
            result[mode] = asyncio.run(_measure(captioner, transcriber, arbiter, passes, gap_s))
    for mode in ("without", "with"):
        result[mode]["ratio"] = result[mode]["busy"] / result[mode]["idle"]
    result["meets_target"] = result["with"]["ratio"] <= TARGET
    result["load"] = os.getloadavg()
    return result


def interference_table(result: dict[str, Any]) -> str:
    rows = []
    for mode in ("without", "with"):
        r = result[mode]
        row = {
            "arbiter": mode,
            "voice idle s": round(r["idle"], 2),
            "voice amid captions s": round(r["busy"], 2),
            "ratio": f"{r['ratio']:.2f}x",
            "worst s": round(r["worst"], 2),
            "passes": r["n"],
            "caption batch alone s": round(r["captions_alone"], 1),
            "amid voice s": round(r["captions_busy"], 1),
        }
        for key in ("pauses", "interrupts", "guard_trips"):
            row[key.replace("_", " ")] = r.get(key, "-")
        rows.append(row)
    verdict = "ok" if result["meets_target"] else "MISS"
    loads = [" / ".join(f"{x:.1f}" for x in result[k]) for k in ("load_before", "load")]
    return (
        f"Voice pass amid a caption batch ({result['transcriber']}; BLIP-base-size OpenVINO captioner, "
        f"a batch of {CAPTION_BATCH}; voice passes {result['gap_s']} s apart until it is captioned; "
        f"target with the arbiter ≤ {TARGET}x idle: {verdict})\n"
        + format_table(rows)
        + f"\n(load average before {loads[0]}, after {loads[1]}; {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    # python -m capsearch.bench.arbiter [WORKDIR [GAP_S]]: WORKDIR keeps the checkpoints and conversion.
    args = sys.argv[1:]
    workdir = Path(args[0]) if args else None
    print(
        interference_table(
            bench_interference(workdir=workdir, gap_s=float(args[1]) if len(args) > 1 else 1.0)
        )
    )
