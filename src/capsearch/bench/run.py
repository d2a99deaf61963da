"""`capsearch bench`: captioner (offline, full stack), search index, uploads, voice, live feed, scale-out
(distributed mode) — printed as tables."""

from __future__ import annotations

import os
from typing import Any

from capsearch.bench.offline import BenchProfile, bench_captioner_offline, format_table
from capsearch.config import Settings

FULL_STACK_TARGET = 0.9  # full stack ≥ 0.9 × offline at the same batch size
LOOP_LAG_TARGET_MS = 10.0


def _captioner_tables(quick: bool) -> list[str]:
    from capsearch.bench.fullstack import bench_full_stack

    profiles: list[BenchProfile] = ["tiny"] if quick else ["tiny", "blip-base-random"]
    offline: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for profile in profiles:
        rows = bench_captioner_offline(profile)
        offline += rows
        by_batch = {r["batch_size"]: r["images_per_s"] for r in rows}
        # Enough requests for several full batches; BLIP-base costs seconds per image on a CPU.
        requests = 256 if profile == "tiny" else 32
        if quick:
            requests = 64
        for max_batch in (8, 1):
            row = bench_full_stack(profile, max_batch, requests=requests)
            ratio = row["images_per_s"] / by_batch[max_batch]
            row["vs_offline"] = f"{ratio:.2f}x"
            row["targets"] = " ".join(
                [
                    "ok" if ratio >= FULL_STACK_TARGET else f"MISS(<{FULL_STACK_TARGET})",
                    "ok" if row["loop_lag_p99_ms"] <= LOOP_LAG_TARGET_MS else "MISS(lag)",
                ]
            )
            stack.append(row)
    return [
        "Captioner, offline (BlipCaptioner.predict, images/s)\n" + format_table(offline),
        f"Captioner, full stack (32 HTTP clients, wait=true; targets: ≥{FULL_STACK_TARGET}× offline at the "
        f"same batch size, loop lag p99 ≤ {LOOP_LAG_TARGET_MS:g} ms)\n" + format_table(stack),
    ]


def _search_tables(quick: bool) -> list[str]:
    from capsearch.bench.search import bench_query_embedding, bench_search

    rows, note = bench_search((10_000, 100_000) if quick else (10_000, 100_000, 1_000_000))
    return [
        "Search index, one query at a time (synthetic 384-d caption-like vectors; targets: exact p50 "
        "≤ 10 ms at 100k, approximate p50 ≤ 5 ms with recall@10 ≥ 0.95 at 1M)\n"
        + format_table(rows)
        + f"\n({note})",
        "Search request, the other half\n" + format_table([bench_query_embedding()]),
    ]


def _relevance_tables() -> list[str]:
    from capsearch.bench.relevance import Bench, embed_set, load_set
    from capsearch.bench.relevance_fit import tables

    data = load_set()
    bench = Bench(data, *embed_set(data))
    return [
        f"Search relevance, labelled set (docs/search.md): {title}\n" + format_table(rows)
        for title, rows in tables(bench)
    ]


def _feed_table(quick: bool) -> str:
    from capsearch.bench.feed import LATENCY_TARGET_MS, bench_feed

    sockets, images = (50, 20) if quick else (200, 100)
    result = bench_feed(sockets, images)
    return (
        f"Live feed: {sockets} open pages on /ws, {images} captions landing (fake models; targets: one card "
        f"render per event per process, event → socket p99 < {LATENCY_TARGET_MS:g} ms)\n"
        + format_table(result.rows())
        + f"\n({os.cpu_count()} CPUs; {result.note()})"
    )


def run_benchmarks(settings: Settings, *, quick: bool = False, only: str | None = None) -> int:
    tables: list[str] = []
    if only in (None, "captioner"):
        tables += _captioner_tables(quick)
    if only in (None, "search"):
        tables += _search_tables(quick)
    if only in (None, "relevance"):
        tables += _relevance_tables()
    if only in (None, "models"):
        from capsearch.bench.models import bench_models

        rows, note = bench_models(quick=quick)
        tables.append(
            "Captioner backends (BLIP-base-size random model, float32 unless int8; per-image times at each "
            "batch size)\n" + format_table(rows) + "\n" + note
        )
    if only in (None, "uploads"):
        from capsearch.bench.uploads import bench_uploads

        tables.append("Uploads over /ws (loopback)\n" + format_table(bench_uploads()))
    if only in (None, "voice"):
        from capsearch.bench.voice import bench_voice

        tables += bench_voice(settings, quick=quick)
    if only in (None, "feed"):
        tables.append(_feed_table(quick))
    if only in (None, "scale"):
        from capsearch.bench.scale import bench_scale

        tables += bench_scale()
    print("\n\n".join(tables))
    return 0
