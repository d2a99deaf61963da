"""Search latency and recall on synthetic caption-like vectors: exact vs approximate (IVF).

The vectors: 384-d, L2-normalised, drawn from a Gaussian whose variances fall off as 1/i (i = 1..384)
under a random rotation. Sentence embeddings are like that — a few directions carry most of the
variance (MiniLM on captions: ~45% in the first 10 of 384, falling off faster than 1/i) — whereas
uniformly random vectors, which no real text gives, have no near neighbours for an index to find.
1/i is the harder, flatter choice. Queries are fresh draws from the same distribution.

Latency is one query at a time through `VectorIndex.search` (what a request does: lock, FAISS,
results as Python pairs), after a few warm-up queries. Recall@10 is the share of the exact top 10
that the approximate index returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from capsearch.search.index import VectorIndex
from capsearch.search.probing import auto_nprobe, ivf_lists

DIM = 384
QUERIES = 200
EXACT_QUERIES_AT_1M = 30  # ~0.1 s each on 2 cores: enough for a median, not worth minutes
P50_TARGET_APPROX_MS = 5.0
RECALL_TARGET = 0.95
P50_TARGET_EXACT_100K_MS = 10.0


def synthetic(n: int, seed: int, rotation: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, DIM + 1, dtype=np.float32) ** -0.5).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        z = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32) * scale
        x = z @ rotation.T
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _latency(index: VectorIndex, queries: np.ndarray) -> tuple[float, float]:
    for q in queries[:5]:
        index.search(q, 10)
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, 10)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _recall(index: VectorIndex, queries: np.ndarray, truth: list[set[int]]) -> float:
    found = [{i for i, _ in index.search(q, 10)} for q in queries]
    return float(np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)]))


def _row(n: int, kind: str, build_s: float, p50: float, p99: float, **extra: Any) -> dict[str, Any]:
    return {
        "vectors": f"{n:,}",
        "index": kind,
        "build_s": round(build_s, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        **extra,
    }


def bench_size(n: int, rotation: np.ndarray) -> list[dict[str, Any]]:
    data = synthetic(n, seed=n, rotation=rotation)
    ids = np.arange(1, n + 1, dtype=np.int64)
    queries = synthetic(QUERIES, seed=n + 1, rotation=rotation)

    exact = VectorIndex(DIM, threshold=n + 1)
    started = time.perf_counter()
    exact.begin_rebuild()
    exact.finish_rebuild(ids, data, "exact")
    exact_build = time.perf_counter() - started
    timed = queries[:EXACT_QUERIES_AT_1M] if n >= 1_000_000 else queries
    exact_p50, exact_p99 = _latency(exact, timed)
    truth = [{i for i, _ in exact.search(q, 10)} for q in queries]
    del exact  # 1.5 GB at a million vectors; the IVF gets the memory

    approx = VectorIndex(DIM, threshold=1)
    started = time.perf_counter()
    approx.begin_rebuild()
    approx.finish_rebuild(ids, data, "ivf")
    approx_build = time.perf_counter() - started
    del data
    approx_p50, approx_p99 = _latency(approx, queries)
    recall = _recall(approx, queries, truth)

    exact_target = ""
    if n == 100_000:
        exact_target = (
            "ok" if exact_p50 <= P50_TARGET_EXACT_100K_MS else f"MISS(>{P50_TARGET_EXACT_100K_MS:g}ms)"
        )
    approx_target = ""
    if n == 1_000_000:
        approx_target = " ".join(
            [
                "ok" if approx_p50 <= P50_TARGET_APPROX_MS else f"MISS(>{P50_TARGET_APPROX_MS:g}ms)",
                "ok" if recall >= RECALL_TARGET else f"MISS(<{RECALL_TARGET})",
            ]
        )
    nlist = ivf_lists(n)
    return [
        _row(
            n,
            "exact (flat)",
            exact_build,
            exact_p50,
            exact_p99,
            recall_at_10="1 (truth)",
            target=exact_target,
        ),
        _row(
            n,
            f"IVF{nlist},fp16 nprobe={auto_nprobe(nlist, n)}",
            approx_build,
            approx_p50,
            approx_p99,
            recall_at_10=round(recall, 3),
            target=approx_target,
        ),
    ]


def bench_query_embedding(repeats: int = 50) -> dict[str, Any]:
    """The other half of a search request: turning the query into a vector (MiniLM, CPU, batch 1)."""
    from capsearch.config import Settings
    from capsearch.ml.factory import build_embedder

    embedder = build_embedder(Settings(_env_file=None))
    embedder.load()
    query = "a dog running on the beach"
    for _ in range(3):
        embedder.predict([query])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        embedder.predict([query])
        times.append((time.perf_counter() - t) * 1000)
    return {
        "step": f"query embedding ({embedder.label}, batch 1)",
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
    }


def bench_search(sizes: Sequence[int] = (10_000, 100_000, 1_000_000)) -> tuple[list[dict[str, Any]], str]:
    """Rows for the table, and a note on the machine (the load average matters on a shared CPU)."""
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((DIM, DIM)).astype(np.float32))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in sizes:
        rows += bench_size(n, rotation.astype(np.float32))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; whole search benchmark "
        f"{time.perf_counter() - started:.0f} s (builds included)"
    )
    return rows, note
