"""The FastAPI application and its lifespan, which owns every long-lived resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image as PILImage
from starlette.requests import Request
from starlette.responses import Response

from capsearch.api.errors import install_error_handlers
from capsearch.api.guard import RequestGuard
from capsearch.api.middleware import install_middleware
from capsearch.api.routes import health, images, media, pages, search, voice, ws
from capsearch.batching import Batcher
from capsearch.config import Settings, get_settings
from capsearch.db.migrate import current_revision, head_revision, script_head
from capsearch.db.session import create_engine, session_factory
from capsearch.events import EventBus
from capsearch.hosts import HostPolicy
from capsearch.ml.base import Embedder, Model
from capsearch.periodic import Periodic
from capsearch.ratelimit import RateLimits
from capsearch.services.gallery import Gallery
from capsearch.services.images import ImageService
from capsearch.services.indexing import SearchIndexer
from capsearch.services.maintenance import Maintenance
from capsearch.services.search import SearchService
from capsearch.services.voice import VoiceService
from capsearch.shutdown import ShutdownClock, stop_within
from capsearch.startup import ModelLoader, StartupTimer
from capsearch.state import AppState
from capsearch.storage import ContentStore
from capsearch.templating import web_dir
from capsearch.voice.streams import VoiceStreams
from capsearch.ws.uploads import UploadRegistry

log = logging.getLogger("capsearch")

CaptionerFactory = Callable[[Settings], Model[PILImage.Image, str]]
EmbedderFactory = Callable[[Settings], Embedder]
TranscriberFactory = Callable[[Settings], Model[np.ndarray, str]]


class SchemaOutOfDateError(RuntimeError):
    pass


def default_captioner(settings: Settings) -> Model[PILImage.Image, str]:
    from capsearch.ml.factory import build_captioner  # torch is heavy; only the real app pays for it

    return build_captioner(settings)


def default_embedder(settings: Settings) -> Embedder:
    from capsearch.ml.factory import build_embedder

    return build_embedder(settings)


def default_transcriber(settings: Settings) -> Model[np.ndarray, str]:
    from capsearch.ml.factory import build_transcriber

    return build_transcriber(settings)


def index_dir(settings: Settings) -> Path:
    """Where the search index is saved: the setting, else "index" beside the media directory."""
    return settings.search.index_dir or settings.storage.dir.parent / "index"


async def check_schema(url: str) -> None:
    current = await current_revision(url)
    # The scripts' own head spares every start Alembic's import; a mismatch (or scripts that are
    # not one simple chain) is confirmed by Alembic itself before anything is refused.
    head = script_head()
    if head is None or current != head:
        head = await asyncio.to_thread(head_revision, url)
    if current != head:
        raise SchemaOutOfDateError(
            f"The database schema is at revision {current or 'none'} but this version needs {head}. "
            "Run `capsearch migrate` (or `make migrate`) first."
        )


def create_app(
    settings: Settings | None = None,
    *,
    captioner_factory: CaptionerFactory = default_captioner,
    embedder_factory: EmbedderFactory = default_embedder,
    transcriber_factory: TranscriberFactory = default_transcriber,
    startup: StartupTimer | None = None,
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            timer = startup or StartupTimer()
            # The models load one by one in a worker thread while the loop does the rest of start-up
            # (schema and index checks, services); each is awaited where it is first needed.
            models = ModelLoader(timer)
            stack.push_async_callback(models.aclose)  # closes every loaded model, last of all
            captioner_load = models.submit("captioner", lambda: captioner_factory(settings))
            embedder_load = models.submit("embedder", lambda: embedder_factory(settings))
            transcriber_load = models.submit("transcriber", lambda: transcriber_factory(settings))
            # Each resource registers its own shutdown right after it starts: reverse order for free.
            engine = create_engine(settings.database.url, echo=settings.database.echo)
            stack.push_async_callback(engine.dispose)
            # Begun by the server on SIGTERM (capsearch.server); each stopping step gets what is left.
            clock = app.state.shutdown_clock = ShutdownClock(settings.server.shutdown_grace_s)
            with timer.step("app schema check"):
                await check_schema(settings.database.url)
            store = ContentStore(settings.storage.dir)
            await asyncio.to_thread(store.init)

            captioner = await captioner_load
            batcher: Batcher[PILImage.Image, str] = Batcher(captioner, settings.caption_batch)
            await batcher.start()

            embedder = await embedder_load
            embed_batcher: Batcher[str, np.ndarray] = Batcher(embedder, settings.embed_batch)
            await embed_batcher.start()
            stack.push_async_callback(
                stop_within, clock, embed_batcher.stop, settings.embed_batch.shutdown_timeout_s
            )
            sessions = session_factory(engine)
            indexer = SearchIndexer(
                settings=settings.search,
                sessions=sessions,
                embedder=embed_batcher,
                model=embedder.label,
                dim=embedder.dim,
                index_dir=index_dir(settings),
                background_slots=embed_batcher.background_limit,
            )
            # Checks the saved index against the database (rebuilding it if they differ) before any
            # request is served; then embeds captions that have no vector, in the background.
            with timer.step("index check"):
                await indexer.start()
            # Closes after the image service (whose caption tasks may still index), saving last.
            stack.push_async_callback(indexer.close)

            events = EventBus()
            service = ImageService(
                settings=settings,
                sessions=sessions,
                store=store,
                captioner=batcher,
                caption_model=_model_label(captioner),
                events=events,
                indexer=indexer,
                clock=clock,
            )
            stack.push_async_callback(service.close)
            # The one exception to strict reverse order: the batcher drains (or fails) its queue
            # before the service closes, so the service's caption tasks settle instead of being cut.
            stack.push_async_callback(
                stop_within, clock, batcher.stop, settings.caption_batch.shutdown_timeout_s
            )
            uploads = UploadRegistry(settings.uploads, store.root / "tmp" / "uploads")
            await uploads.start()
            stack.push_async_callback(uploads.stop)

            transcriber = await transcriber_load
            transcribe_batcher: Batcher[np.ndarray, str] = Batcher(transcriber, settings.transcribe_batch)
            await transcribe_batcher.start()
            stack.push_async_callback(
                stop_within, clock, transcribe_batcher.stop, settings.transcribe_batch.shutdown_timeout_s
            )
            # Stopped before the batcher: live recordings end and their queued passes leave the queue.
            voice_streams = VoiceStreams(settings.voice, transcribe_batcher)
            await voice_streams.start()
            stack.push_async_callback(voice_streams.stop)
            search_service = SearchService(settings=settings.search, sessions=sessions, indexer=indexer)
            # Only a configured remote example source needs an HTTP client.
            http = httpx.AsyncClient() if settings.gallery.remote_url_template else None
            if http is not None:
                stack.push_async_callback(http.aclose)
            gallery = Gallery(
                settings.gallery,
                captioner=batcher,
                sessions=sessions,
                store=store,
                examples_dir=web_dir() / "static" / "examples",
                limits=settings.limits,
                thumbnail_size=settings.storage.thumbnail_size,
                http=http,
            )
            app.state.capsearch = AppState(
                settings=settings,
                engine=engine,
                sessions=service.sessions,
                store=store,
                events=events,
                captioner=captioner,
                caption_batcher=batcher,
                images=service,
                embedder=embedder,
                embed_batcher=embed_batcher,
                indexer=indexer,
                search=search_service,
                uploads=uploads,
                transcriber=transcriber,
                transcribe_batcher=transcribe_batcher,
                voice=VoiceService(
                    settings=settings.voice, transcriber=transcribe_batcher, search=search_service
                ),
                voice_streams=voice_streams,
                gallery=gallery,
                rate_limits=RateLimits(settings.rate_limits),
            )
            maintenance = Maintenance(settings.maintenance, service, temp_dirs=[index_dir(settings)])
            await maintenance.startup()  # what a crash left in the store, before serving
            sweeper = Periodic("maintenance sweep", settings.maintenance.sweep_interval_s, maintenance.sweep)
            sweeper.start()
            stack.push_async_callback(sweeper.stop)
            # Registered last, so it runs first: shutdown's grace counts from here if nothing began it.
            stack.callback(clock.begin)
            await service.resume_unfinished()
            timer.log_ready()
            log.info("capsearch ready: captioner %s, embedder %s", _model_label(captioner), embedder.label)
            yield

    app = FastAPI(
        title="capsearch",
        summary="Caption images as they arrive and find them again by text or voice.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Added before the error boundary, so inside it: the guard's refusals carry a request id too.
    app.add_middleware(RequestGuard, policy=HostPolicy(settings.server))
    install_middleware(app, settings.server)
    app.include_router(images.router)
    app.include_router(search.router)
    app.include_router(voice.router)
    app.include_router(media.router)
    app.include_router(health.router)
    app.include_router(ws.router)
    app.include_router(pages.router)
    app.mount("/static", pages.static_files(), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], object]) -> Response:
        response: Response = await call_next(request)  # type: ignore[misc]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app


def _model_label(model: Model[PILImage.Image, str]) -> str:
    return str(getattr(model, "model_id", model.name))
