"""`make load`: the Locust load test against the demo server (tiny models) on a scratch PostgreSQL database.

Creates the database, migrates it, starts `capsearch serve` on a free port with its own storage,
runs Locust headless, samples the server's RSS and open files, checks that every acknowledged upload
is `ready` and findable, prints the summary, stops the server and drops the database. Exits 1 when a
target is missed: a failure other than a coded 429/503, an acknowledged upload not ready or not found,
or (soak) RSS drift of 10% or more after warm-up.

Settings (environment): LOAD_USERS (20; soak 50), LOAD_TIME (60s; soak 10m), LOAD_SPAWN_RATE (5),
LOAD_WARMUP_S (a fifth of the run, at most 120), LOAD_ADMIN_URL (postgresql://postgres@127.0.0.1:5432/postgres).
The server runs with CAPSEARCH_RATE_LIMITS__ENABLED=false (every simulated person shares 127.0.0.1)
and CAPSEARCH_SEARCH__MAX_K=1000 (so the final check can list more images per caption).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import psutil
from report import Outcome, Sample, endpoint_table, memory_table, split_failures

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DRIFT_LIMIT_PCT = 10.0


def seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    name = f"capsearch_load_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin(*sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for statement in sql:
                await conn.execute(statement)
        finally:
            await conn.close()

    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    asyncio.run(admin(drop, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(drop))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def demo_server(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    subprocess.run([BIN / "capsearch", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                BIN / "capsearch",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while not _ready(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not become ready; its log:\n{log.read_text()}")
                time.sleep(0.2)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Sampler(threading.Thread):
    """The server's RSS and open file descriptors every `every` seconds, with the machine's load."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.process.memory_info().rss / 2**20
                fds = self.process.num_fds()
            except psutil.Error:
                return
            t = time.monotonic() - self.started
            self.samples.append(Sample(t, rss, fds, os.getloadavg()[0]))
            self.stop.wait(self.every)


def check_uploads(port: int, ids: list[int], outcome: Outcome, wait_s: float = 300) -> str:
    """Every acknowledged upload `ready`, and found by a search for its own caption (see docs)."""
    if not ids:
        outcome.missed.append("no upload was acknowledged")
        return "no acknowledged uploads"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        deadline = time.monotonic() + wait_s
        pending = set(ids)
        images: dict[int, dict[str, object]] = {}
        while pending and time.monotonic() < deadline:
            for image_id in sorted(pending):
                r = client.get(f"/api/images/{image_id}")
                if r.status_code == 200 and r.json()["status"] in ("ready", "failed"):
                    images[image_id] = r.json()
                    pending.discard(image_id)
            if pending:
                time.sleep(2)
        not_ready = sorted(pending | {i for i, im in images.items() if im["status"] != "ready"})
        by_caption: dict[str, set[int]] = {}
        for image_id, image in images.items():
            if image["status"] == "ready":
                by_caption.setdefault(str(image["caption"]), set()).add(image_id)
        confirmed, tie_covered, lost = 0, 0, []
        for caption, group in by_caption.items():
            hits = client.get("/api/search", params={"q": caption, "k": 1000}).json()["hits"]
            found = {h["image"]["id"] for h in hits}
            confirmed += len(group & found)
            if len(hits) >= 1000:
                # More images share this caption than one search may list: the rest are only known
                # to tie with the listed ones if every listed hit has this caption and the top score.
                top = max(h["similarity"] for h in hits)
                same = all(h["image"]["caption"] == caption and h["similarity"] == top for h in hits)
                if same:
                    tie_covered += len(group - found)
                else:
                    lost += sorted(group - found)
            else:
                lost += sorted(group - found)
    if not_ready:
        outcome.missed.append(f"{len(not_ready)} acknowledged upload(s) not ready: {not_ready[:10]}")
    if lost:
        outcome.missed.append(f"{len(lost)} ready upload(s) not found by their caption: {lost[:10]}")
    return (
        f"acknowledged uploads: {len(ids)}; ready {len(ids) - len(not_ready)}; found by a search for "
        f"their caption: {confirmed} listed + {tie_covered} tied beyond the 1000 listed "
        f"({len(by_caption)} distinct caption(s)); not found {len(lost)}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--soak", action="store_true", help="50 users for 10 minutes; RSS drift is a target")
    args = p.parse_args()
    users = int(os.environ.get("LOAD_USERS") or (50 if args.soak else 20))
    run_time = os.environ.get("LOAD_TIME") or ("10m" if args.soak else "60s")
    warmup_s = float(os.environ.get("LOAD_WARMUP_S") or min(120.0, seconds(run_time) / 5))
    admin_url = os.environ.get("LOAD_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    work = Path(tempfile.mkdtemp(prefix="capsearch-load-"))
    outcome = Outcome()
    drift: float | None = None
    try:
        with scratch_database(admin_url) as db_url:
            env = {
                **os.environ,
                "CAPSEARCH_MODELS__PROFILE": "tiny",
                "CAPSEARCH_DATABASE__URL": db_url,
                "CAPSEARCH_STORAGE__DIR": str(work / "media"),
                "CAPSEARCH_RATE_LIMITS__ENABLED": "false",
                "CAPSEARCH_SEARCH__MAX_K": "1000",
            }
            port = free_port()
            print(f"load: {users} users for {run_time}, demo server on :{port}, database {db_url}")
            with demo_server(env, port, work / "server.log") as server:
                sampler = Sampler(server.pid)
                sampler.start()
                locust = [
                    str(BIN / "locust"),
                    *("-f", str(HERE / "locustfile.py"), "--headless", "--only-summary"),
                    *("-u", str(users), "-r", os.environ.get("LOAD_SPAWN_RATE", "5"), "-t", run_time),
                    *("--host", f"http://127.0.0.1:{port}", "--csv", str(work / "locust")),
                    *("--stop-timeout", "10", "--loglevel", "WARNING"),
                ]
                results = work / "results.json"
                subprocess.run(locust, env={**env, "LOAD_RESULTS_FILE": str(results)}, check=False)
                sampler.stop.set()
                sampler.join()
                extra = json.loads(results.read_text()) if results.exists() else {}
                print("\n== capsearch load summary ==")
                print(endpoint_table(work / "locust_stats.csv"))
                refused, failed = split_failures(work / "locust_failures.csv")
                outcome.refusals, outcome.failures = sum(refused.values()), sum(failed.values())
                for title, table in (("coded refusals (not failures)", refused), ("failures", failed)):
                    print(f"{title}: {sum(table.values())}")
                    for key, n in sorted(table.items(), key=lambda kv: -kv[1]):
                        print(f"  {n:>6}  {key}")
                print("counts:", json.dumps(extra.get("counts", {}), sort_keys=True))
                lines, drift = memory_table(sampler.samples, warmup_s)
                print(lines)
                print(check_uploads(port, extra.get("acked_ids", []), outcome))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if outcome.failures:
        outcome.missed.append(f"{outcome.failures} failure(s) other than coded 429/503")
    if args.soak and drift is not None and drift >= DRIFT_LIMIT_PCT:
        outcome.missed.append(f"RSS drift {drift:+.1f}% after warm-up (target < {DRIFT_LIMIT_PCT:g}%)")
    print("targets:", "all met" if not outcome.missed else "MISSED")
    for line in outcome.missed:
        print(f"  - {line}")
    return 1 if outcome.missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
