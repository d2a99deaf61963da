"""The long-lived resources one running app owns, built and torn down by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from capsearch.batching import Batcher
from capsearch.config import Settings
from capsearch.events import EventBus
from capsearch.ml.base import Embedder, Model
from capsearch.ratelimit import RateLimits
from capsearch.services.gallery import Gallery
from capsearch.services.images import ImageService
from capsearch.services.indexing import SearchIndexer
from capsearch.services.search import SearchService
from capsearch.services.voice import VoiceService
from capsearch.storage import ContentStore
from capsearch.voice.streams import VoiceStreams
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
    embedder: Embedder
    embed_batcher: Batcher[str, np.ndarray]
    indexer: SearchIndexer
    search: SearchService
    uploads: UploadRegistry
    transcriber: Model[np.ndarray, str]
    transcribe_batcher: Batcher[np.ndarray, str]
    voice: VoiceService
    voice_streams: VoiceStreams
    gallery: Gallery
    rate_limits: RateLimits
