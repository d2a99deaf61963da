"""The load test's summary: per-endpoint rates and latencies from Locust's CSV, refusals apart from
failures, the server's memory and open files over the run, and the upload check."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sample:
    t: float  # seconds since the load began
    rss_mb: float
    fds: int
    load1: float


@dataclass
class Outcome:
    failures: int = 0  # failures other than coded refusals
    refusals: int = 0
    missed: list[str] = field(default_factory=list)  # targets not met, one line each


def endpoint_table(stats_csv: Path) -> str:
    rows = list(csv.DictReader(stats_csv.open()))
    cols = ("requests", "fails", "req/s", "p50 ms", "p95 ms", "p99 ms")
    head = f"{'endpoint':<28} {cols[0]:>8} {cols[1]:>6} " + " ".join(f"{c:>7}" for c in cols[2:])
    lines = [head, "-" * len(head)]
    for r in rows:
        name = "TOTAL" if r["Name"] == "Aggregated" else f"{r['Type']} {r['Name']}"
        lines.append(
            f"{name:<28} {r['Request Count']:>8} {r['Failure Count']:>6} {float(r['Requests/s']):>7.1f} "
            f"{r['50%']:>7} {r['95%']:>7} {r['99%']:>7}"
        )
    return "\n".join(lines)


def split_failures(failures_csv: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(coded refusals, real failures), each as "endpoint: message" -> occurrences."""
    refused: dict[str, int] = {}
    failed: dict[str, int] = {}
    if not failures_csv.exists():
        return refused, failed
    for r in csv.DictReader(failures_csv.open()):
        # Locust stores the exception's repr, e.g. CatchResponseError('coded 503 busy').
        message = r["Error"]
        key = f"{r['Method']} {r['Name']}: {message}"
        target = refused if "coded " in message else failed
        target[key] = target.get(key, 0) + int(r["Occurrences"])
    return refused, failed


def memory_table(samples: list[Sample], warmup_s: float) -> tuple[str, float | None]:
    """Lines about RSS and fds, and the RSS drift (end vs first sample after warm-up) in percent."""
    if not samples:
        return "no samples of the server process", None
    after = [s for s in samples if s.t >= warmup_s] or samples[-1:]
    first, warm, last = samples[0], after[0], samples[-1]
    peak = max(s.rss_mb for s in samples)
    drift = (last.rss_mb - warm.rss_mb) / warm.rss_mb * 100
    loads = [s.load1 for s in samples]
    lines = [
        f"server RSS: start {first.rss_mb:.0f} MB, after warm-up ({warm.t:.0f} s) {warm.rss_mb:.0f} MB, "
        f"end {last.rss_mb:.0f} MB, peak {peak:.0f} MB; drift after warm-up {drift:+.1f}%",
        f"server open files: start {first.fds}, after warm-up {warm.fds}, end {last.fds}, "
        f"max {max(s.fds for s in samples)}",
        "server RSS each minute (MB): "
        + " ".join(f"{s.rss_mb:.0f}" for s in samples if int(s.t) % 60 < 5 or s is last),
        f"load average (1 min) while loading: min {min(loads):.1f}, mean {sum(loads) / len(loads):.1f}, "
        f"max {max(loads):.1f} ({len(samples)} samples)",
    ]
    return "\n".join(lines), drift
