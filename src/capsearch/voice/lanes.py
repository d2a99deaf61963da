"""Finals and live partials on separate lanes, so a final never holds up anyone's partials.

A full-window final costs ~0.9 s of whisper-base on this 2-core CPU, a live partial ~0.2 s. On one
queue, a final started in someone's pause makes every other speaker's next partial wait behind it
(measured: a partial 0.17 s alone took 1.06 s beside a running final). A backend that can run two
passes at once (CTranslate2 with `inter_threads=2`: one set of weights, two workers) gets two
batchers over the same model: finals on one, partials on the other. Beside a final a partial then
takes 0.28 s; the final, which runs alone once the speaker has stopped, keeps its speed. A backend
with one lane (transformers) keeps one queue for both kinds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from capsearch.batching import Batcher, Priority
from capsearch.ml.base import Model
from capsearch.ml.speech import Clip


def lanes_of(model: Model[Clip, str]) -> int:
    """How many passes the transcriber can run at once (a backend without `lanes` runs one)."""
    return max(1, int(getattr(model, "lanes", 1)))


class TranscriberLanes:
    """The transcriber's queue as the voice flow sees it: `submit`/`run` pick the lane by the clip's
    kind. With one batcher, both kinds share it."""

    def __init__(self, finals: Batcher[Clip, str], partials: Batcher[Clip, str] | None = None) -> None:
        self.finals = finals
        self.partials = partials or finals

    @property
    def running(self) -> bool:
        return self.finals.running and self.partials.running

    def _lane(self, clip: Clip) -> Batcher[Clip, str]:
        return self.finals if clip.final else self.partials

    def submit(
        self,
        item: Clip,
        priority: Priority = Priority.INTERACTIVE,
        on_start: Callable[[], None] | None = None,
    ) -> asyncio.Future[str]:
        return self._lane(item).submit(item, priority, on_start)

    async def run(self, item: Clip, priority: Priority = Priority.INTERACTIVE) -> str:
        return await self._lane(item).run(item, priority)
