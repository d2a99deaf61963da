"""Request/reply over Redis for interactive model work (voice passes, query embeddings).

A request is an entry on the model's stream (one per priority) carrying a unique id, the channel to
answer on and a deadline. Workers answer on that channel; the replica that sent it resolves the one
waiting future with that id. A caller stops waiting at the deadline (`model_timeout`) and forgets the
id, so a late answer finds nobody and is dropped: it can never reach another page's request.

`RemoteBatcher` is the web replica's stand-in for a local model batcher: the same `submit`/`run`
interface, so the voice flow, the search and the gallery do not know where the model runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from capsearch.batching import Batcher, Priority
from capsearch.batching import metrics as batch_metrics
from capsearch.broker.channel import follow_channel
from capsearch.broker.health import Census
from capsearch.broker.keys import Keys
from capsearch.broker.wire import Reply, decode_output, encode_input, off_loop
from capsearch.config import BatchSettings
from capsearch.errors import BrokerUnavailableError, CapsearchError, ModelTimeoutError, ShuttingDownError

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

# Old entries are trimmed: a request stream never holds more than this many (answered ones included).
STREAM_MAXLEN = 10_000


class RpcClient:
    """Sends requests and routes their replies, for one process (its own reply channel)."""

    def __init__(self, redis: Redis, keys: Keys, owner: str, deadline_s: float) -> None:
        self.redis, self.keys, self.deadline_s = redis, keys, deadline_s
        self.channel = keys.replies(owner)
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.late_replies = 0

    @property
    def running(self) -> bool:
        return self._listener is not None and not self._listener.done()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="rpc-replies")
        # A request sent before the subscription exists could be answered into the void.
        async with asyncio.timeout(10):
            await self._subscribed.wait()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ShuttingDownError("The server is stopping."))

    async def call(self, model: str, item: Any, priority: Priority, deadline_s: float | None = None) -> Any:
        timeout = deadline_s or self.deadline_s
        request_id = uuid.uuid4().hex
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        fields: dict[Any, Any] = {
            "id": request_id,
            "reply": self.channel,
            "deadline": str(int((time.time() + timeout) * 1000)),
            **await off_loop(model, encode_input, model, item),
        }
        try:
            try:
                await self.redis.xadd(
                    self.keys.requests(model, priority), fields, maxlen=STREAM_MAXLEN, approximate=True
                )
            except RedisError as e:
                raise BrokerUnavailableError(
                    f"The model workers cannot be reached right now (Redis: {e}); please try again shortly."
                ) from e
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise ModelTimeoutError(
                f"The {model} worker did not answer within {timeout:g} s; please try again."
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            raise CapsearchError(reply.message, code=reply.code or "model_error", status_code=500)
        return decode_output(model, reply.payload)

    async def _listen(self) -> None:
        def deliver(data: bytes) -> None:
            self._deliver(Reply.from_bytes(data))

        await follow_channel(self.redis, self.channel, deliver, subscribed=self._subscribed)

    def _deliver(self, reply: Reply) -> None:
        future = self._pending.get(reply.request_id)
        if future is None or future.done():
            self.late_replies += 1  # its caller gave up at the deadline: drop it
            return
        future.set_result(reply)


class _RemoteModel:
    """Only a name: the model itself runs on a worker."""

    def __init__(self, name: str) -> None:
        self.name = name

    def load(self) -> None:
        pass

    def predict(self, batch: list[Any]) -> list[Any]:
        raise RuntimeError(f"the {self.name} model runs on a worker")

    def close(self) -> None:
        pass


class RemoteBatcher(Batcher[I, O], Generic[I, O]):
    """A model's queue whose model runs on a worker: requests go out over Redis as they come (the
    worker batches them), after a check that some worker serves the model (`no_workers` at once)."""

    def __init__(self, model: str, settings: BatchSettings, client: RpcClient, census: Census) -> None:
        super().__init__(_RemoteModel(model), settings, name=model)
        self.model = model
        self._client, self._census = client, census
        self._calls: set[asyncio.Task[None]] = set()
        self._limit = settings.queue_limit

    @property
    def running(self) -> bool:
        return self._accepting and self._client.running

    @property
    def depth(self) -> int:
        return len(self._calls)

    async def start(self) -> None:
        self._accepting = True

    def submit(
        self,
        item: I,
        priority: Priority = Priority.INTERACTIVE,
        on_start: Callable[[], I | None] | None = None,
    ) -> asyncio.Future[O]:
        if not self._accepting:
            raise ShuttingDownError(f"The server is stopping; the {self.name} model takes no new requests.")
        if len(self._calls) >= self._limit:
            self._busy()
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._call(item, priority, on_start, future))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        # A caller that stops waiting (a closed page) withdraws its request here; the worker's
        # answer, if any, is then dropped as late.
        future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        return future

    async def _call(
        self, item: I, priority: Priority, on_start: Callable[[], I | None] | None, future: asyncio.Future[O]
    ) -> None:
        try:
            await self._census.require(self.model)
            fresh = on_start() if on_start is not None else None
            item = item if fresh is None else fresh  # Batcher.submit: it may hand a fresher item
            result = await self._client.call(self.model, item, priority)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            if not future.done():
                future.set_exception(e)
            batch_metrics.REQUESTS.labels(model=self.name, outcome="error").inc()
            return
        if not future.done():
            future.set_result(result)
            batch_metrics.REQUESTS.labels(model=self.name, outcome="ok").inc()

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        self._accepting = False
        self._stopped = True
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=timeout)
        for task in list(self._calls):
            task.cancel()
