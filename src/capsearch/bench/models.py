"""`capsearch bench --only models`: the captioner's backends side by side, and how far each is from
what this machine's arithmetic allows.

The BLIP-base-size random model is saved once as a checkpoint on disk, exactly what `from_pretrained`
loads for the real model. Each backend then runs in a child process of its own — so its peak resident
memory is its own — that loads the checkpoint (OpenVINO: converts it first, timed, into a cache that
the measuring child then finds), captions a fixed set of images for token agreement with torch, and
times batches of 1, 4 and 8. The floor is the FLOPs of one caption (torch's FLOP counter over a
torch caption) over the FLOPS a large float32 matmul reaches here.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from capsearch.bench.offline import BenchProfile, sample_images

BATCH_SIZES = (1, 4, 8)
NEW_TOKENS = 20
AGREEMENT_IMAGES = 8
# Targets of issue 11, as ratios to the torch backend measured in the same run.
SPEEDUP_B1, SPEEDUP_B8, FLOOR_RATIO = 2.5, 2.0, 1.5
STACK_RATIO, LOOP_LAG_MS = 0.9, 10.0

Backend = tuple[str, bool]  # (engine, int8 weights)
BACKENDS: tuple[Backend, ...] = (("torch", False), ("openvino", False), ("openvino", True))


def _label(backend: Backend) -> str:
    engine, int8 = backend
    return f"{engine} int8 (unverified)" if int8 else engine


def _captioner(engine: str, int8: bool, checkpoint: Path, cache: Path) -> Any:
    if engine == "torch":
        from capsearch.ml.captioner import BlipCaptioner

        return BlipCaptioner(str(checkpoint), cache_dir=cache, max_new_tokens=NEW_TOKENS)
    from capsearch.ml.blip_ov import OpenVinoBlipCaptioner

    return OpenVinoBlipCaptioner(str(checkpoint), cache_dir=cache, max_new_tokens=NEW_TOKENS, int8=int8)


def _measure(backend: Backend, checkpoint: str, cache: str, repeats: int) -> dict[str, Any]:
    """In a child: load, caption the agreement set, time each batch size; peak RSS at the end."""
    engine, int8 = backend
    started = time.perf_counter()
    captioner = _captioner(engine, int8, Path(checkpoint), Path(cache))
    captioner.load()
    load_s = time.perf_counter() - started
    images = sample_images(AGREEMENT_IMAGES, seed=7)
    pixels = captioner.pixel_values(images)
    ids = [captioner.generate_ids(pixels[i : i + 1])[0].tolist() for i in range(len(images))]
    captioner.predict(images[:1])  # one-off costs (allocations, kernel choice) stay out of the timings
    rates: dict[int, float] = {}
    for size in BATCH_SIZES:
        batch = [images[i % len(images)] for i in range(size)]
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            captioner.predict(batch)
            times.append(time.perf_counter() - t)
        rates[size] = statistics.median(times) / size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_s": load_s, "ids": ids, "s_per_image": rates, "peak_rss_mb": peak_mb}


def _convert(backend: Backend, checkpoint: str, cache: str) -> float:
    started = time.perf_counter()
    _captioner(*backend, Path(checkpoint), Path(cache)).convert()
    return time.perf_counter() - started


def _in_child(fn: Any, *args: Any) -> Any:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _floor(checkpoint: str) -> tuple[float, float]:
    """(GFLOPs per caption, GFLOPS of a large float32 matmul here), in a child."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from capsearch.ml.captioner import BlipCaptioner

    captioner = BlipCaptioner(checkpoint, cache_dir=Path(checkpoint), max_new_tokens=NEW_TOKENS)
    captioner.load()
    with FlopCounterMode(display=False) as counter:
        captioner.predict(sample_images(1, seed=7))
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(10))
    return counter.get_total_flops() / 1e9, 2 * 2048**3 / best / 1e9


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _agreement(ids: list[list[int]], reference: list[list[int]]) -> str:
    """Tokens equal to torch's, and where the first difference is (caption, position)."""
    same = total = 0
    first: str | None = None
    for n, (mine, theirs) in enumerate(zip(ids, reference, strict=True)):
        for pos in range(max(len(mine), len(theirs))):
            equal = pos < len(mine) and pos < len(theirs) and mine[pos] == theirs[pos]
            same, total = same + equal, total + 1
            if not equal and first is None:
                first = f"first at caption {n}, token {pos}"
    return f"{same}/{total}" + (f" ({first})" if first else " (identical)")


