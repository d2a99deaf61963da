"""Scale-out (distributed mode) as real processes on this machine (capsearch.bench.scalekit):

1. caption throughput of one web replica with 1, 2 and 4 model workers whose stand-in captioner costs
   a fixed time per batch whatever its size (`capsearch worker --fake-batch-s`), so that adding a
   worker adds capacity even on a machine with fewer cores than workers;
2. what the Redis path adds to one request: a query embedding through the in-process batcher against
   the same embedding sent to a worker over Redis (RemoteBatcher → RpcServer) and answered back;
3. one upload's time to ready, one REST transcription and one search, with the tiny profile's models
   (random weights, real architectures), in one process (`capsearch serve`) and as a web replica
   with one model worker.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

from capsearch.bench import scalekit
from capsearch.bench.offline import format_table
from capsearch.db.session import create_engine

WORKERS = (1, 2, 4)
TARGETS = {2: 1.9, 4: 3.6}  # images/s against 1 worker
BATCH_S = 0.5  # the stand-in captioner's cost per batch
MAX_BATCH = 4
BATCHES_PER_WORKER = 12  # ~6 s per level whatever the number of workers
UPLOAD_CLIENTS, FILES_PER_REQUEST = 4, 8
ROUND_TRIPS = 300
REAL_RUNS, SEARCH_RUNS = 10, 50


@dataclass(frozen=True)
class Level:
    workers: int
    images: int
    seconds: float  # first upload sent → last image ready
    upload_s: float  # first upload sent → last upload answered (202)


def throughput_rows(levels: Sequence[Level]) -> list[dict[str, Any]]:
    """Images/s per level, its ratio to the 1-worker level and the issue's target for it."""
    base = next(lv.images / lv.seconds for lv in levels if lv.workers == 1)
    rows = []
    for lv in levels:
        rate = lv.images / lv.seconds
        ratio = rate / base
        target = TARGETS.get(lv.workers)
        rows.append(
            {
                "workers": lv.workers,
                "images": lv.images,
                "uploads_s": round(lv.upload_s, 2),
                "all_ready_s": round(lv.seconds, 2),
                "images_per_s": round(rate, 2),
                "ideal_per_s": round(lv.workers * MAX_BATCH / BATCH_S, 1),
                "vs_1_worker": f"{ratio:.2f}x",
                "target": f"≥ {target}x" if target else "",
                "ok": "" if target is None else ("ok" if ratio >= target else "MISS"),
            }
        )
    return rows


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def compare_rows(results: dict[str, dict[str, list[float]]], a: str, b: str) -> list[dict[str, Any]]:
    """One row per request kind: p50/p90 in milliseconds of mode `a` and mode `b`, and b − a at p50."""
    rows = []
    for what, times in results[a].items():
        other = results[b][what]
        rows.append(
            {
                "request": what,
                "runs": len(times),
                f"{a} p50_ms": round(pct(times, 50), 1),
                f"{a} p90_ms": round(pct(times, 90), 1),
                f"{b} p50_ms": round(pct(other, 50), 1),
                f"{b} p90_ms": round(pct(other, 90), 1),
                "added_p50_ms": round(pct(other, 50) - pct(times, 50), 1),
            }
        )
    return rows


def latency_rows(trips: dict[str, list[float]]) -> list[dict[str, Any]]:
    """p50/p99 of each path (in process first, over Redis second) and what the second adds."""
    rows = [
        {"path": label, "requests": len(t), "p50_ms": round(pct(t, 50), 2), "p99_ms": round(pct(t, 99), 2)}
        for label, t in trips.items()
    ]
    local, remote = trips.values()
    added = {q: round(pct(remote, q) - pct(local, q), 2) for q in (50, 99)}
    rows.append({"path": "added by Redis", "requests": len(remote), "p50_ms": added[50], "p99_ms": added[99]})
    return rows


# --- 1. throughput with 1, 2, 4 workers ---------------------------------------------------------------


