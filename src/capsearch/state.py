"""The long-lived resources one running app owns, built and torn down by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from capsearch.batching import Batcher
from capsearch.config import Settings
from capsearch.events import EventBus
from capsearch.ml.base import Model
from capsearch.services.images import ImageService
from capsearch.storage import ContentStore
from capsearch.ws.uploads import UploadRegistry


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ContentStore
    events: EventBus
    captioner: Model[PILImage.Image, str]
    caption_batcher: Batcher[PILImage.Image, str]
    images: ImageService
    uploads: UploadRegistry
