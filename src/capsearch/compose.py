"""The lifespan, composed of one builder per pipeline.

Each builder starts its resources and registers each one's stop on the exit stack right after it
starts, so a start-up failure anywhere stops exactly what had started, and shutdown runs in reverse
order: the live feed and the voice pipeline first, then the image pipeline, search, the database,
and the models last of all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, ComputeArbiter, Priority
from capsearch.config import ArbiterSettings, BatchSettings, Settings
from capsearch.db.session import create_engine, session_factory
from capsearch.events import EventBus
from capsearch.ml.base import Embedder, Model
from capsearch.ml.speech import Clip
from capsearch.ml.yielding import YieldsCompute
from capsearch.periodic import Periodic
from capsearch.pipelines.images import ImagePipeline
from capsearch.pipelines.voice import VoicePipeline
from capsearch.services.gallery import Gallery
from capsearch.services.indexing import SearchIndexer
from capsearch.services.library import ImageLibrary
from capsearch.services.maintenance import Maintenance
from capsearch.services.search import SearchService
from capsearch.shutdown import ShutdownClock, stop_within
from capsearch.startup import StartupTimer
from capsearch.storage import ContentStore
from capsearch.templating import web_dir
from capsearch.voice.activity import start_detector
from capsearch.voice.lanes import TranscriberLanes, start_lanes
from capsearch.voice.streams import VoiceStreams
from capsearch.ws.feed import LiveFeed
from capsearch.ws.uploads import UploadRegistry

if TYPE_CHECKING:
    from capsearch.broker.web import WebBroker


def index_dir(settings: Settings) -> Path:
    """Where the search index is saved: the setting, else "index" beside the media directory."""
    return settings.search.index_dir or settings.storage.dir.parent / "index"


def model_label(model: Model[PILImage.Image, str]) -> str:
    return str(getattr(model, "model_id", model.name))


In = TypeVar("In")
Out = TypeVar("Out")


def build_arbiter(settings: ArbiterSettings) -> ComputeArbiter | None:
    if not settings.enabled:
        return None
    return ComputeArbiter(max_pause_s=settings.max_pause_s, min_run_s=settings.min_run_s)


async def start_batcher(
    stack: AsyncExitStack,
    clock: ShutdownClock,
    model: Model[In, Out],
    settings: BatchSettings,
    *,
    holds: ComputeArbiter | None = None,
    hold_priorities: frozenset[Priority] = frozenset(Priority),
    name: str | None = None,
    workers: int = 1,
) -> Batcher[In, Out]:
    """`holds`: the model's requests are foreground work, which background models give way to."""
    batcher: Batcher[In, Out] = Batcher(
        model, settings, name=name, holds=holds, hold_priorities=hold_priorities, workers=workers
    )
    await batcher.start()
    stack.push_async_callback(stop_within, clock, batcher.stop, settings.shutdown_timeout_s)
    return batcher


@dataclass
class Foundation:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ContentStore
    events: EventBus
    clock: ShutdownClock
    # One per process: interactive models (transcriber, embedder) hold it, the captioner yields to it.
    arbiter: ComputeArbiter | None
    # Distributed mode (capsearch.broker): the models run on workers, reached through Redis.
    broker: WebBroker | None = None

    async def queue(
        self, stack: AsyncExitStack, model: Model[Any, Any], settings: BatchSettings, **local: Any
    ) -> Batcher[Any, Any]:
        """The model's queue: a local batcher, or in distributed mode one that sends to workers."""
        if self.broker is None:
            return await start_batcher(stack, self.clock, model, settings, **local)
        return await self.broker.start_remote(stack, self.clock, model.name, settings)


async def build_foundation(
    stack: AsyncExitStack,
    settings: Settings,
    clock: ShutdownClock,
    timer: StartupTimer,
    check_schema: Callable[[str], Awaitable[None]],
) -> Foundation:
    engine = create_engine(settings.database.url, echo=settings.database.echo)
    stack.push_async_callback(engine.dispose)
    with timer.step("app schema check"):
        await check_schema(settings.database.url)
    store = ContentStore(settings.storage.dir)
    await asyncio.to_thread(store.init)
    arbiter = build_arbiter(settings.arbiter)
    events, broker = EventBus(), None
    if settings.broker.enabled:
        from capsearch.broker.web import start_web_broker

        broker = await start_web_broker(stack, settings.broker, events)
    return Foundation(settings, engine, session_factory(engine), store, events, clock, arbiter, broker)


@dataclass
class SearchParts:
    embedder: Embedder
    batcher: Batcher[str, np.ndarray]
    indexer: SearchIndexer
    search: SearchService


