"""Dynamic batching of single requests into `Model.predict` calls, run off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from time import perf_counter
from typing import Generic, TypeVar

from capsearch.batching import metrics
from capsearch.batching.arbiter import ComputeArbiter
from capsearch.batching.requests import Priority, Request
from capsearch.config import BatchSettings
from capsearch.errors import BusyError, ModelError, ShuttingDownError
from capsearch.ml.base import Model

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


class Batcher(Generic[I, O]):
    """Queues single requests for one model and feeds them to it in batches, on one worker thread or
    on `workers` threads for a model that can run that many predict() calls at once."""

    def __init__(
        self,
        model: Model[I, O],
        settings: BatchSettings,
        *,
        name: str | None = None,
        holds: ComputeArbiter | None = None,
        hold_priorities: frozenset[Priority] = frozenset(Priority),
        workers: int = 1,
    ) -> None:
        self.name: str = name or model.name
        self.workers = max(1, workers)
        # Foreground batchers hold the arbiter for each request, from submit until it is answered:
        # background models give way to it at their yield points.
        self._arbiter = holds
        self._hold_priorities = hold_priorities
        self._model = model
        self._max_batch = settings.max_batch_size
        self._max_wait = settings.max_wait_ms / 1000
        self._queue_limit = settings.queue_limit
        # The epsilon keeps e.g. 0.29 * 100 from flooring to 28; at least one slot so background can run.
        self._background_limit = max(1, int(settings.background_share * settings.queue_limit + 1e-9))
        self._interactive: deque[Request[I, O]] = deque()
        self._background: deque[Request[I, O]] = deque()
        self._wakeup = asyncio.Event()
        self._running: dict[int, list[Request[I, O]]] = {}  # each worker's batch
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._accepting = False
        self._stopped = False
        self._depth_gauge = metrics.QUEUE_DEPTH.labels(model=self.name)
        self._depth_gauge.set(0)

    @property
    def running(self) -> bool:
        """The worker is up and accepting requests."""
        return self._accepting and bool(self._tasks) and not any(task.done() for task in self._tasks)

    @property
    def background_limit(self) -> int:
        """How many background requests may wait at once before `submit` answers busy."""
        return self._background_limit

    @property
    def depth(self) -> int:
        """Pending requests, not counting the batch that is running."""
        return len(self._interactive) + len(self._background)

    async def start(self) -> None:
        """Start the worker; the model must already be loaded."""
        if self._stopped:
            raise RuntimeError(f"batcher {self.name!r} was stopped and cannot be restarted")
        if self._tasks:
            return
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
        self._accepting = True
        start = asyncio.get_running_loop().create_task
        self._tasks = [start(self._work(i), name=f"batcher-{self.name}-{i}") for i in range(self.workers)]

    def submit(
        self,
        item: I,
        priority: Priority = Priority.INTERACTIVE,
        on_start: Callable[[], I | None] | None = None,
    ) -> asyncio.Future[O]:
        """Enqueue one request and return the future its result will land in."""
        if not self._accepting:
            raise ShuttingDownError(f"The server is stopping; the {self.name} model takes no new requests.")
        if self.depth >= self._queue_limit:
            self._busy()
        if priority is Priority.BACKGROUND and len(self._background) >= self._background_limit:
            self._busy()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[O] = loop.create_future()
        request = Request(
            item=item, priority=priority, enqueued=loop.time(), future=future, on_start=on_start
        )
        if self._arbiter is not None and priority in self._hold_priorities:
            self._arbiter.hold()  # released by _on_done, which every way of ending a request reaches
        future.add_done_callback(partial(self._on_done, request))
        self._queue(priority).append(request)
        self._depth_gauge.set(self.depth)
        self._wakeup.set()
        return future

    async def run(self, item: I, priority: Priority = Priority.INTERACTIVE) -> O:
        """Submit one request and wait for its result."""
        future = self.submit(item, priority)
        try:
            return await future
        except asyncio.CancelledError:
            # Awaiting already cancels the future; doing it explicitly keeps that a guarantee of ours.
            future.cancel()
            raise

    # A plain `timeout` argument is the agreed interface; asyncio.timeout() would cancel the cleanup too.
    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Refuse new work, let queued work finish within `timeout`, then fail what is left."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        self._wakeup.set()
        tasks = set(self._tasks)
        try:
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=timeout)
                if pending:
                    log.warning("batcher %s: work unfinished after %.1fs; abandoning it", self.name, timeout)
                    # Cancelling only stops our await; a stuck predict thread keeps running, unobserved.
                    for task in pending:
                        task.cancel()
                    await asyncio.wait(pending)
        finally:
            for task in tasks:
                task.cancel()
            running = [request for batch in self._running.values() for request in batch]
            leftover = [*running, *self._interactive, *self._background]
            self._running = {}
            self._interactive.clear()
            self._background.clear()
            self._depth_gauge.set(0)
            message = f"The server stopped before the {self.name} model finished this request."
            for request in leftover:
                self._fail(request, ShuttingDownError(message))
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    def _busy(self) -> None:
        metrics.REQUESTS.labels(model=self.name, outcome="busy").inc()
        raise BusyError(f"The {self.name} model is busy right now; please try again in a moment.")

    def _queue(self, priority: Priority) -> deque[Request[I, O]]:
        return self._interactive if priority is Priority.INTERACTIVE else self._background

    def _on_done(self, request: Request[I, O], future: asyncio.Future[O]) -> None:
        if self._arbiter is not None and request.priority in self._hold_priorities:
            # Also when a caller cancels a request in a running batch: nobody waits for it any more.
            self._arbiter.release()
        if not future.cancelled():
            return
        metrics.REQUESTS.labels(model=self.name, outcome="cancelled").inc()
        # Free its queue slot now rather than when the worker reaches it.
        try:
            self._queue(request.priority).remove(request)
        except ValueError:
            return  # already taken into a batch or drained by stop()
        self._depth_gauge.set(self.depth)

    async def _work(self, worker: int) -> None:
        while True:
            try:
                batch = await self._next_batch()
                if batch is None:
                    return
                self._running[worker] = batch
                await self._run_batch(batch)
            except Exception as exc:
                # A bug here must not strand callers or kill the worker; fail the batch and carry on.
                log.exception("batcher %s: unexpected error in the worker", self.name)
                for request in self._running.get(worker, []):
                    self._fail(request, self._model_error(f"internal error: {exc}", exc))
                await asyncio.sleep(0)
            # Not in a `finally`: on cancellation stop() still needs the running batch to fail it.
            self._running.pop(worker, None)

    async def _next_batch(self) -> list[Request[I, O]] | None:
        """Wait for work and collect a batch, or return None once stopping with nothing left."""
        loop = asyncio.get_running_loop()
        while True:
            while not self.depth:
                if not self._accepting:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
            first = (self._interactive or self._background)[0]
            # The window counts from the first request's enqueue, so one that already waited while the
            # model was busy does not wait again.
            deadline = first.enqueued + self._max_wait
            while self._accepting and self.depth < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._wakeup.wait()
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                return batch

    def _take(self) -> list[Request[I, O]]:
        # With several workers a free one takes its share; the others, freeing soon, run the rest
        # beside it (a batch of three partials takes ~2x one; two of them side by side, ~1.35x).
        size = min(self._max_batch, -(-self.depth // self.workers))
        batch: list[Request[I, O]] = []
        for queue in (self._interactive, self._background):
            while queue and len(batch) < size:
                request = queue.popleft()
                if not request.future.done():
                    batch.append(request)
        self._depth_gauge.set(self.depth)
        return batch

    async def _run_batch(self, batch: list[Request[I, O]]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait_histogram = metrics.QUEUE_WAIT.labels(model=self.name)
        metrics.BATCH_SIZE.labels(model=self.name).observe(len(batch))
        inputs = []
        for request in batch:
            wait_histogram.observe(now - request.enqueued)
            fresh = None
            if request.on_start is not None:
                try:
                    fresh = request.on_start()
                except Exception:
                    log.exception("batcher %s: on_start callback failed", self.name)
            inputs.append(request.item if fresh is None else fresh)
        started = perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._model.predict, inputs)
        except Exception as exc:
            log.error("batcher %s: predict failed on a batch of %d", self.name, len(batch), exc_info=exc)
            message = f"The {self.name} model failed on a batch of {len(batch)}: {exc}"
            for request in batch:
                self._fail(request, self._model_error(message, exc))
            return
        finally:
            metrics.MODEL_SECONDS.labels(model=self.name).observe(perf_counter() - started)
        if not isinstance(outputs, list) or len(outputs) != len(batch):
            got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            message = f"The {self.name} model returned {got} results for a batch of {len(batch)} inputs."
            log.error("batcher %s: %s", self.name, message)
            for request in batch:
                self._fail(request, self._model_error(message, None))
            return
        ok = metrics.REQUESTS.labels(model=self.name, outcome="ok")
        for request, output in zip(batch, outputs, strict=True):
            # A caller may have cancelled while its batch ran; its result is simply dropped.
            if not request.future.done():
                request.future.set_result(output)
                ok.inc()

    def _model_error(self, message: str, cause: BaseException | None) -> ModelError:
        error = ModelError(message)
        error.__cause__ = cause
        return error

    def _fail(self, request: Request[I, O], error: Exception) -> None:
        if not request.future.done():
            request.future.set_exception(error)
            metrics.REQUESTS.labels(model=self.name, outcome="error").inc()