async def _upload(http: httpx.AsyncClient, numbers: list[int], tag: int, *, wait: bool = False) -> None:
    files = [("files", (f"{i}.png", scalekit.png(i, tag), "image/png")) for i in numbers]
    r = await http.post("/api/images", params={"wait": str(wait).lower()}, files=files)
    if r.status_code != (201 if wait else 202):
        raise RuntimeError(f"upload answered {r.status_code}: {r.text[:300]}")
    for item in r.json()["items"]:
        if not item["ok"] or item["duplicate"]:
            raise RuntimeError(f"benchmark upload not accepted as new: {item}")


async def _level(url: str, db_url: str, workers: int, tag: int, ready_before: int) -> Level:
    images = BATCHES_PER_WORKER * MAX_BATCH * workers
    engine = create_engine(db_url)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            pending = list(range(images))

            async def client() -> None:
                while pending:
                    chunk = [pending.pop() for _ in range(min(FILES_PER_REQUEST, len(pending)))]
                    await _upload(http, chunk, tag)

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(UPLOAD_CLIENTS)))
            uploaded = time.perf_counter() - start
            query = text("SELECT status, count(*) FROM images GROUP BY status")
            while True:
                async with engine.connect() as conn:
                    counts: dict[str, int] = {s: n for s, n in (await conn.execute(query)).all()}
                if counts.get("failed"):
                    raise RuntimeError(f"{counts['failed']} benchmark image(s) failed to caption")
                if counts.get("ready", 0) >= ready_before + images:
                    return Level(workers, images, time.perf_counter() - start, uploaded)
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"images not ready after 120 s: {counts}")
                await asyncio.sleep(0.02)
    finally:
        await engine.dispose()


async def _round_trips(prefix: str) -> dict[str, list[float]]:
    """Sequential query embeddings, in-process and over Redis, interleaved so load drifts hit both."""
    from redis.asyncio import Redis

    from capsearch.batching import Batcher, Priority
    from capsearch.bench.fakemodels import FakeEmbedder
    from capsearch.broker.health import Census
    from capsearch.broker.keys import Keys
    from capsearch.broker.rpc import RemoteBatcher, RpcClient
    from capsearch.broker.web import process_name
    from capsearch.config import Settings

    batch = Settings.model_fields["embed_batch"].default  # what the workers run with
    redis = Redis.from_url(scalekit.REDIS_URL)
    keys = Keys(prefix)
    local: Batcher[str, np.ndarray] = Batcher(FakeEmbedder(), batch, name="embedder-local-bench")
    client = RpcClient(redis, keys, process_name("bench"), 30.0)
    remote: RemoteBatcher[str, np.ndarray] = RemoteBatcher("embedder", batch, client, Census(redis, keys))
    times: dict[str, list[float]] = {"in process (Batcher)": [], "over Redis (worker)": []}
    await local.start()
    await client.start()
    await remote.start()
    try:
        for i in range(-20, ROUND_TRIPS):  # the first 20 warm up
            for label, queue in zip(times, (local, remote), strict=True):
                t = time.perf_counter()
                await queue.run(f"a dog on a beach {i}", Priority.INTERACTIVE)
                if i >= 0:
                    times[label].append((time.perf_counter() - t) * 1000)
    finally:
        await remote.stop()
        await client.stop()
        await local.stop()
        await redis.aclose()
    return times


def _throughput(root: Path) -> list[str]:
    levels: list[Level] = []
    with (
        scalekit.scratch_database() as db_url,
        scalekit.cluster(
            root, db_url, distributed=True, CAPSEARCH_CAPTION_BATCH__MAX_BATCH_SIZE=str(MAX_BATCH)
        ) as c,
    ):
        assert c.prefix is not None
        web, workers = c.web("web"), [c.worker("worker-1", BATCH_S)]
        c.wait_ready(*workers, web)

        async def warm_up() -> None:  # first caption, first write, first index change
            async with httpx.AsyncClient(base_url=web.url, timeout=60) as http:
                await _upload(http, list(range(MAX_BATCH)), 0, wait=True)

        asyncio.run(warm_up())
        ready = MAX_BATCH
        for tag, n in enumerate(WORKERS, start=1):
            while len(workers) < n:
                workers.append(c.worker(f"worker-{len(workers) + 1}", BATCH_S))
            c.wait_ready(*workers, web)
            levels.append(asyncio.run(_level(web.url, db_url, n, tag, ready)))
            ready += levels[-1].images
        trips = asyncio.run(_round_trips(c.prefix))
    return [
        f"Scale-out: caption throughput, 1 web replica + N workers (stand-in captioner {BATCH_S:g} s per "
        f"batch of ≤ {MAX_BATCH}; {BATCHES_PER_WORKER} batches' worth per worker uploaded over REST, "
        f"{UPLOAD_CLIENTS} clients × {FILES_PER_REQUEST} files per request; targets ≥ 1.9x at 2, "
        "≥ 3.6x at 4)\n" + format_table(throughput_rows(levels)) + f"\n({scalekit.machine_note()})",
        "Redis path vs in process: one query embedding (fake embedder; both sides batch it as served, "
        f"so both wait the embed batcher's 5 ms; {ROUND_TRIPS} sequential requests, interleaved)\n"
        + format_table(latency_rows(trips))
        + f"\n({scalekit.machine_note()})",
    ]


