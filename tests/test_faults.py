"""Faults with real processes: a throwaway PostgreSQL cluster stopped and started mid-traffic, a server
SIGKILLed mid-upload and started again, SIGTERM while an upload waits for its caption.

Each server is a subprocess with the tiny models (`tests/faultserver.py`, `capsearch serve` with a
captioner the test can hold through a file), so what is checked is what a deployment sees: HTTP
answers, rows and stored files. Slow (servers load models): marked `faults`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from capsearch.db import migrate
from capsearch.db.session import create_engine
from tests.apikit import files, until
from tests.browserkit import free_port
from tests.conftest import photo_bytes
from tests.pgcluster import PgCluster, pg_cluster

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180  # model loading on a busy CI machine
GRACE_S = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as c:
        yield c


class Deployment:
    """One installation (a database on the cluster, a media store, a port); its servers come and go."""

    def __init__(self, cluster: PgCluster, db_url: str, root: Path, models_cache: Path) -> None:
        self.cluster = cluster
        self.db_url = db_url
        self.root = root
        self.media = root / "media"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hold_file, self.entered, self.done = root / "hold", root / "entered", root / "done"
        self.models_cache = models_cache
        self.logs: list[Path] = []

    def env(self, **maintenance: float) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
        env |= {
            "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1",
            "CAPSEARCH_DATABASE__URL": self.db_url,
            "CAPSEARCH_STORAGE__DIR": str(self.media),
            "CAPSEARCH_SERVER__HOST": "127.0.0.1",
            "CAPSEARCH_SERVER__PORT": str(self.port),
            "CAPSEARCH_SERVER__SHUTDOWN_GRACE_S": str(GRACE_S),
            "CAPSEARCH_RATE_LIMITS__ENABLED": "false",
            "CAPSEARCH_MODELS__PROFILE": "tiny",
            "CAPSEARCH_MODELS__CACHE_DIR": str(self.models_cache),
            "CAPSEARCH_MODELS__ALLOW_DOWNLOAD": "false",
            "CAPSEARCH_MODELS__DEVICE": "cpu",
            # Short enough to see the sweep and the retries work within a test.
            "CAPSEARCH_MAINTENANCE__SWEEP_INTERVAL_S": "0.5",
            "CAPSEARCH_MAINTENANCE__DB_RETRY_S": "120",
            "CAPSEARCH_TEST_HOLD": str(self.hold_file),
            "CAPSEARCH_TEST_ENTERED": str(self.entered),
            "CAPSEARCH_TEST_DONE": str(self.done),
        }
        env |= {f"CAPSEARCH_MAINTENANCE__{k.upper()}": str(v) for k, v in maintenance.items()}
        return env

    def hold(self) -> None:
        self.entered.unlink(missing_ok=True)
        self.hold_file.touch()

    def release(self) -> None:
        self.hold_file.unlink(missing_ok=True)

    def captioned(self) -> int:
        """Images the model has finished (in any server of this deployment)."""
        return sum(int(n) for n in self.done.read_text().split()) if self.done.exists() else 0

    @asynccontextmanager
    async def server(
        self, *, cli: bool = False, **maintenance: float
    ) -> AsyncIterator[subprocess.Popen[bytes]]:
        """A server process, ready (GET /readyz is 200) when this yields. `cli` runs the real
        `capsearch serve` instead of the holdable one. SIGKILLed on the way out if still running."""
        log = self.root / f"server-{len(self.logs)}.log"
        self.logs.append(log)
        cmd = [sys.executable, "-m", "tests.faultserver"]
        if cli:
            cmd = [str(Path(sys.executable).parent / "capsearch"), "serve"]
        env = self.env(**maintenance)

        def spawn() -> subprocess.Popen[bytes]:
            with log.open("wb") as out:
                # Its own working directory: a developer's .env must not change the settings under test.
                return subprocess.Popen(cmd, cwd=self.root, env=env, stdout=out, stderr=out)

        proc = await asyncio.to_thread(spawn)
        try:
            await self._until_ready(proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            await asyncio.to_thread(proc.wait, 30)

    async def _until_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                assert proc.poll() is None, f"the server exited while starting:\n{self.tail()}"
                assert time.monotonic() < deadline, f"the server never became ready:\n{self.tail()}"
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.1)

    def tail(self) -> str:
        return self.logs[-1].read_text(errors="replace")[-4000:] if self.logs else ""

    async def rows(self) -> dict[int, str]:
        engine = create_engine(self.db_url)
        try:
            async with engine.connect() as conn:
                found = await conn.execute(text("SELECT id, status FROM images"))
                return {int(i): str(s) for i, s in found}
        finally:
            await engine.dispose()


@pytest.fixture
async def deployment(cluster: PgCluster, models_cache: Path, tmp_path: Path) -> Deployment:
    db_url = await cluster.create_database(f"faults_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(migrate.upgrade, db_url)  # as `capsearch migrate` does
    return Deployment(cluster, db_url, tmp_path, models_cache)


async def status_of(http: httpx.AsyncClient, image_id: int) -> str:
    r = await http.get(f"/api/images/{image_id}")
    return str(r.json().get("status")) if r.status_code == 200 else f"HTTP {r.status_code}"


async def upload(http: httpx.AsyncClient, seed: int, *, wait: bool = False) -> httpx.Response:
    return await http.post(f"/api/images{'?wait=true' if wait else ''}", files=files(photo_bytes(seed)))


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "database_unavailable", r.text
    assert int(r.headers["Retry-After"]) > 0


async def test_outage_sigterm_and_sigkill_heal_and_lose_nothing(deployment: Deployment) -> None:
    """One deployment through three faults (each server start loads models, so they share them)."""
    d = deployment
    d.hold()
    async with d.server() as proc, httpx.AsyncClient(base_url=d.url, timeout=60) as http:
        await database_outage(d, proc, http)
        d.hold()
        waited_id = await sigterm_with_a_waiting_upload(d, proc, http)
    d.hold()
    async with d.server() as proc, httpx.AsyncClient(base_url=d.url, timeout=60) as http:
        acknowledged, left_behind = await sigkill_mid_upload(d, proc, http)
    d.release()
    # The real `capsearch serve`, with a short orphan grace so its sweep is seen at work.
    short = {"orphan_grace_s": 0.5, "temp_file_age_s": 0.5}
    async with d.server(cli=True, **short), httpx.AsyncClient(base_url=d.url, timeout=60) as http:

        async def all_ready() -> bool:
            return set((await d.rows()).values()) == {"ready"}

        # Acknowledged before SIGTERM or SIGKILL: captioned after the restart, none lost.
        await until(all_ready, "every acknowledged upload to be captioned after the restart")
        assert {waited_id, *acknowledged} <= set(await d.rows())
        await until(
            lambda: not any(p.exists() for p in left_behind), "the sweep to remove what the kill left"
        )
        assert not list(d.media.rglob(".tmp-*"))
        for kind in ("originals", "thumbs"):
            assert (await http.get(f"/media/{kind}/{ORPHAN}")).status_code == 404
        for image_id in acknowledged:
            sha = (await http.get(f"/api/images/{image_id}")).json()["sha256"]
            assert (await http.get(f"/media/thumbs/{sha}")).status_code == 200


ORPHAN = "f" * 64


async def database_outage(d: Deployment, proc: subprocess.Popen[bytes], http: httpx.AsyncClient) -> None:
    """Stopped mid-caption: 503 database_unavailable (the server stays up); started again: the captions
    finished meanwhile land without a restart, and a duplicate with wait=true answers ready."""
    first, second = await upload(http, 1), await upload(http, 2)
    assert (first.status_code, second.status_code) == (202, 202)
    ids = [r.json()["items"][0]["image"]["id"] for r in (first, second)]
    await until(d.entered.exists, "the first caption to reach the model")

    await asyncio.to_thread(d.cluster.stop)
    assert_unavailable(await http.get(f"/api/images/{ids[0]}"))
    assert_unavailable(await upload(http, 3))
    assert_unavailable(await http.get("/api/images"))
    ready = await http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable")
    assert (await http.get("/healthz")).status_code == 200
    # Both captions finish while the database is away; their writes wait for it to come back.
    d.release()
    await until(lambda: d.captioned() >= 2, "the model to finish both captions")
    assert_unavailable(await http.get(f"/api/images/{ids[1]}"))
    assert proc.poll() is None, "the server died during the outage"

    await asyncio.to_thread(d.cluster.start)
    # A duplicate with wait=true answers once the caption is in, never with it still in flight.
    again = await upload(http, 1, wait=True)
    assert again.status_code == 201, again.text
    item = again.json()["items"][0]
    assert item["duplicate"] and item["image"]["id"] == ids[0]
    assert item["image"]["status"] == "ready" and item["image"]["caption"]

    async def both_ready() -> bool:
        return [await status_of(http, i) for i in ids] == ["ready", "ready"]

    await until(both_ready, "the captions finished during the outage to land")
    assert d.captioned() == 2  # landed by the retried writes, not captioned again
    assert (await http.get("/readyz")).status_code == 200


async def sigterm_with_a_waiting_upload(
    d: Deployment, proc: subprocess.Popen[bytes], http: httpx.AsyncClient
) -> int:
    """SIGTERM while an upload waits for its held caption: 503 shutting_down once the grace runs out,
    the process exits, the row is kept. Returns its id."""
    before = set(await d.rows())
    waiting = asyncio.create_task(upload(http, 10, wait=True))
    await until(d.entered.exists, "the caption to reach the model")
    proc.send_signal(signal.SIGTERM)
    # Answered when the grace runs out, while the model is still held (for up to two minutes).
    r = await asyncio.wait_for(waiting, GRACE_S + 30)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "shutting_down" and int(r.headers["Retry-After"]) > 0
    d.release()
    # uvicorn re-raises the SIGTERM it handled once it is done: a clean exit reads as -15.
    assert await asyncio.to_thread(proc.wait, 60) in (0, -signal.SIGTERM), d.tail()
    rows = await d.rows()
    [waited_id] = set(rows) - before
    assert rows[waited_id] in ("received", "captioning")  # kept, to be captioned after the restart
    return waited_id


async def sigkill_mid_upload(
    d: Deployment, proc: subprocess.Popen[bytes], http: httpx.AsyncClient
) -> tuple[list[int], list[Path]]:
    """SIGKILL with acknowledged uploads still being captioned, a half-written temp file and files
    whose row was never inserted. Returns the acknowledged ids and the files the kill left."""
    acknowledged = await asyncio.gather(*(upload(http, 20 + i) for i in range(4)))
    assert [r.status_code for r in acknowledged] == [202] * 4
    await until(d.entered.exists, "a caption to reach the model")
    temp = d.media / "originals" / "12" / "34" / ".tmp-interrupted.jpg"
    orphans = [d.media / kind / "ff" / "ff" / f"{ORPHAN}.jpg" for kind in ("originals", "thumbs")]
    for p, data in ((temp, photo_bytes(99)[:500]), *((o, photo_bytes(98)) for o in orphans)):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    assert (await http.get(f"/media/originals/{ORPHAN}")).status_code == 404
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 30)
    ids = [r.json()["items"][0]["image"]["id"] for r in acknowledged]
    rows = await d.rows()
    assert {rows[i] for i in ids} <= {"received", "captioning"}  # killed before any caption landed
    return ids, [temp, *orphans]
