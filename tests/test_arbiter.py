"""The compute arbiter on its own: real threads, ordered by events and the arbiter's own state.

Only the starvation-guard tests use time, and only as the guard's own setting (a tiny max pause),
never to order events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from capsearch.batching import ComputeArbiter
from capsearch.batching.metrics import render_metrics

SAFETY = 10.0  # seconds; only a net against hangs


class Background(threading.Thread):
    """Runs `fn` on its own thread and keeps its result (or error)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def outcome(self) -> Any:
        assert self.done.wait(SAFETY), "background thread never finished"
        if self.error is not None:
            raise self.error
        return self.result


def test_checkpoint_passes_when_nothing_is_held() -> None:
    arbiter = ComputeArbiter()
    assert arbiter.checkpoint() == 0.0
    assert arbiter.stats().pauses == 0


def test_checkpoint_blocks_while_held_and_resumes_on_release() -> None:
    arbiter = ComputeArbiter(max_pause_s=SAFETY * 10)
    arbiter.hold()
    caption = Background(arbiter.checkpoint)
    assert arbiter.wait_until_paused(1, SAFETY)
    assert not caption.done.is_set()
    arbiter.release()
    waited = caption.outcome()
    assert waited > 0
    stats = arbiter.stats()
    assert (stats.pauses, stats.guard_trips) == (1, 0)
    assert stats.paused_s == pytest.approx(waited)


def test_holds_are_counted_and_only_the_last_release_resumes() -> None:
    arbiter = ComputeArbiter(max_pause_s=SAFETY * 10)
    arbiter.hold()
    with arbiter.foreground():
        assert arbiter.held == 2
        caption = Background(arbiter.checkpoint)
        assert arbiter.wait_until_paused(1, SAFETY)
    # One hold is left: nothing wakes the paused thread (it is only notified at zero).
    assert arbiter.held == 1
    assert arbiter.paused == 1
    assert not caption.done.is_set()
    arbiter.release()
    caption.outcome()
    assert arbiter.held == 0
    with pytest.raises(RuntimeError):
        arbiter.release()


def test_starvation_guard_bounds_a_pause_then_lets_background_run() -> None:
    arbiter = ComputeArbiter(max_pause_s=0.05, min_run_s=SAFETY * 10)
    arbiter.hold()  # never released
    assert arbiter.checkpoint() >= 0.05
    assert arbiter.stats().guard_trips == 1
    # Within the unhindered window: no pause, even though foreground work is still held.
    assert arbiter.checkpoint() == 0.0
    assert arbiter.stats().pauses == 1


def test_after_the_unhindered_window_background_gives_way_again() -> None:
    arbiter = ComputeArbiter(max_pause_s=0.02, min_run_s=0.0)
    arbiter.hold()
    assert arbiter.checkpoint() >= 0.02
    assert arbiter.checkpoint() >= 0.02
    assert arbiter.stats().guard_trips == 2


class Step:
    """An indivisible step that runs until it finishes or is cancelled (then it raises)."""

    def __init__(self, finish_on_attempt: int = 2) -> None:
        self.attempts = 0
        self.started = [threading.Event() for _ in range(4)]
        self.cancelled = threading.Event()
        self.finish = threading.Event()
        self._finish_on = finish_on_attempt

    def __call__(self) -> str:
        self.attempts += 1
        self.cancelled.clear()
        self.started[self.attempts - 1].set()
        if self.attempts >= self._finish_on:
            assert self.finish.wait(SAFETY)
            return f"done on attempt {self.attempts}"
        assert self.cancelled.wait(SAFETY), "never cancelled"
        raise RuntimeError("Infer Request was canceled")

    def cancel(self) -> None:
        self.cancelled.set()


