"""Prometheus metrics for the model batchers, kept in a registry of their own."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Not the global registry: several apps built in one test process would otherwise register twice.
REGISTRY = CollectorRegistry()

BATCH_SIZE = Histogram(
    "capsearch_batch_size",
    "Requests per model batch.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "capsearch_queue_wait_seconds",
    "Time a request waited in the queue before its batch started.",
    ["model"],
    registry=REGISTRY,
)
MODEL_SECONDS = Histogram(
    "capsearch_model_seconds",
    "Time one predict call took for a whole batch.",
    ["model"],
    # CPU captioning of a full batch can take well beyond the default 10 s ceiling.
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "capsearch_queue_depth",
    "Requests waiting for a batch (not yet running).",
    ["model"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "capsearch_model_requests_total",
    "Model requests by outcome: ok, error, cancelled or busy.",
    ["model", "outcome"],
    registry=REGISTRY,
)
# The compute arbiter (arbiter.py): how often, and how long, captions gave way to interactive work.
ARBITER_HELD = Gauge(
    "capsearch_arbiter_foreground",
    "Interactive model requests (queued or running) that background work gives way to.",
    registry=REGISTRY,
)
ARBITER_PAUSE_SECONDS = Histogram(
    "capsearch_arbiter_pause_seconds",
    "Time a background step waited for interactive work to finish.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
ARBITER_INTERRUPTS = Counter(
    "capsearch_arbiter_interrupts_total",
    "Background steps cancelled in flight for interactive work (each is rerun).",
    registry=REGISTRY,
)
ARBITER_GUARD_TRIPS = Counter(
    "capsearch_arbiter_guard_trips_total",
    "Times background work had waited its longest pause and ran regardless.",
    registry=REGISTRY,
)


def render_metrics() -> tuple[bytes, str]:
    """Return the exposition payload and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
