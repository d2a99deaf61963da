"""`capsearch worker --models captioner,transcriber,embedder`: a model worker of distributed mode.

It loads the models it was given (any subset), then serves them: caption jobs (durable, written to
the database by the worker itself: capsearch.broker.captions) and request/reply work for each model
(capsearch.broker.serve). Each model is fed through a local batcher, as in the single-process app,
with the same compute arbiter so a voice pass does not wait behind a caption batch. It heartbeats
per model while it serves; SIGTERM stops reading new work, finishes what it holds, and withdraws.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
from PIL import Image as PILImage

from capsearch.batching import Batcher, Priority
from capsearch.broker.captions import CaptionWorker
from capsearch.broker.feed import EventPublisher
from capsearch.broker.health import Census, Heartbeat
from capsearch.broker.keys import MODELS, Keys
from capsearch.broker.rpc import RemoteBatcher, RpcClient
from capsearch.broker.serve import RpcServer
from capsearch.broker.web import connect, process_name
from capsearch.compose import build_arbiter, model_label, start_batcher
from capsearch.config import Settings
from capsearch.db.session import create_engine, session_factory
from capsearch.errors import CapsearchError
from capsearch.ml.base import Embedder, Model
from capsearch.ml.yielding import YieldsCompute
from capsearch.shutdown import ShutdownClock
from capsearch.storage import ContentStore
from capsearch.voice.lanes import start_lanes

log = logging.getLogger("capsearch.worker")

Factory = Callable[[Settings], Model[Any, Any]]

# An embedder that cannot be reached now (rather than one that failed on this text).
EMBEDDER_AWAY = frozenset({"no_workers", "model_timeout", "broker_unavailable", "busy", "shutting_down"})


def default_factories() -> dict[str, Factory]:
    from capsearch.ml import factory

    return {
        "captioner": factory.build_captioner,
        "transcriber": factory.build_transcriber,
        "embedder": factory.build_embedder,
    }


def fake_factories(batch_s: float) -> dict[str, Factory]:
    """Models of fixed per-batch cost (the scale benchmark, the distributed tests)."""
    from capsearch.bench.fakemodels import FakeCaptioner, FakeEmbedder, FakeTranscriber

    return {
        "captioner": lambda _s: FakeCaptioner(batch_s),
        "transcriber": lambda _s: FakeTranscriber(),
        "embedder": lambda _s: FakeEmbedder(),
    }


def parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if not models or unknown:
        raise ValueError(f"--models takes a comma-separated subset of {', '.join(MODELS)}; got {text!r}")
    return list(dict.fromkeys(models))


async def run_worker(
    settings: Settings,
    models: list[str],
    factories: dict[str, Factory],
    stop: asyncio.Event,
    ready: Callable[[str], None] = lambda _name: None,
) -> None:
    broker = settings.broker
    keys, name = Keys(broker.prefix), process_name("worker")
    # On SIGTERM the batch in hand may finish (what is cut is taken over after the visibility timeout).
    clock = ShutdownClock(max(settings.server.shutdown_grace_s, settings.caption_batch.shutdown_timeout_s))
    async with AsyncExitStack() as stack:
        redis = connect(broker)
        stack.push_async_callback(redis.aclose)
        await redis.ping()  # type: ignore[misc]
        loaded: dict[str, Model[Any, Any]] = {}
        for model_name in models:  # one at a time: transformers' loading is not thread-safe
            model = await asyncio.to_thread(factories[model_name], settings)
            await asyncio.to_thread(model.load)
            stack.callback(model.close)
            loaded[model_name] = model
            log.info("worker %s: %s loaded (%s)", name, model_name, model_label(model))
        arbiter = build_arbiter(settings.arbiter)
        tasks: list[asyncio.Task[None]] = []
        servers: list[RpcServer] = []

        def serve(model_name: str, queue: Any, batch_size: int, in_flight: int) -> None:
            server = RpcServer(
                redis=redis, keys=keys, model=model_name, batcher=queue, consumer=name,
                max_batch=batch_size, in_flight=in_flight, reclaim_after_s=broker.worker_ttl_s,
            )  # fmt: skip
            servers.append(server)
            tasks.append(asyncio.create_task(server.run(), name=f"serve-{model_name}"))

        embed_queue: Batcher[str, np.ndarray] | None = None
        embed_label: str | None = None
        if "embedder" in loaded:
            embedder: Embedder = loaded["embedder"]  # type: ignore[assignment]
            embed_label = embedder.label
            embed_queue = await start_batcher(
                stack, clock, embedder, settings.embed_batch, holds=arbiter,
                hold_priorities=frozenset({Priority.INTERACTIVE}),
            )  # fmt: skip
            await redis.hset(keys.embedder_info(), mapping={"label": embedder.label, "dim": embedder.dim})  # type: ignore[misc]
            serve(
                "embedder", embed_queue, settings.embed_batch.max_batch_size, settings.embed_batch.queue_limit
            )
        if "transcriber" in loaded:
            transcriber = loaded["transcriber"]
            batch = settings.transcribe_batch
            lanes = await start_lanes(
                transcriber,
                lambda name, workers: start_batcher(
                    stack, clock, transcriber, batch, holds=arbiter, name=name, workers=workers
                ),
            )
            serve("transcriber", lanes, batch.max_batch_size, batch.queue_limit)
        caption_worker = None
        if "captioner" in loaded:
            captioner: Model[PILImage.Image, str] = loaded["captioner"]
            if arbiter is not None and isinstance(captioner, YieldsCompute):
                captioner.yield_to = arbiter
            batch = settings.caption_batch
            caption_queue = await start_batcher(stack, clock, captioner, batch)
            # The example gallery's captions come as requests (uploads come as durable jobs).
            serve("captioner", caption_queue, batch.max_batch_size, batch.max_batch_size)
            embed, embed_model = await _embedding(
                stack, settings, keys, name, redis, embed_queue, embed_label
            )
            engine = create_engine(settings.database.url)
            stack.push_async_callback(engine.dispose)
            publisher = EventPublisher(redis, keys, name)
            caption_worker = CaptionWorker(
                redis=redis, keys=keys, settings=broker, sessions=session_factory(engine),
                store=ContentStore(settings.storage.dir), limits=settings.limits, captioner=caption_queue,
                caption_model=model_label(captioner), embed=embed, embed_model=embed_model, consumer=name,
                max_batch=batch.max_batch_size, published=publisher.image_changed,
            )  # fmt: skip
            tasks.append(asyncio.create_task(caption_worker.run(), name="caption-jobs"))
        heartbeat = Heartbeat(redis, keys, broker, name, list(loaded))
        await heartbeat.start()
        log.info("worker %s serving %s", name, ", ".join(loaded))
        ready(name)
        await stop.wait()
        log.info("worker %s stopping: finishing the work it holds", name)
        clock.begin()
        await heartbeat.stop()  # new requests go to other workers (or get no_workers) from now
        if caption_worker is not None:
            caption_worker.stop()
        for server in servers:
            await server.stop()
        _, pending = await asyncio.wait(tasks, timeout=clock.left())
        for task in pending:
            task.cancel()


async def _embedding(
    stack: AsyncExitStack,
    settings: Settings,
    keys: Keys,
    name: str,
    redis: Any,
    local: Batcher[str, np.ndarray] | None,
    local_label: str | None,
) -> tuple[Callable[[str], Any], str | None]:
    """How this worker embeds its captions: its own embedder, or an embedder worker's."""
    queue: Batcher[str, np.ndarray]
    if local is not None:
        queue = local
        label = local._model.label  # type: ignore[attr-defined]
    else:
        client = RpcClient(redis, keys, name, settings.broker.request_deadline_s)
        await client.start()
        stack.push_async_callback(client.stop)
        queue = RemoteBatcher("embedder", settings.embed_batch, client, Census(redis, keys))
        await queue.start()
        info = await redis.hgetall(keys.embedder_info())
        label = info[b"label"].decode() if info else None

    async def embed(text: str) -> np.ndarray | None:
        if label is None:
            return None  # no embedder has ever run: the web replicas embed it at their next start
        try:
            return await queue.run(text, Priority.BACKGROUND)
        except CapsearchError as e:
            if e.code in EMBEDDER_AWAY:
                raise  # the job waits for an embedder: a caption marked ready must be findable
            log.warning(
                "embedding a caption failed (%s); a web replica embeds it at its next start", e.message
            )
            return None

    return embed, label


def main(settings: Settings, models: list[str], fake_batch_s: float | None) -> int:
    factories = default_factories() if fake_batch_s is None else fake_factories(fake_batch_s)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(
            settings,
            models,
            factories,
            stop,
            ready=lambda n: print(f"capsearch worker {n} ready", flush=True),
        )

    asyncio.run(run())
    return 0