# --- 3. tiny real models, one process vs replica + worker --------------------------------------------


async def _latencies(url: str, jpegs: list[bytes], wav: bytes) -> dict[str, list[float]]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def upload(i: int) -> None:
            r = await http.post(
                "/api/images?wait=true", files={"files": (f"{i}.jpg", jpegs[i], "image/jpeg")}
            )
            if r.status_code != 201 or r.json()["items"][0]["image"]["status"] != "ready":
                raise RuntimeError(f"upload not captioned: {r.status_code} {r.text[:300]}")

        async def transcribe(_i: int) -> None:
            r = await http.post("/api/transcriptions", files={"file": ("tone.wav", wav, "audio/wav")})
            if r.status_code != 200:
                raise RuntimeError(f"transcription answered {r.status_code}: {r.text[:300]}")

        async def search(i: int) -> None:
            r = await http.get("/api/search", params={"q": f"a red car parked outside {i}"})
            if r.status_code != 200:
                raise RuntimeError(f"search answered {r.status_code}: {r.text[:300]}")

        kinds: list[tuple[str, Callable[[int], Awaitable[None]], int]] = [
            ("upload, wait=true → ready", upload, REAL_RUNS),
            ("POST /api/transcriptions (2 s WAV)", transcribe, REAL_RUNS),
            ("GET /api/search", search, SEARCH_RUNS),
        ]
        out: dict[str, list[float]] = {}
        for what, call, runs in kinds:
            await call(0)  # warm-up: first pass of each model
            out[what] = []
            for i in range(1, runs + 1):
                t = time.perf_counter()
                await call(i)
                out[what].append((time.perf_counter() - t) * 1000)
        return out


def _real_models(root: Path) -> str:
    jpegs, wav = scalekit.jpegs(REAL_RUNS + 1), scalekit.tone_wav()
    models, title = scalekit.model_env(root)
    results: dict[str, dict[str, list[float]]] = {}
    for mode in ("single", "distributed"):
        with scalekit.scratch_database() as db_url:  # each mode from empty: the same images are new
            where = root / mode
            where.mkdir()
            with scalekit.cluster(where, db_url, distributed=mode == "distributed", **models) as c:
                procs = [c.web(f"{mode}-web")]
                if mode == "distributed":
                    procs.insert(0, c.worker("tiny-worker"))
                c.wait_ready(*procs)
                results[mode] = asyncio.run(_latencies(procs[-1].url, jpegs, wav))
    return (
        f"Real models, {title}: one process (`capsearch serve`) vs a web replica + 1 worker, "
        "sequential requests\n"
        + format_table(compare_rows(results, "single", "distributed"))
        + f"\n({scalekit.machine_note()})"
    )


def bench_scale() -> list[str]:
    """The tables; a one-line explanation instead when Redis or PostgreSQL is not reachable."""
    why = scalekit.missing_services()
    if why is not None:
        return [f"Scale-out (distributed mode): skipped: {why}"]
    started = time.perf_counter()
    with scalekit.interruptible(), tempfile.TemporaryDirectory(prefix="capsearch-scale-") as tmp:
        root = Path(tmp)
        (root / "fake").mkdir()
        tables = _throughput(root / "fake")
        tables.append(_real_models(root))
    tables[-1] += f"\n(whole scale benchmark {time.perf_counter() - started:.0f} s)"
    return tables
