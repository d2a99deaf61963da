"""A web replica's connection to the broker: Redis, the reply channel, the event relay, and the
stand-ins for models that run on workers."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import redis as redis_sync
from redis.asyncio import Redis

from capsearch.broker.captions import CaptionQueue
from capsearch.broker.feed import EventRelay, IndexFeed
from capsearch.broker.health import Census
from capsearch.broker.index import FeedIndexer
from capsearch.broker.keys import Keys
from capsearch.broker.rpc import RemoteBatcher, RpcClient
from capsearch.broker.settings import BrokerSettings
from capsearch.broker.uploads import SharedUploadRegistry
from capsearch.config import BatchSettings, Settings, UploadSettings
from capsearch.errors import BrokerUnavailableError
from capsearch.events import EventBus
from capsearch.shutdown import ShutdownClock, stop_within

log = logging.getLogger(__name__)


def process_name(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def connect(settings: BrokerSettings) -> Redis:
    assert settings.url is not None
    return Redis.from_url(settings.url, socket_connect_timeout=5, health_check_interval=10)


@dataclass
class WebBroker:
    settings: BrokerSettings
    redis: Redis
    keys: Keys
    census: Census
    client: RpcClient
    queue: CaptionQueue
    relay: EventRelay
    origin: str

    async def uploads(self, settings: UploadSettings, parent: Path) -> SharedUploadRegistry:
        """Socket uploads in this replica's own folder of the shared store, resumable on any replica.
        Folders of replicas gone for longer than `stale_partials_s` are deleted."""
        await asyncio.to_thread(_remove_stale, parent, self.settings.stale_partials_s)
        return SharedUploadRegistry(
            settings,
            parent / self.origin,
            redis=self.redis,
            keys=self.keys,
            holder=self.origin,
            census=self.census,
        )

    async def start_remote(
        self, stack: AsyncExitStack, clock: ShutdownClock, model: str, batch: BatchSettings
    ) -> RemoteBatcher[Any, Any]:
        """The queue of a model that runs on workers; stopped with the rest of the lifespan."""
        remote: RemoteBatcher[Any, Any] = RemoteBatcher(model, batch, self.client, self.census)
        await remote.start()
        stack.push_async_callback(stop_within, clock, remote.stop, batch.shutdown_timeout_s)
        return remote

    async def follow_index(self, stack: AsyncExitStack, parts: dict[str, Any]) -> FeedIndexer:
        """The replica's indexer, checked against the database and then following the change feed
        from the position read before that check (so no change falls between the two)."""
        indexer = FeedIndexer(ring=self.ring, **parts)
        feed = IndexFeed(
            redis=self.redis,
            keys=self.keys,
            settings=self.settings,
            sessions=parts["sessions"],
            indexer=indexer,
        )
        await feed.start_position()
        await indexer.start()
        stack.push_async_callback(indexer.close)
        await feed.start()
        stack.push_async_callback(feed.stop)  # stops first: nothing applies changes to a closed index
        return indexer

    async def ring(self, image_id: int) -> None:
        """Other replicas read the change feed at once (they poll it anyway, should this be lost)."""
        try:
            await self.redis.publish(self.keys.index_doorbell(), str(image_id))
        except Exception as e:
            log.warning("index doorbell: %s", e)


async def start_web_broker(stack: AsyncExitStack, settings: BrokerSettings, bus: EventBus) -> WebBroker:
    redis = connect(settings)
    stack.push_async_callback(redis.aclose)
    try:
        await cast(Awaitable[bool], redis.ping())
    except Exception as e:
        raise BrokerUnavailableError(
            f"CAPSEARCH_BROKER__URL is set but Redis does not answer there ({e}). Start Redis, or unset "
            "it to run everything in this one process."
        ) from e
    keys, origin = Keys(settings.prefix), process_name("web")
    client = RpcClient(redis, keys, origin, settings.request_deadline_s)
    await client.start()
    stack.push_async_callback(client.stop)
    relay = EventRelay(redis, keys, bus, origin)
    await relay.start()
    stack.push_async_callback(relay.stop)
    return WebBroker(
        settings, redis, keys, Census(redis, keys), client, CaptionQueue(redis, keys), relay, origin
    )


def _remove_stale(parent: Path, ttl_s: float) -> None:
    if parent.is_dir():
        for folder in parent.iterdir():
            if folder.is_dir() and folder.name.startswith("web-") and _idle_for(folder) > ttl_s:
                shutil.rmtree(folder, ignore_errors=True)


def _idle_for(folder: Path) -> float:
    """Seconds since anything in `folder` (or the folder itself) last changed."""
    times = [folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())]
    return time.time() - max(times)


class RemoteModelInfo:
    """What a web replica knows of a model that runs on workers: its name, no weights."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model_id = f"{name} (on model workers)"

    def load(self) -> None:
        pass

    def predict(self, batch: list[Any]) -> list[Any]:
        raise RuntimeError(f"the {self.name} runs on model workers")

    def close(self) -> None:
        pass


class RemoteEmbedderInfo(RemoteModelInfo):
    """The embedder the workers run: its label and width, which the search index is built for."""

    def __init__(self, label: str, dim: int) -> None:
        super().__init__("embedder")
        self.label, self.dim = label, dim

    def predict(self, batch: list[str]) -> list[np.ndarray]:
        raise RuntimeError("the embedder runs on model workers")


def remote_embedder(settings: Settings, wait_log_s: float = 10.0) -> RemoteEmbedderInfo:
    """Blocking (the model loader's thread): the embedder an embedder worker registered. Each worker
    registers it at start and it is kept, so this waits only before the very first worker ever ran."""
    broker = settings.broker
    assert broker.url is not None
    client = redis_sync.Redis.from_url(broker.url, socket_connect_timeout=5)
    key = Keys(broker.prefix).embedder_info()
    waited = 0.0
    try:
        while True:
            info = cast(dict[bytes, bytes], client.hgetall(key))
            if info:
                return RemoteEmbedderInfo(info[b"label"].decode(), int(info[b"dim"]))
            if waited % wait_log_s == 0:
                log.warning(
                    "waiting for an embedder worker to register (`capsearch worker --models embedder`)"
                )
            time.sleep(0.5)
            waited += 0.5
    finally:
        client.close()
