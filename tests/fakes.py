"""Fakes that implement the real Model interface (load / predict(list) -> list / close)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from PIL import Image as PILImage


class FakeCaptioner:
    """Describes an image by its size and top-left colour; can be gated or made to fail."""

    name = "captioner"
    model_id = "fake-captioner"

    def __init__(self, fail: Callable[[list[PILImage.Image]], bool] | None = None) -> None:
        self.batches: list[int] = []
        self.sizes: list[list[tuple[int, int]]] = []  # each batch's image sizes, to tell requests apart
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.loaded = False
        self.closed = False
        self._fail = fail

    def load(self) -> None:
        self.loaded = True

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        self.entered.set()
        if not self.gate.wait(30):
            raise TimeoutError("test gate never opened")
        self.batches.append(len(batch))
        self.sizes.append([im.size for im in batch])
        if self._fail is not None and self._fail(batch):
            raise RuntimeError("the fake model failed on purpose")
        return [f"a picture {im.width}x{im.height} rgb{im.getpixel((0, 0))}" for im in batch]

    def close(self) -> None:
        self.closed = True
