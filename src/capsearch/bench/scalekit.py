"""Real processes for the scale-out benchmark (capsearch.bench.scale): a scratch PostgreSQL database,
a Redis key prefix of its own, web replicas (`capsearch serve`) and model workers (`capsearch worker`)
as subprocesses, all removed again however the run ends (Ctrl-C and SIGTERM included)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import numpy as np
import redis
from PIL import Image as PILImage
from sqlalchemy import text
from sqlalchemy.engine import make_url

from capsearch.db.session import create_engine

REDIS_URL = os.environ.get("CAPSEARCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Any database on the server: scratch databases are created beside it and dropped afterwards.
POSTGRES_URL = os.environ.get(
    "CAPSEARCH_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
START_TIMEOUT_S = 600.0  # a first start may convert base-size models (CAPSEARCH_BENCH_SCALE_MODELS=base)


def missing_services() -> str | None:
    """Why the benchmark cannot run here (Redis or PostgreSQL unreachable), or None."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        return f"no Redis at {REDIS_URL} ({e}); set CAPSEARCH_BENCH_REDIS_URL"
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as e:
        return f"no PostgreSQL at {POSTGRES_URL} ({type(e).__name__}); set CAPSEARCH_BENCH_POSTGRES_URL"
    return None


async def _admin(*statements: str) -> None:
    engine = create_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextmanager
