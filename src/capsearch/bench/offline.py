"""Captioner throughput without the network: random-weight BLIP models of the real architectures.

Random weights cost the same compute as trained ones as long as every caption has the same length,
so generation is pinned to exactly `max_new_tokens` tokens (a random model may otherwise stop early).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # torch and transformers load only for the functions that caption with them
    from capsearch.ml.captioner import BlipCaptioner

BenchProfile = Literal["tiny", "blip-base-random"]
_MODEL_NAMES: dict[str, str] = {"tiny": "tiny-blip (random)", "blip-base-random": "blip-base (random)"}
# BLIP base takes ~4 s per image on a 2-core CPU: one timed batch per size is all we can afford.
_DEFAULT_REPEATS: dict[str, int] = {"tiny": 5, "blip-base-random": 1}


def sample_images(count: int = 4, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Image.Image]:
    """Photo-sized RGB images with gradients, shapes and noise, so resizing and normalising do real work."""
    rng = np.random.default_rng(seed)
    width, height = size
    images = []
    for _ in range(count):
        x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
        y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        pixels = colours[0] * (1 - x) * (1 - y) + colours[1] * x * y
        pixels += rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(5):
            x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
            box = (x0, y0, x0 + int(rng.integers(30, 200)), y0 + int(rng.integers(30, 200)))
            fill = tuple(int(c) for c in rng.integers(0, 255, size=3))
            draw.ellipse(box, fill=fill) if rng.random() < 0.5 else draw.rectangle(box, fill=fill)
        images.append(image)
    return images


def bench_captioner(profile: BenchProfile, max_new_tokens: int) -> BlipCaptioner:
    from capsearch.ml.captioner import BlipCaptioner
    from capsearch.ml.tiny import build_random_blip_base, tiny_blip_in_memory

    model, processor = tiny_blip_in_memory() if profile == "tiny" else build_random_blip_base()
    model.generation_config.min_new_tokens = max_new_tokens
    return BlipCaptioner.from_loaded(
        model, processor, model_id=_MODEL_NAMES[profile], max_new_tokens=max_new_tokens
    )


def bench_captioner_offline(
    profile: BenchProfile,
    batch_sizes: Sequence[int] = (1, 4, 8),
    repeats: int | None = None,
    *,
    max_new_tokens: int = 20,
) -> list[dict[str, Any]]:
    """Images per second of `BlipCaptioner.predict` at each batch size, on CPU in float32.

    Rows: {"model", "batch_size", "images_per_s", "s_per_batch"} (median of `repeats` timed batches,
    after one untimed warm-up batch). `repeats=None` means 5 for tiny and 1 for blip-base-random.
    """
    if profile not in _MODEL_NAMES:
        raise ValueError(f"unknown benchmark profile {profile!r}; choose one of {sorted(_MODEL_NAMES)}")
    runs = _DEFAULT_REPEATS[profile] if repeats is None else max(1, repeats)
    captioner = bench_captioner(profile, max_new_tokens)
    pool = sample_images(max(batch_sizes, default=1))
    try:
        # The first call pays one-off costs (allocator growth, kernel selection); keep it out of timings.
        captioner.predict(pool[:1])
        rows: list[dict[str, Any]] = []
        for batch_size in batch_sizes:
            batch = [pool[i % len(pool)] for i in range(batch_size)]
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                captioner.predict(batch)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            rows.append(
                {
                    "model": _MODEL_NAMES[profile],
                    "batch_size": batch_size,
                    "images_per_s": batch_size / seconds,
                    "s_per_batch": seconds,
                }
            )
        return rows
    finally:
        captioner.close()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain aligned text table; columns in first-row key order, numbers right-aligned."""
    if not rows:
        return "(no results)"
    columns = list(rows[0])
    cells = [[_cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    numeric = [all(isinstance(row.get(col), int | float) for row in rows) for col in columns]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)
