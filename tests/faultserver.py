"""`capsearch serve` for the fault tests, with a captioner the test can hold from outside the process.

Run as `python -m tests.faultserver`; settings come from the environment exactly as for `capsearch
serve` (CAPSEARCH_*). The real model (the tiny profile) captions, but while the file named by
CAPSEARCH_TEST_HOLD exists no batch is let through; each batch that arrives touches the file named by
CAPSEARCH_TEST_ENTERED first, and each finished one appends a line to CAPSEARCH_TEST_DONE, so the test
knows a caption is in the model, or finished, without reading logs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from PIL import Image as PILImage

from capsearch.app import create_app, default_captioner
from capsearch.config import Settings
from capsearch.ml.base import Model
from capsearch.server import Server, uvicorn_config

# A held model is let through after this long anyway, so a test that failed half-way never leaves a
# process that cannot exit.
HOLD_LIMIT_S = 120


class HeldCaptioner:
    def __init__(self, inner: Model[PILImage.Image, str], hold: Path, entered: Path, done: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_id = getattr(inner, "model_id", inner.name)
        self.hold, self.entered, self.done = hold, entered, done

    def load(self) -> None:
        self.inner.load()

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        self.entered.touch()
        deadline = time.monotonic() + HOLD_LIMIT_S
        while self.hold.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        captions = self.inner.predict(batch)
        with self.done.open("a") as f:
            f.write(f"{len(batch)}\n")
        return captions

    def close(self) -> None:
        self.inner.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    hold, entered, done = (Path(os.environ[f"CAPSEARCH_TEST_{k}"]) for k in ("HOLD", "ENTERED", "DONE"))

    def captioner(s: Settings) -> Model[PILImage.Image, str]:
        return HeldCaptioner(default_captioner(s), hold, entered, done)  # type: ignore[return-value]

    app = create_app(settings, captioner_factory=captioner)
    Server(uvicorn_config(app, settings.server, log_level="info")).run()


if __name__ == "__main__":
    main()
