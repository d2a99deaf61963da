"""The live feed under load: N open page sockets on /ws while M captions land over the REST API.

The server runs in a child process with models of negligible cost, so the feed is what is measured
(capsearch.bench.feedserver): there every image event published on the bus is counted and stamped,
and every template render is counted by name. The pages are Python `websockets` clients in this
process; each stamps the moment an image's "done" card reaches it. Both stamps are
`time.monotonic()`, CLOCK_MONOTONIC on Linux: one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import websockets
from PIL import Image as PILImage
from websockets.typing import Origin

from capsearch.bench.feedserver import serve_main
from capsearch.bench.fullstack import LoopLagMonitor
from capsearch.config import (
    BatchSettings,
    DatabaseSettings,
    ModelSettings,
    RateLimitSettings,
    Settings,
    StorageSettings,
)

CARD = "partials/image_card.html"
LATENCY_TARGET_MS = 100.0
# The run ends once no fragment has come for a while: 1 s once every page has every "done" card
# (pages may still be working through older events, whose cards are counted too), else 5 s (what is
# missing by then is lost).
DRAINED_S, QUIET_S = 1.0, 5.0
DEADLINE_S = 600.0
_ARTICLE = re.compile(r"<article\b[^>]*>")
_ID = re.compile(r'\bid="image-(\d+)"')
_STAGE = re.compile(r'\bdata-stage="([\w-]+)"')


@dataclass
class Page:
    done: dict[int, float] = field(default_factory=dict)  # image id → first "done" card's arrival
    cards: int = 0  # image card fragments of any stage


@dataclass
class FeedResult:
    sockets: int
    images: int
    pages: list[Page]
    stats: dict[str, Any]
    latencies_ms: list[float]
    landing_s: float  # from the first upload to the last "done" card on any page
    captioned_s: float  # from the first upload to the last "ready" event published
    load: tuple[float, float, float]
    wanted: set[int]

    def missing(self) -> list[set[int]]:
        """Per socket, the uploaded images whose "done" card never reached it."""
        return [self.wanted - p.done.keys() for p in self.pages]

    def rows(self) -> list[dict[str, Any]]:
        events = sum(self.stats["events"].values())
        cards = self.stats["renders"].get(CARD, 0)
        per_event = cards / events if events else float("nan")
        lat = sorted(self.latencies_ms)
        p50, p99 = (
            (statistics.quantiles(lat, n=100, method="inclusive")[i] for i in (49, 98))
            if len(lat) > 1
            else (lat or [0.0]) * 2
        )
        missing = self.missing()
        expected = self.sockets * self.images
        received = expected - sum(len(m) for m in missing)
        short = sum(1 for m in missing if m)

        def row(what: str, value: str, target: str = "", ok: bool | None = None) -> dict[str, Any]:
            return {
                "what": what,
                "value": value,
                "target": target,
                "ok": {None: "", True: "ok"}.get(ok, "MISS"),
            }

        return [
            row(
                "pages open / captions landed",
                f"{self.sockets} / {self.images}: all ready at {self.captioned_s:.1f} s, "
                f"last done card at {self.landing_s:.1f} s",
            ),
            row("image events published", str(events)),
            row("card renders (image_card.html)", str(cards)),
            row("card renders per event", f"{per_event:.1f}", "1 per process", per_event <= 1.0),
            row("template renders, all", str(sum(self.stats["renders"].values()))),
            row("done cards received / expected", f"{received} / {expected}", "all", received == expected),
            row("sockets that missed a done card", str(short), "0", short == 0),
            row(
                "card fragments, any stage", f"{sum(p.cards for p in self.pages)} of {events * self.sockets}"
            ),
            row(
                "bus drops (subscriber queue full)",
                f"{self.stats['drops']} (deepest queue {self.stats['depth']} of {self.stats['queue_size']})"
                if self.stats["queue_size"]
                else "n/a (no queues on the bus to look at)",
                "0",
                self.stats["drops"] == 0 if self.stats["queue_size"] else None,
            ),
            row(
                "event → socket p50 / p99 / max",
                f"{p50:.0f} / {p99:.0f} / {max(lat, default=0):.0f} ms",
                f"p99 < {LATENCY_TARGET_MS:g} ms",
                bool(lat) and p99 < LATENCY_TARGET_MS,
            ),
            row("server CPU time (whole landing)", f"{self.stats['cpu_s']:.1f} s"),
            row(
                "loop lag p99: server / pages' client",
                f"{self.stats['lag_p99_ms']:.0f} / {self.stats['client_lag_p99_ms']:.0f} ms",
            ),
            row("server warnings logged", str(sum(self.stats["warnings"].values()))),
            row("load average 1/5/15 min (at the end)", " / ".join(f"{x:.1f}" for x in self.load)),
        ]

    def note(self) -> str:
        def counts(c: dict[str, int]) -> str:
            return ", ".join(f"{k} ×{n}" for k, n in sorted(c.items(), key=lambda kv: -kv[1])) or "none"

        top = dict(sorted(self.stats["warnings"].items(), key=lambda kv: -kv[1])[:3])
        return (
            f"events: {counts(self.stats['events'])}; renders: {counts(self.stats['renders'])}; "
            f"warnings: {counts(top)}"
        )


def _png(i: int, blue: int = 99) -> bytes:
    buf = io.BytesIO()  # one solid colour per image, lossless: distinct bytes, so no upload is a duplicate
    PILImage.new("RGB", (64, 48), (i % 256, (i // 256) % 256, blue)).save(buf, "PNG")
    return buf.getvalue()


async def _post(http: httpx.AsyncClient, i: int, *, wait: bool = False, blue: int = 99) -> int:
    r = await http.post(
        f"/api/images?wait={str(wait).lower()}", files={"files": (f"{i}.png", _png(i, blue), "image/png")}
    )
    r.raise_for_status()
    item = r.json()["items"][0]
    if not item["ok"] or item["duplicate"]:
        raise RuntimeError(f"benchmark upload {i} not accepted as new: {item}")
    return int(item["image"]["id"])


async def _read(ws: Any, page: Page, warm_up: int, progress: list[float]) -> None:
    async for raw in ws:
        now = time.monotonic()
        if not isinstance(raw, str) or '"fragment"' not in raw:
            continue
        html = json.loads(raw).get("html", "")
        for tag in _ARTICLE.findall(html):
            if (m := _ID.search(tag)) is None:
                continue
            page.cards += 1
            progress[1] = now
            image_id, stage = int(m.group(1)), (s.group(1) if (s := _STAGE.search(tag)) else "")
            # Not checked against the upload's id: a card may arrive before the upload's response does.
            if stage == "done" and image_id != warm_up and image_id not in page.done:
                page.done[image_id] = now
                progress[0] += 1


async def _run(port: int, control: Connection, sockets: int, images: int) -> FeedResult:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        warm_up = await _post(http, 0, wait=True, blue=200)  # first caption, first index write
        pages = [Page() for _ in range(sockets)]
        wanted: set[int] = set()
        progress = [0.0, time.monotonic()]  # done cards received, last fragment's arrival
        gate = asyncio.Semaphore(20)

        async def open_page() -> Any:
            async with gate:
                return await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws", origin=Origin(base), open_timeout=120, ping_interval=None
                )

        conns = await asyncio.gather(*(open_page() for _ in range(sockets)))  # each subscribed once open
        readers = [
            asyncio.create_task(_read(ws, p, warm_up, progress)) for ws, p in zip(conns, pages, strict=True)
        ]
        control.send("reset")
        control.recv()
        lag = LoopLagMonitor()
        lag.start()
        start = time.monotonic()
        queue = list(range(images))

        async def uploader() -> None:
            while queue:
                wanted.add(await _post(http, queue.pop(0)))

        await asyncio.gather(*(uploader() for _ in range(4)))
        while time.monotonic() - start < DEADLINE_S:
            await asyncio.sleep(0.1)
            if time.monotonic() - progress[1] > (DRAINED_S if progress[0] >= sockets * images else QUIET_S):
                break
        landing = max((t for p in pages for t in p.done.values()), default=time.monotonic()) - start
        lag.stop()
        control.send("stats")
        stats: dict[str, Any] = control.recv()
        stats["client_lag_p99_ms"] = lag.p99_ms()
        await asyncio.gather(*(ws.close() for ws in conns))
        await asyncio.gather(*readers, return_exceptions=True)
    latencies, ready_at = [], [start]
    for image_id in wanted:
        records = stats["published"].get(image_id, [])
        # The event that turned the image ready: by its status where the event says, else the last one.
        ready = [t for t, _k, status in records if status == "ready"] or [t for t, *_ in records[-1:]]
        if ready:
            ready_at.append(ready[0])
            latencies += [(p.done[image_id] - ready[0]) * 1000 for p in pages if image_id in p.done]
    captioned = max(ready_at) - start
    return FeedResult(sockets, images, pages, stats, latencies, landing, captioned, os.getloadavg(), wanted)


def bench_feed(sockets: int = 200, images: int = 100) -> FeedResult:
    """A real server in a child process over a throw-away SQLite database; `sockets` pages open on /ws
    while `images` distinct uploads (4 at a time, `wait=false`) are captioned."""
    with tempfile.TemporaryDirectory(prefix="capsearch-feed-") as tmp:
        from capsearch.db.migrate import upgrade

        root = Path(tmp)
        settings = Settings(
            _env_file=None,
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{root / 'bench.db'}"),
            storage=StorageSettings(dir=root / "media"),
            models=ModelSettings(profile="tiny", cache_dir=root / "models", allow_download=False),
            caption_batch=BatchSettings(max_batch_size=8, max_wait_ms=20, queue_limit=1024),
            rate_limits=RateLimitSettings(enabled=False),
        )
        upgrade(settings.database.url)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve_main, args=(settings.model_dump_json(), child))
        proc.start()
        try:
            if not parent.poll(300):
                raise RuntimeError("benchmark server did not start")
            return asyncio.run(_run(parent.recv(), parent, sockets, images))
        finally:
            parent.send("stop")
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
