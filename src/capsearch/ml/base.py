"""The one contract every model follows. Models never import FastAPI.

`load()` does the expensive work (weights, device placement) and is called once, off the event loop.
`predict(batch)` takes a list and returns a list of the same length, in order; the batcher checks it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

# Invariant: `predict` takes and returns lists, which are invariant themselves.
In = TypeVar("In")
Out = TypeVar("Out")


@runtime_checkable
class Model(Protocol[In, Out]):
    name: str

    def load(self) -> None: ...

    def predict(self, batch: list[In]) -> list[Out]: ...

    def close(self) -> None: ...


@runtime_checkable
class Embedder(Model[str, np.ndarray], Protocol):
    """A text embedder: `predict` returns one L2-normalised float32 vector of `dim` values per text."""

    # The stable name of the weights, stored beside every vector (vectors of two models never mix).
    label: str
    dim: int
