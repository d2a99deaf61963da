"""One deadline for the whole shutdown: `server.shutdown_grace_s` from the moment it begins.

The server begins it as soon as it is told to stop (SIGTERM), before it waits for open requests, so
requests waiting for captions (`wait=true`) can be answered 503 `shutting_down` at the deadline
instead of holding the process; the lifespan begins it too (if nothing did earlier) and gives each
of its stopping steps only what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ShutdownClock:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._deadline: float | None = None
        # Set once the grace has run out: whoever still waits gives up.
        self.expired = asyncio.Event()

    @property
    def begun(self) -> bool:
        return self._deadline is not None

    def begin(self) -> None:
        """Start the countdown (once; later calls keep the first deadline). Runs on the event loop."""
        if self._deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.grace_s
        loop.call_at(self._deadline, self.expired.set)

    def left(self) -> float:
        """Seconds until the deadline: the whole grace before shutdown begins, never below zero."""
        if self._deadline is None:
            return self.grace_s
        return max(0.0, self._deadline - asyncio.get_running_loop().time())


async def stop_within(
    clock: ShutdownClock, stop: Callable[[float], Awaitable[None]], timeout_s: float
) -> None:
    """Run a `stop(timeout)` step of the shutdown with its timeout cut to what is left of the grace."""
    await stop(min(timeout_s, clock.left()))
