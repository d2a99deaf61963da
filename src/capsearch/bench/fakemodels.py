"""Models of negligible cost behind the real `Model` contract (load / predict(list) -> list / close), for
benchmarks that measure everything but the models: the app starts in a second and captions instantly."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from PIL import Image as PILImage

from capsearch.ml.speech import Clip

FAKE_DIM = 384  # all-MiniLM-L6-v2's width, so the search index is the size the real app builds
# An image whose top-left pixel is this colour makes the fake captioner fail (a poison job in tests).
POISON_PIXEL = (255, 0, 254)


class FakeCaptioner:
    """Describes an image by its size and top-left colour (distinct images get distinct captions).

    `batch_s`: each batch costs this long whatever its size, like a model on its own device (the
    scale-out benchmark's workers). A batch holding a `POISON_PIXEL` image fails."""

    name = "captioner"
    model_id = "fake-captioner (bench)"

    def __init__(self, batch_s: float = 0.0) -> None:
        self.batch_s = batch_s

    def load(self) -> None:
        pass

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        if self.batch_s:
            time.sleep(self.batch_s)
        pixels = [im.convert("RGB").getpixel((0, 0)) for im in batch]
        if POISON_PIXEL in pixels:
            raise RuntimeError("the fake captioner's poison image")
        return [f"a picture {im.width}x{im.height} rgb{px}" for im, px in zip(batch, pixels, strict=True)]

    def close(self) -> None:
        pass


class FakeEmbedder:
    """A unit vector seeded by the text's hash: deterministic, normalised, no meaning."""

    name = "embedder"
    label = "fake-embedder (bench)"
    dim = FAKE_DIM

    def load(self) -> None:
        pass

    def predict(self, batch: list[str]) -> list[np.ndarray]:
        out = []
        for text in batch:
            seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return out

    def close(self) -> None:
        pass


class FakeTranscriber:
    """Hears nothing."""

    name = "transcriber"
    model_id = "fake-transcriber (bench)"

    def load(self) -> None:
        pass

    def predict(self, batch: list[Clip]) -> list[str]:
        return ["" for _ in batch]

    def close(self) -> None:
        pass