def scratch_database(prefix: str = "capsearch_scale") -> Iterator[str]:
    """A fresh database at the latest migration; dropped on the way out."""
    from capsearch.db.migrate import upgrade

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        migrations = logging.getLogger("alembic.runtime.migration")
        level = migrations.level
        migrations.setLevel(logging.WARNING)  # a line per migration per scratch database buries the tables
        try:
            upgrade(url)
        finally:
            migrations.setLevel(level)
        yield url
    finally:
        asyncio.run(_admin(drop))


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt wherever the benchmark is, so the `with` blocks
    holding its processes and data unwind at once. (asyncio.run's own Ctrl-C handling only cancels
    the main task, and a cancellation swallowed by a database driver would leave the run waiting.)"""

    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log.stem} exited ({self.popen.returncode}):\n{self.tail()}")


@dataclass
class Cluster:
    """Processes sharing one database, one media directory and (if `prefix`) one Redis prefix."""

    root: Path
    db_url: str
    prefix: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
        env |= {
            "CAPSEARCH_DATABASE__URL": self.db_url,
            "CAPSEARCH_STORAGE__DIR": str(self.root / "media"),
            "CAPSEARCH_MODELS__CACHE_DIR": str(self.root / "models"),
            "CAPSEARCH_MODELS__ALLOW_DOWNLOAD": "false",
            "CAPSEARCH_RATE_LIMITS__ENABLED": "false",
            # Silero would hear the benchmark's tone as no voice; the loudness rule is the same in both modes.
            "CAPSEARCH_VOICE__VAD": "false",
        }
        if self.prefix is not None:
            env |= {"CAPSEARCH_BROKER__URL": REDIS_URL, "CAPSEARCH_BROKER__PREFIX": self.prefix}
        return env | self.settings | extra

    def _spawn(self, name: str, args: list[str], **extra: str) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "capsearch.cli", *args],
                cwd=self.root,  # no .env or relative model cache of the caller's
                env=self.env(**extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    def web(self, name: str) -> Proc:
        """`capsearch serve` with a search index of its own; call `wait_ready` before using it."""
        port = free_port()
        proc = self._spawn(
            name,
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            CAPSEARCH_SEARCH__INDEX_DIR=str(self.root / f"index-{name}"),
        )
        proc.url = f"http://127.0.0.1:{port}"
        return proc

    def worker(self, name: str, fake_batch_s: float | None = None) -> Proc:
        args = ["worker"] + ([] if fake_batch_s is None else ["--fake-batch-s", str(fake_batch_s)])
        return self._spawn(name, args)

    def wait_ready(self, *procs: Proc) -> None:
        """Every worker has said so in its log and every replica answers 200 on /readyz."""
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = list(procs)
        while waiting:
            proc = waiting[0]
            proc.check()
            if proc.url:
                try:
                    ready = httpx.get(f"{proc.url}/readyz", timeout=5).status_code == 200
                except httpx.HTTPError:
                    ready = False
            else:
                ready = any(
                    line.startswith("capsearch worker ") and line.endswith(" ready")
                    for line in proc.log.read_text(errors="replace").splitlines()
                )
            if ready:
                waiting.pop(0)
            elif time.monotonic() > deadline:
                raise RuntimeError(f"{proc.log.stem} not ready in {START_TIMEOUT_S:.0f} s:\n{proc.tail()}")
            else:
                time.sleep(0.1)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(15)
        self.procs.clear()
        if self.prefix is not None:
            client = redis.Redis.from_url(REDIS_URL)
            try:
                keys = list(client.scan_iter(f"{self.prefix}:*"))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()


@contextmanager
def cluster(root: Path, db_url: str, *, distributed: bool, **settings: str) -> Iterator[Cluster]:
    prefix = f"bench-scale-{uuid.uuid4().hex[:10]}" if distributed else None
    c = Cluster(root, db_url, prefix, settings)
    try:
        yield c
    finally:
        c.close()


def png(i: int, tag: int) -> bytes:
    """A small solid image, distinct for each (i, tag): no upload is a duplicate of another."""
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 48), (i % 256, (i // 256) % 256, tag)).save(buf, "PNG")
    return buf.getvalue()


def jpegs(count: int, seed: int = 7) -> list[bytes]:
    """Distinct photo-like 640×480 JPEGs (gradients, shapes, noise)."""
    from capsearch.bench.offline import sample_images

    out = []
    for image in sample_images(count, size=(640, 480), seed=seed):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def tone_wav(seconds: float = 2.0, rate: int = 16_000) -> bytes:
    """16-bit mono WAV: a warbling tone loud enough to count as speech by the loudness rule."""
    import wave

    t = np.arange(int(seconds * rate)) / rate
    wave_ = 0.3 * np.sin(2 * np.pi * (220 + 80 * np.sin(2 * np.pi * 3 * t)) * t)
    wave_ += np.random.default_rng(0).normal(0, 0.02, t.size)
    pcm = (np.clip(wave_, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def machine_note() -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs; load average 1/5/15 min {load} at the end"


def model_env(root: Path) -> tuple[dict[str, str], str]:
    """The models of the "both modes" table: the tiny profile, or with CAPSEARCH_BENCH_SCALE_MODELS=base
    BLIP at base size (random weights, the real compute: no real BLIP weights here) on the default
    backends, the real MiniLM and the Whisper directory CAPSEARCH_BENCH_WHISPER_DIR (e.g. whisper-base
    from tools/whisper_base_offline.sh). Returns (settings, what the table's title says)."""
    cache = str(root / "models")
    if os.environ.get("CAPSEARCH_BENCH_SCALE_MODELS") != "base":
        return {"CAPSEARCH_MODELS__PROFILE": "tiny", "CAPSEARCH_MODELS__CACHE_DIR": cache}, (
            "TINY PROFILE (random-weight tiny BLIP and tiny Whisper of the real architectures, the real "
            "all-MiniLM-L6-v2; CAPSEARCH_BENCH_SCALE_MODELS=base for the default models' sizes)"
        )
    from capsearch.ml.tiny import build_random_blip_base

    whisper = os.environ["CAPSEARCH_BENCH_WHISPER_DIR"]
    blip = root / "blip-base-random"
    model, processor = build_random_blip_base()
    model.save_pretrained(blip)
    processor.save_pretrained(blip)
    env = {"CAPSEARCH_MODELS__CACHE_DIR": cache, "CAPSEARCH_MODELS__CAPTIONER_ID": str(blip)}
    env["CAPSEARCH_MODELS__TRANSCRIBER_ID"] = whisper
    return env, (
        f"BLIP-base size (random weights, {os.environ.get('CAPSEARCH_MODELS__CAPTIONER_BACKEND', 'auto')} "
        f"backend), Whisper from {Path(whisper).name}, the real all-MiniLM-L6-v2"
    )
