"""How a long-running model gives way to more urgent work: the yield points it offers.

A model with yield points has a `yield_to` attribute (a `Yielder`, by default `NEVER_YIELD`); the
app sets it to the process's compute arbiter (capsearch.batching.arbiter) for background models.
Defined here so that models depend on this small contract, not on the batching layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


class Yielder(Protocol):
    def checkpoint(self) -> float:
        """Between two steps: may block while more urgent work runs; returns the seconds waited."""
        ...

    def interruptible(self, step: Callable[[], T], cancel: Callable[[], None]) -> T:
        """Run `step`, which `cancel` (called from another thread) makes end early; a cancelled
        step is rerun, so it must be safe to rerun."""
        ...


class NeverYield:
    """Nothing ever waits or is cancelled: a model's yield points when nothing is wired to them."""

    def checkpoint(self) -> float:
        return 0.0

    def interruptible(self, step: Callable[[], T], cancel: Callable[[], None]) -> T:
        return step()


NEVER_YIELD = NeverYield()


@runtime_checkable
class YieldsCompute(Protocol):
    """A model with yield points."""

    yield_to: Yielder
