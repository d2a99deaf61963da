"""The FastAPI application and its lifespan, which owns every long-lived resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from PIL import Image as PILImage
from starlette.requests import Request
from starlette.responses import Response

from capsearch.api.errors import install_error_handlers
from capsearch.api.guard import RequestGuard
from capsearch.api.middleware import install_middleware
from capsearch.api.routes import health, images, media, pages, search, voice
from capsearch.compose import (
    build_foundation,
    build_images,
    build_live,
    build_search,
    build_voice,
    model_label,
)
from capsearch.config import Settings, get_settings
from capsearch.db.migrate import current_revision, head_revision, script_head
from capsearch.hosts import HostPolicy
from capsearch.ml.base import Embedder, Model
from capsearch.ml.speech import Clip
from capsearch.ratelimit import RateLimits
from capsearch.shutdown import ShutdownClock
from capsearch.startup import ModelLoader, StartupTimer
from capsearch.state import AppState
from capsearch.ws import route as ws_route

log = logging.getLogger("capsearch")

CaptionerFactory = Callable[[Settings], Model[PILImage.Image, str]]
EmbedderFactory = Callable[[Settings], Embedder]
TranscriberFactory = Callable[[Settings], Model[Clip, str]]


class SchemaOutOfDateError(RuntimeError):
    pass


def default_captioner(settings: Settings) -> Model[PILImage.Image, str]:
    from capsearch.ml.factory import build_captioner  # torch is heavy; only the real app pays for it

    return build_captioner(settings)


def default_embedder(settings: Settings) -> Embedder:
    from capsearch.ml.factory import build_embedder

    return build_embedder(settings)


def default_transcriber(settings: Settings) -> Model[Clip, str]:
    from capsearch.ml.factory import build_transcriber

    return build_transcriber(settings)


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
    if settings.broker.enabled:  # distributed mode: the models run on `capsearch worker` processes
        from capsearch.broker.web import RemoteModelInfo, remote_embedder

        if captioner_factory is default_captioner:
            captioner_factory = lambda _: RemoteModelInfo("captioner")  # noqa: E731
        if transcriber_factory is default_transcriber:
            transcriber_factory = lambda _: RemoteModelInfo("transcriber")  # noqa: E731
        if embedder_factory is default_embedder:
            embedder_factory = remote_embedder

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            timer = startup or StartupTimer()
            # The models load one by one in a worker thread while the loop does the rest of start-up
            # (schema and index checks, services); each is awaited where it is first needed.
            models = ModelLoader(timer)
            stack.push_async_callback(models.aclose)  # closes every loaded model, last of all
            captioner = models.submit("captioner", lambda: captioner_factory(settings))
            embedder = models.submit("embedder", lambda: embedder_factory(settings))
            transcriber = models.submit("transcriber", lambda: transcriber_factory(settings))
            # Begun by the server on SIGTERM (capsearch.server); each stopping step gets what is left.
            clock = app.state.shutdown_clock = ShutdownClock(settings.server.shutdown_grace_s)
            base = await build_foundation(stack, settings, clock, timer, check_schema)
            search = await build_search(stack, base, embedder, timer)
            images = await build_images(stack, base, search, captioner)
            voice = await build_voice(stack, base, search, transcriber)
            live = await build_live(stack, base, images.library)
            app.state.capsearch = AppState(
                settings=settings,
                engine=base.engine,
                sessions=base.sessions,
                store=base.store,
                events=base.events,
                captioner=images.captioner,
                caption_batcher=images.batcher,
                images=images.pipeline,
                library=images.library,
                embedder=search.embedder,
                embed_batcher=search.batcher,
                indexer=search.indexer,
                search=search.search,
                uploads=images.uploads,
                transcriber=voice.transcriber,
                transcriber_lanes=voice.batcher,
                voice=voice.pipeline,
                voice_streams=voice.streams,
                gallery=images.gallery,
                live=live,
                rate_limits=RateLimits(settings.rate_limits),
                broker=base.broker,
            )
            # Registered last, so it runs first: shutdown's grace counts from here if nothing began it.
            stack.callback(clock.begin)
            await images.pipeline.resume_unfinished()
            timer.log_ready()
            label = model_label(images.captioner)
            log.info("capsearch ready: captioner %s, embedder %s", label, search.embedder.label)
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
    app.include_router(ws_route.router)
    app.include_router(pages.router)
    app.mount("/static", pages.static_files(), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], object]) -> Response:
        response: Response = await call_next(request)  # type: ignore[misc]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app
