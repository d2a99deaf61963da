"""The start-up breakdown and the one-at-a-time model loader (capsearch.startup)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from capsearch.db import migrate
from capsearch.startup import ModelLoader, StartupTimer, _union, process_age_s


class Recorder:
    """A Model that notes when it loads and closes, and whether another load overlapped it."""

    name = "recorder"
    active = 0
    overlapped = False
    lock = threading.Lock()

    def __init__(self, log: list[str], role: str, fail: bool = False) -> None:
        self.log, self.role, self.fail = log, role, fail

    def load(self) -> None:
        with Recorder.lock:
            Recorder.active += 1
            Recorder.overlapped |= Recorder.active > 1
        time.sleep(0.05)
        with Recorder.lock:
            Recorder.active -= 1
        if self.fail:
            raise RuntimeError(f"{self.role} is missing")
        self.log.append(f"load {self.role}")

    def predict(self, batch: list[str]) -> list[str]:
        return batch

    def close(self) -> None:
        self.log.append(f"close {self.role}")


def test_union_counts_overlapping_spans_once() -> None:
    assert _union([(0, 2), (1, 3), (5, 6)]) == pytest.approx(4)
    assert _union([]) == 0


def test_process_age_is_the_age_of_this_process() -> None:
    age = process_age_s()
    assert age is not None and age > 0  # pytest itself has been running for a while


def test_summary_names_every_step_and_the_model_share() -> None:
    timer = StartupTimer()
    timer.lap("imports")
    with timer.step("captioner load", model=True):
        time.sleep(0.02)
    with timer.step("index check"):
        pass
    line = timer.summary()
    assert line.startswith("startup: imports ")
    assert "captioner load 0.0" in line and "index check" in line and "other" in line
    assert "model loading 0.0" in line
    assert timer.model_wall_s() >= 0.02


async def test_models_load_one_at_a_time_in_order_and_all_close() -> None:
    log: list[str] = []
    timer = StartupTimer()
    loader = ModelLoader(timer)
    futures = [loader.submit(role, lambda role=role: Recorder(log, role)) for role in ("a", "b", "c")]
    models = [await f for f in futures]
    assert [m.role for m in models] == ["a", "b", "c"]
    assert not Recorder.overlapped
    await loader.aclose()
    assert log == ["load a", "load b", "load c", "close a", "close b", "close c"]
    assert {s.name for s in timer.steps} == {"a load", "b load", "c load"}


async def test_a_failed_load_raises_and_the_loaded_ones_still_close() -> None:
    log: list[str] = []
    loader = ModelLoader(StartupTimer())
    first = loader.submit("a", lambda: Recorder(log, "a"))
    broken = loader.submit("b", lambda: Recorder(log, "b", fail=True))
    loader.submit("c", lambda: Recorder(log, "c"))
    await first
    with pytest.raises(RuntimeError, match="b is missing"):
        await broken
    await asyncio.wait_for(loader.aclose(), 5)
    assert "close a" in log and "close b" not in log


def test_script_head_agrees_with_alembic() -> None:
    assert migrate.script_head() == migrate.head_revision("sqlite+aiosqlite:///unused.db")