def test_foreground_work_cancels_the_step_in_flight_which_reruns_after_the_pause() -> None:
    arbiter = ComputeArbiter(max_pause_s=SAFETY * 10)
    step = Step()
    caption = Background(lambda: arbiter.interruptible(step, step.cancel))
    assert step.started[0].wait(SAFETY)
    arbiter.hold()  # cancels attempt 1 at once; the caption then waits for the release
    assert arbiter.wait_until_paused(1, SAFETY)
    assert step.attempts == 1
    arbiter.release()
    assert step.started[1].wait(SAFETY)
    step.finish.set()
    assert caption.outcome() == "done on attempt 2"
    assert arbiter.stats().interrupts == 1


def test_a_step_that_fails_on_its_own_is_not_rerun() -> None:
    arbiter = ComputeArbiter()

    def broken() -> None:
        raise ValueError("a real failure")

    with pytest.raises(ValueError, match="real failure"):
        arbiter.interruptible(broken, lambda: None)
    assert arbiter.stats().interrupts == 0


def test_a_cancel_that_comes_too_late_keeps_the_result() -> None:
    """The step finished just as foreground work arrived: its result stands, no rerun."""
    arbiter = ComputeArbiter(max_pause_s=SAFETY * 10)
    step = Step(finish_on_attempt=1)
    caption = Background(lambda: arbiter.interruptible(step, step.cancel))
    assert step.started[0].wait(SAFETY)
    arbiter.hold()  # fires cancel, which this step ignores
    step.finish.set()
    assert caption.outcome() == "done on attempt 1"
    assert step.attempts == 1
    assert arbiter.stats().interrupts == 0
    arbiter.release()


def test_cancelled_attempts_count_towards_the_guard() -> None:
    """Endless foreground work cannot keep cancelling a step: once background work has been held off
    for max_pause_s, the step runs through, and a new arrival does not cancel it."""
    arbiter = ComputeArbiter(max_pause_s=0.05, min_run_s=SAFETY * 10)
    step = Step()
    caption = Background(lambda: arbiter.interruptible(step, step.cancel))
    assert step.started[0].wait(SAFETY)
    arbiter.hold()  # never released: attempt 1 is cancelled, the pause ends by the guard
    assert step.started[1].wait(SAFETY)
    arbiter.hold()  # inside the unhindered window: attempt 2 is left alone
    step.finish.set()
    assert caption.outcome() == "done on attempt 2"
    stats = arbiter.stats()
    assert (stats.interrupts, stats.guard_trips) == (1, 1)


def test_pauses_and_interrupts_are_exported_as_metrics() -> None:
    text = render_metrics()[0].decode()
    for name in (
        "capsearch_arbiter_foreground",
        "capsearch_arbiter_pause_seconds_count",
        "capsearch_arbiter_interrupts_total",
        "capsearch_arbiter_guard_trips_total",
    ):
        assert name in text


def test_a_step_begun_in_the_unhindered_window_is_not_cancelled_after_it() -> None:
    """With a hand-moved clock: the guard trips at once, the rerun starts inside the window, and a
    hold arriving after the window has ended leaves it running (else that window was wasted)."""
    now = [0.0]
    arbiter = ComputeArbiter(max_pause_s=5.0, min_run_s=1.0, clock=lambda: now[0])
    step = Step()
    proceed = threading.Event()

    def first_fails_late() -> str:
        if step.attempts == 0:
            try:
                return step()
            finally:
                assert proceed.wait(SAFETY)  # raise only once the clock has moved
        return step()

    caption = Background(lambda: arbiter.interruptible(first_fails_late, step.cancel))
    assert step.started[0].wait(SAFETY)
    arbiter.hold()  # cancels attempt 1 at t=0: held off since 0
    now[0] = 6.0  # past max_pause_s: the pause after attempt 1 trips the guard (window until 7)
    proceed.set()
    assert step.started[1].wait(SAFETY)
    assert arbiter.stats().guard_trips == 1
    now[0] = 8.0  # the window is over
    arbiter.hold()
    assert not step.cancelled.is_set()
    step.finish.set()
    assert caption.outcome() == "done on attempt 2"
    assert arbiter.stats().interrupts == 1
