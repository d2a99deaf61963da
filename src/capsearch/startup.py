"""Where start-up time goes: named steps from process start to ready, logged as one line.

`capsearch serve` makes the timer before anything heavy (so "imports" is what Python spent before
the command ran) and hands it to the app; the lifespan times its steps and logs the breakdown once
the app is ready. Steps may overlap (the models load in parallel threads): the line gives each
step's own time, the wall time of the model steps together, and the rest as "other".
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from capsearch.ml.base import Model

log = logging.getLogger("capsearch.startup")
M = TypeVar("M", bound="Model[Any, Any]")


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None where that cannot be read."""
    try:
        # Field 22 of /proc/self/stat is the start time in clock ticks after boot; the command name
        # (field 2) may contain spaces, so split after its closing parenthesis.
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)


@dataclass(frozen=True)
class Step:
    name: str
    start: float
    end: float
    model: bool

    @property
    def seconds(self) -> float:
        return self.end - self.start


class StartupTimer:
    """Times named steps against one origin: process start where known (else the timer's creation)."""

    def __init__(self, *, from_process_start: bool = False) -> None:
        now = time.perf_counter()
        age = process_age_s() if from_process_start else None
        self.origin = now - age if age is not None else now
        self.steps: list[Step] = []
        self._lock = threading.Lock()  # model steps finish in their own threads

    def lap(self, name: str) -> None:
        """Record `name` as the time from the end of the last step (or the origin) until now."""
        with self._lock:
            start = max((s.end for s in self.steps), default=self.origin)
            self.steps.append(Step(name, start, time.perf_counter(), model=False))

    @contextmanager
    def step(self, name: str, *, model: bool = False) -> Iterator[None]:
        """Time the block as `name`; `model=True` counts it as model loading. Thread-safe."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.steps.append(Step(name, start, time.perf_counter(), model))

    def elapsed(self) -> float:
        return time.perf_counter() - self.origin

    def model_wall_s(self) -> float:
        """Wall time during which at least one model step ran (parallel loads count once)."""
        return _union([(s.start, s.end) for s in self.steps if s.model])

    def summary(self) -> str:
        total = self.elapsed()
        with self._lock:
            steps = sorted(self.steps, key=lambda s: s.start)
        covered = _union([(s.start, s.end) for s in steps])
        parts = [f"{s.name} {s.seconds:.2f} s" for s in steps]
        parts.append(f"other {max(0.0, total - covered):.2f} s")
        models = self.model_wall_s()
        return (
            f"startup: {', '.join(parts)}; ready in {total:.2f} s "
            f"(model loading {models:.2f} s, everything else {total - models:.2f} s)"
        )

    def log_ready(self) -> None:
        log.info("%s", self.summary())


def _union(spans: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class ModelLoader:
    """Builds and loads models one after another in one worker thread, in the order submitted, while
    the event loop goes on with the start-up work that does not need them.

    One at a time on purpose: transformers' `from_pretrained` swaps `torch.nn.init`'s functions and
    `PreTrainedModel` methods process-wide while it runs, so two loads in parallel threads race
    (measured: one of them ended with weights left on the meta device). Inference beside a load is safe.
    """

    def __init__(self, timer: StartupTimer) -> None:
        self.timer = timer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._loads: list[Future[Any]] = []
        self._waiters: list[asyncio.Future[Any]] = []

    def submit(self, role: str, build: Callable[[], M]) -> asyncio.Future[M]:
        """Start `build()` then `.load()` of the model as soon as the worker is free; await the result."""

        def run() -> M:
            with self.timer.step(f"{role} load", model=True):
                model = build()
                model.load()
            return model

        future = self._pool.submit(run)
        self._loads.append(future)
        waiter = asyncio.wrap_future(future)
        self._waiters.append(waiter)
        return waiter

    async def aclose(self) -> None:
        """Drop loads not yet begun, wait for the one running (a thread cannot be cut), close every model
        that loaded: on shutdown, and when start-up fails part-way."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Also collects the outcomes start-up never awaited, so none is reported as "never retrieved".
        await asyncio.gather(*self._waiters, return_exceptions=True)
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        for future in self._loads:
            if not future.cancelled() and future.exception() is None:
                future.result().close()
