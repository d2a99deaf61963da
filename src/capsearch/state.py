"""The long-lived resources one running app owns, built and torn down by the lifespan (capsearch.compose)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from capsearch.batching import Batcher
from capsearch.config import Settings
from capsearch.events import EventBus
from capsearch.ml.base import Embedder, Model
from capsearch.ml.speech import Clip
from capsearch.pipelines.images import ImagePipeline
from capsearch.pipelines.voice import VoicePipeline
from capsearch.ratelimit import RateLimits
from capsearch.services.gallery import Gallery
from capsearch.services.indexing import SearchIndexer
from capsearch.services.library import ImageLibrary
from capsearch.services.search import SearchService
from capsearch.storage import ContentStore
from capsearch.voice.lanes import TranscriberLanes
from capsearch.voice.streams import VoiceStreams
from capsearch.ws.connection import SocketServices
from capsearch.ws.feed import LiveFeed
from capsearch.ws.uploads import UploadRegistry

if TYPE_CHECKING:
    from capsearch.broker.web import WebBroker


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ContentStore
    events: EventBus
    captioner: Model[PILImage.Image, str]
    caption_batcher: Batcher[PILImage.Image, str]
    images: ImagePipeline
    library: ImageLibrary
    embedder: Embedder
    embed_batcher: Batcher[str, np.ndarray]
    indexer: SearchIndexer
    search: SearchService
    uploads: UploadRegistry
    transcriber: Model[Clip, str]
    transcriber_lanes: TranscriberLanes
    voice: VoicePipeline
    voice_streams: VoiceStreams
    gallery: Gallery
    live: LiveFeed
    rate_limits: RateLimits
    # Distributed mode: the models run on workers reached through Redis (capsearch.broker).
    broker: WebBroker | None = None

    def sockets(self) -> SocketServices:
        return SocketServices(
            settings=self.settings,
            live=self.live,
            images=self.images,
            uploads=self.uploads,
            voice=self.voice,
            voice_streams=self.voice_streams,
            gallery=self.gallery,
            rate_limits=self.rate_limits,
        )
