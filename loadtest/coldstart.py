"""Time `capsearch serve` from process start to the first 200 on /readyz (docs/benchmarks.md "Cold start").

Usage: python loadtest/coldstart.py [--runs 3] [-- extra serve args]. The server uses whatever
CAPSEARCH_* settings the environment holds (profile, database, storage); the database must be migrated.
Prints one line per run, the server's own "startup:" breakdown line, and the median.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def one_run(capsearch: str, extra: list[str]) -> tuple[float, str]:
    port = free_port()
    # A file, not a pipe: nobody reads the server's log until it has stopped.
    with tempfile.TemporaryFile("w+") as logfile:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [capsearch, "serve", "--host", "127.0.0.1", "--port", str(port), *extra],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}/readyz"
            while not ready(url):
                if proc.poll() is not None:
                    logfile.seek(0)
                    raise SystemExit(f"server exited with {proc.returncode}:\n{logfile.read()}")
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        logfile.seek(0)
        out = logfile.read()
    breakdown = next((line for line in out.splitlines() if "startup:" in line), "(no startup line)")
    return elapsed, breakdown


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("serve_args", nargs="*")
    args = p.parse_args()
    capsearch = str(Path(sys.executable).parent / "capsearch")
    times = []
    for i in range(args.runs):
        elapsed, breakdown = one_run(capsearch, args.serve_args)
        times.append(elapsed)
        load = os.getloadavg()[0]
        print(f"run {i + 1}: ready in {elapsed:.2f} s (load {load:.2f})\n  {breakdown.strip()}")
    print(f"median: {statistics.median(times):.2f} s over {len(times)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
