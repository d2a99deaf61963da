"""One compute arbiter per process: interactive (foreground) model work goes first on a shared CPU.

On a 2-core CPU every model competes for the same cores, so a caption batch running beside a voice
pass makes the pass ~1.5x slower. Foreground work (transcriptions, query embeddings) *holds* the
arbiter from the moment it is queued until it is done; background work (captions) calls
`checkpoint()` between its steps, which waits while anything is held. A step too long to wait out
(one vision-encoder pass, ~0.7 s) runs through `interruptible()`: a hold that arrives cancels it,
and it is rerun after the pause.

Starvation guard: background work is never held off for more than `max_pause_s` in a row (pauses at
one checkpoint, plus any cancelled attempts at the step that follows it). When that is reached it
runs unhindered — no pause, no cancel — for `min_run_s` (a step begun in that window is never
cancelled, even when it ends after it), so under endless foreground load captions slow down but
never stall.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from capsearch.batching import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ArbiterStats:
    pauses: int  # checkpoints that waited
    paused_s: float  # time spent waiting in them
    interrupts: int  # steps cancelled in flight for foreground work, and rerun
    guard_trips: int  # times the starvation guard let background work through


@dataclass(eq=False)
class _Step:
    cancel: Callable[[], None]
    # Started in the guard's unhindered window: never cancelled, or that window could be wasted.
    granted: bool = False
    fired: bool = False


class ComputeArbiter:
    """Thread-safe. `hold`/`release` come from the event loop (batchers), `checkpoint`/`interruptible`
    from model worker threads."""

    def __init__(
        self,
        *,
        max_pause_s: float = 5.0,
        min_run_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pause_s = max_pause_s
        self.min_run_s = min_run_s
        # Must be the clock Condition.wait times out by, or the guard's deadline drifts.
        self._clock = clock
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # foreground released: paused work may go on
        self._pausing = threading.Condition(lock)  # a pause began (for wait_until_paused)
        self._held = 0
        self._paused = 0
        # When background work was first held off without completing a step since; None: it is not.
        self._held_off_since: float | None = None
        self._free_until = float("-inf")
        self._steps: list[_Step] = []
        self._pauses = 0
        self._paused_s = 0.0
        self._interrupts = 0
        self._trips = 0

    # ---- foreground ------------------------------------------------------------------------

    def hold(self) -> None:
        """Foreground work is waiting or running. Cheap: it runs on the event loop."""
        with self._cond:
            self._held += 1
            metrics.ARBITER_HELD.set(self._held)
            if self._clock() < self._free_until:
                return  # the guard gave background work this window
            for step in self._steps:
                if not step.fired and not step.granted:
                    self._interrupt(step)

    def release(self) -> None:
        with self._cond:
            if self._held <= 0:
                raise RuntimeError("ComputeArbiter.release() without a matching hold()")
            self._held -= 1
            metrics.ARBITER_HELD.set(self._held)
            if not self._held:
                self._cond.notify_all()

    @contextmanager
    def foreground(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    @property
    def held(self) -> int:
        with self._cond:
            return self._held

    @property
    def paused(self) -> int:
        """Background threads waiting in a checkpoint right now."""
        with self._cond:
            return self._paused

    def wait_until_paused(self, count: int = 1, timeout: float | None = None) -> bool:
        """Block until `count` background threads wait in a checkpoint (tests and benchmarks)."""
        with self._pausing:
            return self._pausing.wait_for(lambda: self._paused >= count, timeout)

    # ---- background ------------------------------------------------------------------------

    def checkpoint(self) -> float:
        """Between two background steps: wait while foreground work is held (within the guard).
        Returns the seconds waited."""
        return self._pause(progress=True)

    def interruptible(self, step: Callable[[], T], cancel: Callable[[], None]) -> T:
        """Checkpoint, then run `step`; foreground work arriving while it runs calls `cancel` (from
        the thread that called `hold`, so it must be quick and thread-safe), which must make `step`
        return or raise soon. A cancelled step is rerun after the pause; it must be safe to rerun."""
        progress = True
        while True:
            self._pause(progress=progress)
            progress = False
            with self._cond:
                granted = self._clock() < self._free_until
                if self._held and not granted:
                    continue  # foreground work came after the pause ended: do not start under it
                registered = _Step(cancel, granted)
                self._steps.append(registered)
            try:
                return step()
            except Exception:
                if not registered.fired:
                    raise
                # Ours: the step was cancelled. A real failure shows again on the rerun.
                with self._cond:
                    self._interrupts += 1
                metrics.ARBITER_INTERRUPTS.inc()
            finally:
                with self._cond:
                    self._steps.remove(registered)

    def stats(self) -> ArbiterStats:
        with self._cond:
            return ArbiterStats(self._pauses, self._paused_s, self._interrupts, self._trips)

    # ---- internals (call with the lock held) -------------------------------------------------

    def _interrupt(self, step: _Step) -> None:
        step.fired = True
        if self._held_off_since is None:
            self._held_off_since = self._clock()
        try:
            # Under the lock: the step cannot unregister meanwhile, so a stale cancel never reaches
            # whatever its worker starts next.
            step.cancel()
        except Exception:
            log.exception("cancelling a background step failed; it runs to its end")

    def _pause(self, *, progress: bool) -> float:
        with self._cond:
            if progress:
                self._held_off_since = None
            start = self._clock()
            if not self._held or start < self._free_until:
                return 0.0
            if self._held_off_since is None:
                self._held_off_since = start
            deadline = self._held_off_since + self.max_pause_s
            self._paused += 1
            self._pausing.notify_all()
            try:
                while self._held:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        self._trip()
                        break
                    self._cond.wait(remaining)
            finally:
                self._paused -= 1
            waited = self._clock() - start
            self._pauses += 1
            self._paused_s += waited
            metrics.ARBITER_PAUSE_SECONDS.observe(waited)
            return waited

    def _trip(self) -> None:
        self._trips += 1
        metrics.ARBITER_GUARD_TRIPS.inc()
        self._free_until = self._clock() + self.min_run_s
        self._held_off_since = None
        log.debug("background work held off %.1f s: unhindered for %.1f s", self.max_pause_s, self.min_run_s)
