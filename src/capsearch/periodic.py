"""A background job run every few seconds for the app's lifetime (the sweepers of uploads and voice)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def sweep_interval(timeout_s: float, *, ceiling_s: float) -> float:
    """Check four times per timeout, so nothing outlives its timeout by more than a quarter of it."""
    return min(max(timeout_s / 4, 0.05), ceiling_s)


class Periodic:
    def __init__(self, name: str, interval_s: float, job: Callable[[], object | Awaitable[object]]) -> None:
        self.name = name
        self.interval_s = interval_s
        self._job = job
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                result = self._job()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # the job must outlive one bad run (a full disk, say)
                log.exception("%s failed", self.name)