def bench_models(
    *, quick: bool = False, profile: BenchProfile = "blip-base-random"
) -> tuple[list[dict[str, Any]], str]:
    """One row per backend × batch size, and a note on the floor and the targets. `profile="tiny"`
    only checks that every step runs (its numbers mean nothing)."""
    from capsearch.bench.blip_fast import image_dependent
    from capsearch.ml.tiny import build_random_blip_base, tiny_blip_in_memory

    repeats = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="capsearch-models-") as tmp:
        checkpoint, cache = Path(tmp) / "checkpoint", Path(tmp) / "cache"
        model, processor = tiny_blip_in_memory() if profile == "tiny" else build_random_blip_base()
        # Random BLIP's vision tower starts near zero, so every image would get the same caption and
        # token agreement would test one caption; re-initialised, captions follow the image.
        image_dependent(model)
        model.save_pretrained(checkpoint)
        processor.save_pretrained(checkpoint)
        del model
        gflops, machine = _in_child(_floor, str(checkpoint))
        floor_s = gflops / machine
        results: dict[Backend, dict[str, Any]] = {}
        for backend in BACKENDS:
            convert_s = (
                _in_child(_convert, backend, str(checkpoint), str(cache)) if backend[0] != "torch" else 0.0
            )
            results[backend] = _in_child(_measure, backend, str(checkpoint), str(cache), repeats)
            results[backend]["convert_s"] = convert_s
        stack = _full_stack(checkpoint, profile, results[("openvino", False)], quick)
    torch_result = results[("torch", False)]
    rows = []
    for backend, r in results.items():
        for size in BATCH_SIZES:
            s = r["s_per_image"][size]
            rows.append(
                {
                    "backend": _label(backend),
                    "batch": size,
                    "images_per_s": 1 / s,
                    "s_per_image": s,
                    "vs_torch": f"{torch_result['s_per_image'][size] / s:.2f}x",
                    "vs_floor": f"{s / floor_s:.2f}x",
                    "peak_rss_mb": round(r["peak_rss_mb"]),
                    "load_s": round(r["load_s"], 1),
                    "convert_s": round(r["convert_s"], 1),
                    "tokens_as_torch": _agreement(r["ids"], torch_result["ids"]),
                }
            )
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    verdicts = _verdicts(results[("openvino", False)], torch_result, floor_s)
    note = (
        f"floor: {gflops:.0f} GFLOPs per caption ({NEW_TOKENS} tokens) / {machine:.0f} GFLOPS (float32 "
        f"matmul 2048², best of 10) = {floor_s:.2f} s per image; load average {load}; "
        f"{os.cpu_count()} CPUs\nopenvino vs torch: " + "; ".join(verdicts)
    )
    return rows, note + "\n" + stack


def _full_stack(checkpoint: Path, profile: BenchProfile, offline: dict[str, Any], quick: bool) -> str:
    """The OpenVINO captioner behind the whole server: 32 clients uploading with wait=true."""
    from capsearch.bench.fullstack import bench_full_stack

    lines = []
    for size in (8, 1):
        row = bench_full_stack(
            "blip-base-random",
            size,
            requests=16 if quick else 64,  # two uploads per client: steady state, not a ramp
            max_new_tokens=NEW_TOKENS,
            openvino=checkpoint,
        )
        ratio = row["images_per_s"] * offline["s_per_image"][size]
        ok = "ok" if ratio >= STACK_RATIO and row["loop_lag_p99_ms"] <= LOOP_LAG_MS else "MISS"
        lines.append(
            f"full stack, openvino, max batch {size}: {row['images_per_s']:.2f} images/s = "
            f"{ratio:.2f}x offline (≥ {STACK_RATIO}x), loop lag p99 {row['loop_lag_p99_ms']:.1f} ms "
            f"(≤ {LOOP_LAG_MS:g}): {ok}"
        )
    return "\n".join(lines)


def _verdicts(ov: dict[str, Any], torch_result: dict[str, Any], floor_s: float) -> list[str]:
    out = []
    for size, want in ((1, SPEEDUP_B1), (8, SPEEDUP_B8)):
        got = torch_result["s_per_image"][size] / ov["s_per_image"][size]
        # A target that asks for less time per image than the arithmetic allows cannot be met.
        need = torch_result["s_per_image"][size] / want
        below = f", needs {need:.2f} s per image: below the floor" if need < floor_s else ""
        out.append(f"batch {size} {got:.2f}x (≥ {want}x{below}: {'ok' if got >= want else 'MISS'})")
    ratio = min(ov["s_per_image"].values()) / floor_s
    out.append(f"best {ratio:.2f}x the floor (≤ {FLOOR_RATIO}x: {'ok' if ratio <= FLOOR_RATIO else 'MISS'})")
    mine, theirs = ov["peak_rss_mb"], torch_result["peak_rss_mb"]
    out.append(f"peak RSS {mine:.0f} MB vs torch {theirs:.0f} MB: {'ok' if mine <= theirs else 'MISS'}")
    return out
