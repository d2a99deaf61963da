"""Full-stack throughput: a real uvicorn server on loopback, N concurrent HTTP clients uploading with
`wait=true`, and the server's event-loop lag sampled the whole time."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from capsearch.bench.offline import BenchProfile, bench_captioner, sample_images
from capsearch.config import (
    BatchSettings,
    DatabaseSettings,
    ModelSettings,
    RateLimitSettings,
    Settings,
    StorageSettings,
    UploadSettings,
)
from capsearch.db.migrate import upgrade
from capsearch.server import uvicorn_config

LAG_INTERVAL_S = 0.005


class LoopLagMonitor:
    """Schedules a short sleep over and over; how late each wake-up is measures loop blocking."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            self.samples.append(max(0.0, loop.time() - t0 - LAG_INTERVAL_S))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def p99_ms(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        return statistics.quantiles(self.samples, n=100)[98] * 1000


def _jpegs(count: int) -> list[bytes]:
    out = []
    for i, img in enumerate(sample_images(count, size=(640, 480), seed=1000)):
        img.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))  # every upload distinct: no dedupe
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _serve_main(
    settings_json: str, profile: BenchProfile, max_new_tokens: int, conn: Connection, openvino: str | None
) -> None:
    """Child process: the server and its loop-lag monitor, away from the load generator's GIL."""
    from capsearch.app import create_app

    settings = Settings.model_validate_json(settings_json)
    captioner: Any
    if openvino is None:
        captioner = bench_captioner(profile, max_new_tokens)
    else:  # a checkpoint on disk, already converted into the cache beside it
        from capsearch.ml.blip_ov import OpenVinoBlipCaptioner

        checkpoint = Path(openvino)
        captioner = OpenVinoBlipCaptioner(
            str(checkpoint), cache_dir=checkpoint.parent / "cache", max_new_tokens=max_new_tokens
        )
    app = create_app(settings, captioner_factory=lambda _s: captioner)
    config = uvicorn_config(app, settings.server, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    monitor = LoopLagMonitor()

    async def control() -> None:
        while not server.started:  # noqa: ASYNC110 — uvicorn exposes no "started" event
            await asyncio.sleep(0.05)
        conn.send(server.servers[0].sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "reset":
                monitor.samples.clear()
            elif command == "lag":
                conn.send(monitor.p99_ms())
            else:
                server.should_exit = True
                return

    async def main() -> None:
        monitor.start()
        task = asyncio.create_task(control())
        await server.serve()
        monitor.stop()
        task.cancel()

    asyncio.run(main())


async def _clients(port: int, blobs: list[bytes], concurrency: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in blobs:
        queue.put_nowait(b)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            while not queue.empty():
                blob = queue.get_nowait()
                r = await http.post("/api/images?wait=true", files={"files": ("b.jpg", blob, "image/jpeg")})
                r.raise_for_status()
                if r.json()["items"][0]["image"]["status"] != "ready":
                    raise RuntimeError(f"benchmark upload not captioned: {r.text}")

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - start


@dataclass
class BenchServer:
    port: int
    pid: int
    control: Connection

    def lag_p99_ms(self) -> float:
        self.control.send("lag")
        lag: float = self.control.recv()
        return lag


def _wait_ready(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"benchmark server was not ready within {timeout_s:.0f} s")


@contextmanager
def bench_server(
    profile: BenchProfile, batch: BatchSettings, *, max_new_tokens: int = 20, openvino: Path | None = None
) -> Iterator[BenchServer]:
    """A real server in a child process over a throw-away database and store; its captioner is the
    profile's torch model, or the OpenVINO one of `openvino` (a checkpoint converted into the "cache"
    directory beside it)."""
    with tempfile.TemporaryDirectory(prefix="capsearch-bench-") as tmp:
        root = Path(tmp)
        settings = Settings(
            _env_file=None,
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{root / 'bench.db'}"),
            storage=StorageSettings(dir=root / "media"),
            models=ModelSettings(profile="tiny", cache_dir=root / "models", allow_download=False),
            caption_batch=batch,
            # One load generator on loopback measures throughput; per-client limits would cap it.
            rate_limits=RateLimitSettings(enabled=False),
            uploads=UploadSettings(max_per_client=1024),
        )
        upgrade(settings.database.url)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve_main,
            args=(
                settings.model_dump_json(),
                profile,
                max_new_tokens,
                child,
                str(openvino) if openvino else None,
            ),
        )
        proc.start()
        try:
            if not parent.poll(300):
                raise RuntimeError("benchmark server did not start")
            assert proc.pid is not None
            port = parent.recv()
            # Models load after the socket opens; measuring before they all have would time their
            # loading (torch imports, graph compiles) as if it were serving.
            _wait_ready(port, timeout_s=600)
            yield BenchServer(port=port, pid=proc.pid, control=parent)
        finally:
            parent.send("stop")
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()


def bench_full_stack(
    profile: BenchProfile,
    max_batch_size: int,
    *,
    requests: int,
    concurrency: int = 32,
    max_new_tokens: int = 20,
    openvino: Path | None = None,
) -> dict[str, Any]:
    batch = BatchSettings(max_batch_size=max_batch_size, max_wait_ms=20, queue_limit=1024)
    with bench_server(profile, batch, max_new_tokens=max_new_tokens, openvino=openvino) as server:
        # One warm-up request so one-off costs (first forward pass) stay out of the timing.
        asyncio.run(_clients(server.port, _jpegs(1), 1))
        server.control.send("reset")
        seconds = asyncio.run(_clients(server.port, _jpegs(requests + 1)[1:], concurrency))
        lag = server.lag_p99_ms()
    return {
        "model": profile if openvino is None else f"{profile} (openvino)",
        "max_batch_size": max_batch_size,
        "clients": concurrency,
        "requests": requests,
        "images_per_s": requests / seconds,
        "loop_lag_p99_ms": lag,
    }
