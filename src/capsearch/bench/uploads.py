"""Uploads over the page's WebSocket on loopback: throughput of one 5 MB file, and how much the
server's resident memory grows while 20 uploads stream at once (chunks must go to disk, not RAM)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from typing import Any

import numpy as np
import psutil
import websockets
from PIL import Image

from capsearch.bench.fullstack import bench_server
from capsearch.config import BatchSettings
from capsearch.ws.frames import encode_chunk

MB = 1024 * 1024


def big_jpeg(target_bytes: int = 5 * MB - 64 * 1024, seed: int = 0) -> bytes:
    """A real JPEG just under `target_bytes` (noise compresses badly, so size follows pixel count)."""
    rng = np.random.default_rng(seed)
    side = 1200
    for _ in range(20):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)).save(
            buf, "JPEG", quality=90
        )
        if 0.9 * target_bytes <= buf.tell() <= target_bytes:
            return buf.getvalue()
        side = int(side * (0.95 * target_bytes / buf.tell()) ** 0.5)
    raise RuntimeError(f"could not make a JPEG of about {target_bytes} bytes")


class _Upload:
    def __init__(self, port: int, upload_id: str, data: bytes) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.id = upload_id
        self.data = data
        self.acked = 0
        self.all_acked = asyncio.Event()
        self.finish = asyncio.Event()  # set by the caller to send upload.end
        self.stream_seconds = 0.0

    async def run(self) -> str:
        async with websockets.connect(self.url, max_size=None) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "upload.start",
                        "id": self.id,
                        "name": "big.jpg",
                        "size": len(self.data),
                        "mime": "image/jpeg",
                    }
                )
            )
            accepted = await self._until(ws, "upload.accepted")
            chunk, window = int(accepted["chunk_size"]), int(accepted["window"])
            start = time.perf_counter()
            sent = 0
            while self.acked < len(self.data):
                while sent < len(self.data) and sent - self.acked < window * chunk:
                    await ws.send(encode_chunk(self.id, sent, self.data[sent : sent + chunk]))
                    sent += min(chunk, len(self.data) - sent)
                ack = await self._until(ws, "upload.ack")
                self.acked = int(ack["offset"])
            self.stream_seconds = time.perf_counter() - start
            self.all_acked.set()
            await self.finish.wait()
            digest = hashlib.sha256(self.data).hexdigest()
            await ws.send(json.dumps({"type": "upload.end", "id": self.id, "sha256": digest}))
            done = await self._until(ws, "upload.done", "upload.rejected")
            return str(done["type"])

    async def _until(self, ws: Any, *types: str) -> dict[str, Any]:
        while True:
            raw = await ws.recv()
            message: dict[str, Any] = json.loads(raw)
            if message["type"] in types:
                return message
            if message["type"] in ("upload.rejected", "error"):
                raise RuntimeError(f"upload {self.id} failed: {message}")


async def _throughput(port: int, data: bytes, runs: int) -> float:
    rates = []
    for i in range(runs):
        up = _Upload(port, f"throughput-{i}-{time.time_ns()}", data)
        up.finish.set()
        await up.run()
        rates.append(len(data) / MB / up.stream_seconds)
    return sorted(rates)[len(rates) // 2]


async def _memory(port: int, pid: int, concurrent: int) -> tuple[float, float]:
    proc = psutil.Process(pid)
    baseline = proc.memory_info().rss
    uploads = [
        _Upload(port, f"memory-{i}-{time.time_ns()}", big_jpeg(2 * MB, seed=i)) for i in range(concurrent)
    ]
    peak = baseline
    tasks = [asyncio.create_task(u.run()) for u in uploads]
    pending = [asyncio.create_task(u.all_acked.wait()) for u in uploads]
    while pending:
        _done, still = await asyncio.wait(pending, timeout=0.02)
        pending = list(still)
        peak = max(peak, proc.memory_info().rss)
    peak = max(peak, proc.memory_info().rss)
    for u in uploads:
        u.finish.set()
    await asyncio.gather(*tasks)
    return baseline / MB, (peak - baseline) / MB / concurrent


async def _io_per_upload(port: int, pid: int, runs: int) -> dict[str, float]:
    """What the server process read and wrote per uploaded byte, caption included: read()/write()
    calls of any kind (rchar/wchar: the socket too) and what reached the disk (write_bytes)."""
    proc = psutil.Process(pid)
    files = [big_jpeg(2 * MB, seed=100 + i) for i in range(runs + 1)]
    # The first one, out of the measurement, pays for what the server reads once (lazy imports).
    warm = _Upload(port, f"io-warm-{time.time_ns()}", files.pop())
    warm.finish.set()
    await warm.run()
    before = proc.io_counters()
    for i, data in enumerate(files):
        up = _Upload(port, f"io-{i}-{time.time_ns()}", data)
        up.finish.set()
        await up.run()
    after = proc.io_counters()
    total = sum(len(d) for d in files)
    return {
        "read": (after.read_chars - before.read_chars) / total,
        "written": (after.write_chars - before.write_chars) / total,
        "disk": (after.write_bytes - before.write_bytes) / total,
    }


def bench_uploads(concurrent: int = 20, runs: int = 3) -> list[dict[str, Any]]:
    data = big_jpeg()
    batch = BatchSettings(max_batch_size=8, max_wait_ms=20, queue_limit=1024)
    with bench_server("tiny", batch) as server:
        # Warm-up: first socket, first upload, first caption, out of the measurement.
        asyncio.run(_throughput(server.port, big_jpeg(512 * 1024, seed=99), 1))
        rate = asyncio.run(_throughput(server.port, data, runs))
        # Before the memory run: its 20 uploads' captions would still be landing during this one.
        io = asyncio.run(_io_per_upload(server.port, server.pid, 5))
        baseline, per_upload = asyncio.run(_memory(server.port, server.pid, concurrent))
    return [
        {
            "what": f"one {len(data) / MB:.1f} MB upload over /ws (median of {runs})",
            "value": f"{rate:.0f} MB/s",
            "target": "≥ 50 MB/s",
            "ok": "ok" if rate >= 50 else "MISS",
        },
        {
            "what": f"server RSS growth while {concurrent} uploads stream (baseline {baseline:.0f} MB)",
            "value": f"{per_upload:.2f} MB per upload",
            "target": "≤ 1 MB per upload",
            "ok": "ok" if per_upload <= 1 else "MISS",
        },
        {
            "what": "server bytes per uploaded byte: read() / write() calls (socket included)",
            "value": f"{io['read']:.2f} read, {io['written']:.2f} written",
            # The floor: the temp file written once and read once to decode; reads also count the
            # database's pages (socket reads are not counted), so only writes have a target.
            "target": "≤ 1.2 written",
            "ok": "ok" if io["written"] <= 1.2 else "MISS",
        },
        {
            "what": "server bytes written to disk per uploaded byte (write_bytes)",
            "value": f"{io['disk']:.2f}",
            "target": "≤ 1.2 (temp file, thumbnail, database)",
            "ok": "ok" if io["disk"] <= 1.2 else "MISS",
        },
    ]
