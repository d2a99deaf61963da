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
from capsearch.api.routes import health, images, media, pages, ws
from capsearch.batching import Batcher
from capsearch.config import Settings, get_settings
from capsearch.db.migrate import current_revision, head_revision
from capsearch.db.session import create_engine, session_factory
from capsearch.events import EventBus
from capsearch.ml.base import Model
from capsearch.services.images import ImageService
from capsearch.state import AppState
from capsearch.storage import ContentStore
from capsearch.ws.uploads import UploadRegistry

log = logging.getLogger("capsearch")

CaptionerFactory = Callable[[Settings], Model[PILImage.Image, str]]


class SchemaOutOfDateError(RuntimeError):
    pass


def default_captioner(settings: Settings) -> Model[PILImage.Image, str]:
    from capsearch.ml.registry import build_captioner  # torch is heavy; only the real app pays for it

    return build_captioner(settings)


async def check_schema(url: str) -> None:
    head = await asyncio.to_thread(head_revision, url)
    current = await current_revision(url)
    if current != head:
        raise SchemaOutOfDateError(
            f"The database schema is at revision {current or 'none'} but this version needs {head}. "
            "Run `capsearch migrate` (or `make migrate`) first."
        )


def create_app(
    settings: Settings | None = None, *, captioner_factory: CaptionerFactory = default_captioner
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Each resource registers its own shutdown right after it starts: reverse order for free.
            engine = create_engine(settings.database.url, echo=settings.database.echo)
            stack.push_async_callback(engine.dispose)
            await check_schema(settings.database.url)
            store = ContentStore(settings.storage.dir)
            await asyncio.to_thread(store.init)

            captioner = captioner_factory(settings)
            await asyncio.to_thread(captioner.load)
            stack.callback(captioner.close)
            batcher: Batcher[PILImage.Image, str] = Batcher(captioner, settings.caption_batch)
            await batcher.start()

            events = EventBus()
            service = ImageService(
                settings=settings,
                sessions=session_factory(engine),
                store=store,
                captioner=batcher,
                caption_model=_model_label(captioner),
                events=events,
            )
            stack.push_async_callback(service.close)
            # The one exception to strict reverse order: the batcher drains (or fails) its queue
            # before the service closes, so the service's caption tasks settle instead of being cut.
            stack.push_async_callback(batcher.stop, settings.caption_batch.shutdown_timeout_s)
            uploads = UploadRegistry(settings.uploads, store.root / "tmp" / "uploads")
            await uploads.start()
            stack.push_async_callback(uploads.stop)
            app.state.capsearch = AppState(
                settings=settings,
                engine=engine,
                sessions=service.sessions,
                store=store,
                events=events,
                captioner=captioner,
                caption_batcher=batcher,
                images=service,
                uploads=uploads,
            )
            await service.resume_unfinished()
            log.info("capsearch ready: captioner %s", _model_label(captioner))
            yield

    app = FastAPI(
        title="capsearch",
        summary="Caption images as they arrive and find them again by text or voice.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(images.router)
    app.include_router(media.router)
    app.include_router(health.router)
    app.include_router(ws.router)
    app.include_router(pages.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], object]) -> Response:
        response: Response = await call_next(request)  # type: ignore[misc]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app


def _model_label(model: Model[PILImage.Image, str]) -> str:
    return str(getattr(model, "model_id", model.name))