async def build_search(
    stack: AsyncExitStack, base: Foundation, embedder: Awaitable[Embedder], timer: StartupTimer
) -> SearchParts:
    settings = base.settings
    model = await embedder
    # A query waits on its embedding, and indexing's background embeddings are short: all foreground.
    # Only a query someone waits for goes before captions: caption embeddings and the index backfill
    # at startup are background work themselves, and would otherwise stall captions for its length.
    batcher = await base.queue(
        stack,
        model,
        settings.embed_batch,
        holds=base.arbiter,
        hold_priorities=frozenset({Priority.INTERACTIVE}),
    )
    parts: dict[str, Any] = dict(
        settings=settings.search,
        sessions=base.sessions,
        embedder=batcher,
        model=model.label,
        dim=model.dim,
        index_dir=index_dir(settings),
        background_slots=batcher.background_limit,
    )
    # Checks the saved index against the database before serving; embeds captions with no vector later.
    with timer.step("index check"):
        if base.broker is None:
            indexer = SearchIndexer(**parts)
            await indexer.start()
            stack.push_async_callback(indexer.close)  # after the image pipeline, which may still index
        else:  # the index also follows the changes other processes make
            indexer = await base.broker.follow_index(stack, parts)
    search = SearchService(settings=settings.search, sessions=base.sessions, indexer=indexer)
    return SearchParts(model, batcher, indexer, search)


@dataclass
class ImageParts:
    captioner: Model[PILImage.Image, str]
    batcher: Batcher[PILImage.Image, str]
    pipeline: ImagePipeline
    library: ImageLibrary
    uploads: UploadRegistry
    gallery: Gallery
    maintenance: Maintenance


async def build_images(
    stack: AsyncExitStack,
    base: Foundation,
    search: SearchParts,
    captioner: Awaitable[Model[PILImage.Image, str]],
) -> ImageParts:
    settings, clock = base.settings, base.clock
    model = await captioner
    if base.arbiter is not None and isinstance(model, YieldsCompute):
        model.yield_to = base.arbiter  # captions give way between images and decoding steps
    batcher = await base.queue(stack, model, settings.caption_batch)
    parts: dict[str, Any] = dict(
        settings=settings,
        sessions=base.sessions,
        store=base.store,
        captioner=batcher,
        caption_model=model_label(model),
        events=base.events,
        indexer=search.indexer,
        clock=clock,
    )
    if base.broker is None:
        pipeline = ImagePipeline(**parts)
    else:  # captions are durable jobs the workers write
        from capsearch.broker.pipeline import BrokeredImagePipeline

        pipeline = BrokeredImagePipeline(queue=base.broker.queue, census=base.broker.census, **parts)

    async def close_pipeline() -> None:
        # The batcher drains (or fails) its queue first, so the pipeline's caption tasks settle.
        await stop_within(clock, batcher.stop, settings.caption_batch.shutdown_timeout_s)
        await pipeline.close()

    stack.push_async_callback(close_pipeline)
    library = ImageLibrary(
        sessions=base.sessions,
        store=base.store,
        claims=pipeline.claims,
        indexer=search.indexer,
        events=base.events,
    )
    partials = base.store.root / "tmp" / "uploads"
    if base.broker is None:
        uploads = UploadRegistry(settings.uploads, partials)
    else:  # each replica its own folder on the shared store; resumable on any replica
        uploads = await base.broker.uploads(settings.uploads, partials)
    await uploads.start()
    stack.push_async_callback(uploads.stop)
    http = httpx.AsyncClient() if settings.gallery.remote_url_template else None
    if http is not None:
        stack.push_async_callback(http.aclose)
    gallery = Gallery(
        settings.gallery,
        captioner=batcher,
        sessions=base.sessions,
        store=base.store,
        examples_dir=web_dir() / "static" / "examples",
        limits=settings.limits,
        thumbnail_size=settings.storage.thumbnail_size,
        http=http,
    )
    maintenance = Maintenance(settings.maintenance, pipeline, temp_dirs=[index_dir(settings)])
    await maintenance.startup()  # what a crash left in the store, before serving
    sweeper = Periodic("maintenance sweep", settings.maintenance.sweep_interval_s, maintenance.sweep)
    sweeper.start()
    stack.push_async_callback(sweeper.stop)
    return ImageParts(model, batcher, pipeline, library, uploads, gallery, maintenance)


@dataclass
class VoiceParts:
    transcriber: Model[Clip, str]
    batcher: TranscriberLanes
    streams: VoiceStreams
    pipeline: VoicePipeline


async def build_voice(
    stack: AsyncExitStack,
    base: Foundation,
    search: SearchParts,
    transcriber: Awaitable[Model[Clip, str]],
) -> VoiceParts:
    settings = base.settings
    model = await transcriber
    # Live partials and finals alike: both are someone waiting, relative to a caption.
    batch, arbiter = settings.transcribe_batch, base.arbiter
    batcher = await start_lanes(
        model,
        lambda name, workers: (
            start_batcher(stack, base.clock, model, batch, holds=arbiter, name=name, workers=workers)
            if name
            else base.queue(stack, model, batch, holds=arbiter)
        ),
    )
    # Stopped before the batcher: live recordings end and their queued passes leave the queue.
    detector = await start_detector(stack, settings.voice)
    pipeline = VoicePipeline(
        settings=settings.voice, transcriber=batcher, search=search.search, detector=detector
    )
    streams = VoiceStreams(settings.voice, batcher, detector=detector, search=pipeline.search_transcript)
    await streams.start()
    stack.push_async_callback(streams.stop)
    return VoiceParts(model, batcher, streams, pipeline)


async def build_live(stack: AsyncExitStack, base: Foundation, library: ImageLibrary) -> LiveFeed:
    live = LiveFeed(base.events, snapshot=library.snapshot, newest=library.newest)
    await live.start()
    stack.push_async_callback(live.stop)
    return live
