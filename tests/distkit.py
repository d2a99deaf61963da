"""Distributed mode as real processes on loopback: web replicas (`capsearch serve`) and model workers
(`capsearch worker --fake-batch-s`) sharing one PostgreSQL database, one media directory and one
Redis, under a key prefix of their own so tests never see each other's jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from tests.apikit import until
from tests.browserkit import free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT_S = 60
CAPSEARCH = str(Path(sys.executable).parent / "capsearch")


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    name: str = ""
    url: str = ""

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Topology:
    db_url: str
    root: Path
    batch_s: float = 0.3
    prefix: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:10]}")
    procs: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
        env |= {
            "CAPSEARCH_DATABASE__URL": self.db_url,
            "CAPSEARCH_STORAGE__DIR": str(self.root / "media"),  # the directory every role mounts
            "CAPSEARCH_BROKER__URL": REDIS_URL,
            "CAPSEARCH_BROKER__PREFIX": self.prefix,
            "CAPSEARCH_BROKER__VISIBILITY_TIMEOUT_S": "2",
            "CAPSEARCH_BROKER__HEARTBEAT_S": "0.3",
            "CAPSEARCH_BROKER__WORKER_TTL_S": "1.5",
            "CAPSEARCH_BROKER__FEED_POLL_S": "0.5",
            "CAPSEARCH_CAPTION_BATCH__MAX_BATCH_SIZE": "4",
            "CAPSEARCH_RATE_LIMITS__ENABLED": "false",
            "CAPSEARCH_VOICE__VAD": "false",
        }
        return env | extra

    def _spawn(self, cmd: list[str], name: str, **extra: str) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(cmd, cwd=self.root, env=self.env(**extra), stdout=out, stderr=out)
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    async def web(self, name: str, **env: str) -> Proc:
        """A web replica with its own search index (each replica keeps one, in memory and on its disk)."""
        port = free_port()
        index = str(self.root / f"index-{name}")
        proc = self._spawn(
            [CAPSEARCH, "serve", "--port", str(port), "--host", "127.0.0.1"], name,
            CAPSEARCH_SEARCH__INDEX_DIR=index, **env,
        )  # fmt: skip
        proc.url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=proc.url, timeout=5) as http:
            await until(lambda: _answers(http, proc), f"{name} to start", START_TIMEOUT_S)
        return proc

    async def worker(self, name: str, models: str | None = None, *, fake: bool = True, **env: str) -> Proc:
        """A model worker for `models` (all of them by default): stand-ins costing `batch_s` a batch, or
        with fake=False the real models of the profile `env` names (CAPSEARCH_MODELS__PROFILE=tiny)."""
        cmd = [CAPSEARCH, "worker", *(["--models", models] if models else [])]
        proc = self._spawn(cmd + (["--fake-batch-s", str(self.batch_s)] if fake else []), name, **env)

        def ready() -> bool:
            assert proc.popen.poll() is None, f"{name} exited:\n{proc.tail()}"
            for line in proc.log.read_text(errors="replace").splitlines():
                if line.startswith("capsearch worker ") and line.endswith(" ready"):
                    proc.name = line.split()[2]
                    return True
            return False

        await until(ready, f"{name} to start", START_TIMEOUT_S)
        return proc

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        proc.popen.send_signal(sig)
        proc.popen.wait(30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait(30)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{self.prefix}:*"))
        if keys:
            client.delete(*keys)


async def _answers(http: httpx.AsyncClient, proc: Proc) -> bool:
    assert proc.popen.poll() is None, f"the replica exited:\n{proc.tail()}"
    try:
        return (await http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False
