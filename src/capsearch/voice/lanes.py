"""Finals and live partials on separate lanes, so a final never holds up anyone's partials, and
several speakers' partials run side by side.

A full-window final costs ~0.9 s of whisper-base on this 2-core CPU, a live partial ~0.1–0.2 s. On one
queue, a final started in someone's pause makes every other speaker's next partial wait behind it
(measured: a partial 0.17 s alone took 1.06 s queued behind a final, 0.28 s beside it). A backend
that can run several passes at once (`lanes`) gets one batcher for finals and one for partials whose
workers fill the other lanes: a free worker takes every partial queued, so partials that pile up while
all workers are busy still go as one batch. CTranslate2's partials are decoder-bound (the encoder is
~0.03 s of a 0.12 s int8 partial here) and a second thread does not speed one up (0.117 s on one,
0.135 s on two), so it runs one single-threaded partial worker per core. A backend with one lane
(transformers) keeps one queue for both kinds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
        on_start: Callable[[], Clip | None] | None = None,
    ) -> asyncio.Future[str]:
        return self._lane(item).submit(item, priority, on_start)

    async def run(self, item: Clip, priority: Priority = Priority.INTERACTIVE) -> str:
        return await self._lane(item).run(item, priority)


# start(name, workers): a started batcher over the transcriber; name None for the finals' own queue.
StartBatcher = Callable[[str | None, int], Awaitable[Batcher[Clip, str]]]


async def start_lanes(model: Model[Clip, str], start: StartBatcher) -> TranscriberLanes:
    """One batcher for finals and, on a model with more lanes, one for partials with a worker each."""
    finals = await start(None, 1)
    lanes = lanes_of(model)
    return TranscriberLanes(finals, await start("transcriber-partials", lanes - 1) if lanes > 1 else None)
