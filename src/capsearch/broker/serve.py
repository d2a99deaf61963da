"""A worker's side of request/reply: read a model's request streams, answer each on its channel.

Entries are read in a consumer group (`XREADGROUP`, interactive first) and handed to the worker's
local batcher, which forms the model's batches. An entry past its deadline is dropped unrun (its
caller has already been told `model_timeout`). A request a dead worker had taken is claimed by
another after `worker_ttl_s`, if its deadline still allows an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from capsearch.batching import Batcher, Priority
from capsearch.broker.health import now_ms
from capsearch.broker.keys import GROUP, Keys
from capsearch.broker.wire import Reply, decode_input, encode_output, off_loop
from capsearch.errors import CapsearchError

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]


async def ensure_group(redis: Redis, stream: str) -> None:
    with contextlib.suppress(ResponseError):  # BUSYGROUP: another worker made it first
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)


async def read_entries(
    redis: Redis, streams: list[str], consumer: str, count: int, block_ms: int
) -> list[tuple[str, Entry]]:
    """Up to `count` new entries, from the first stream that has any (streams in priority order),
    else block up to `block_ms` on all of them."""
    for stream in streams:
        got = await redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
        if got:
            return [(stream, e) for _, entries in got for e in entries]
    got = await redis.xreadgroup(GROUP, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms)
    return [(s.decode() if isinstance(s, bytes) else s, e) for s, entries in got or [] for e in entries]


async def done(redis: Redis, stream: str, entry_id: bytes) -> None:
    """Acknowledge and delete: an answered entry has nothing left to say."""
    async with redis.pipeline(transaction=True) as p:
        p.xack(stream, GROUP, entry_id)
        p.xdel(stream, entry_id)
        await p.execute()


class RpcServer:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        model: str,
        batcher: Batcher[Any, Any],
        consumer: str,
        max_batch: int,
        in_flight: int,
        reclaim_after_s: float,
    ) -> None:
        self.redis, self.keys, self.model, self.batcher = redis, keys, model, batcher
        self.consumer, self.max_batch, self.reclaim_after_s = consumer, max_batch, reclaim_after_s
        self.streams = [keys.requests(model, p) for p in (Priority.INTERACTIVE, Priority.BACKGROUND)]
        self.in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.expired = 0

    async def run(self) -> None:
        for stream in self.streams:
            await ensure_group(self.redis, stream)
        last_reclaim = 0
        while not self._stopping:
            try:
                if now_ms() - last_reclaim > self.reclaim_after_s * 500:
                    last_reclaim = now_ms()
                    await self._reclaim()
                # Never take more than can start: what waits in Redis can still go to another worker.
                free = max(1, min(self.max_batch, self.in_flight - len(self._tasks)))
                for stream, entry in await read_entries(self.redis, self.streams, self.consumer, free, 500):
                    await self._slots.acquire()
                    task = asyncio.create_task(self._answer(stream, entry))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away for a moment: keep serving once it is back
                log.warning("%s requests: %s", self.model, e)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        self._stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

    async def _reclaim(self) -> None:
        for stream in self.streams:
            _, entries, _ = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, int(self.reclaim_after_s * 1000), count=self.max_batch
            )
            for entry in entries:
                await self._slots.acquire()
                task = asyncio.create_task(self._answer(stream, entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, stream: str, entry: Entry) -> None:
        entry_id, fields = entry
        try:
            if int(fields[b"deadline"]) < now_ms():
                self.expired += 1  # its caller has given up already
                return
            priority = Priority.BACKGROUND if stream.endswith("background") else Priority.INTERACTIVE
            request_id = fields[b"id"].decode()
            try:
                item = await off_loop(self.model, decode_input, self.model, fields)
                value = await self.batcher.run(item, priority)
                reply = Reply(request_id, True, encode_output(self.model, value))
            except CapsearchError as e:
                reply = Reply(request_id, False, code=e.code, message=e.message)
            except Exception as e:
                log.exception("%s: request %s failed", self.model, request_id)
                reply = Reply(request_id, False, code="model_error", message=f"The {self.model} failed: {e}")
            await self.redis.publish(fields[b"reply"].decode(), reply.to_bytes())
        finally:
            self._slots.release()
            with contextlib.suppress(Exception):
                await done(self.redis, stream, entry_id)
