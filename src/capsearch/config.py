"""Application settings: one class, grouped fields, read once through `get_settings()`.

Environment variables use the prefix ``CAPSEARCH_`` and ``__`` between a group and its field, e.g.
``CAPSEARCH_DATABASE__URL`` or ``CAPSEARCH_CAPTION_BATCH__MAX_BATCH_SIZE``. A ``.env`` file in the
working directory is read too.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelProfile = Literal["default", "tiny"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DTypeName = Literal["auto", "float32", "float16", "bfloat16"]

DEFAULT_CAPTIONER_ID = "Salesforce/blip-image-captioning-base"


class DatabaseSettings(BaseModel):
    # The embedded default needs no server; production points this at postgresql+asyncpg://...
    url: str = "sqlite+aiosqlite:///data/capsearch.db"
    echo: bool = False


class StorageSettings(BaseModel):
    dir: Path = Path("data/media")
    thumbnail_size: int = Field(640, ge=64, le=4096, description="longest side of display thumbnails, px")


class ModelSettings(BaseModel):
    profile: ModelProfile = "default"
    cache_dir: Path = Path("models_cache")
    # None means "the profile's choice"; set an id or a local directory to override.
    captioner_id: str | None = None
    device: DeviceName = "auto"
    dtype: DTypeName = "auto"
    caption_max_tokens: int = Field(30, ge=1, le=200)
    # False = never touch the network (HF_HUB_OFFLINE semantics): only models_cache/ is used.
    allow_download: bool = True


class BatchSettings(BaseModel):
    max_batch_size: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(20.0, ge=0, le=10_000)
    queue_limit: int = Field(128, ge=1, le=100_000)
    # Share of the queue that background (non-interactive) work may fill, so it can never lock
    # interactive requests out.
    background_share: float = Field(0.5, gt=0, le=1)
    # On shutdown, pending work gets this long to finish; what is left stays "received" and is
    # captioned on the next start.
    shutdown_timeout_s: float = Field(10.0, ge=0)


class LimitSettings(BaseModel):
    max_image_bytes: int = Field(5 * 1024 * 1024, ge=1)
    max_pixels: int = Field(50_000_000, ge=1, description="decompression-bomb guard, width * height")
    allowed_types: list[str] = ["image/jpeg", "image/png", "image/webp", "image/gif"]
    max_files_per_request: int = Field(32, ge=1)


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # Extra origins allowed to open the WebSocket (same host is always allowed), e.g. behind a proxy.
    allowed_origins: list[str] = []


class UploadSettings(BaseModel):
    """Chunked uploads over the WebSocket (docs/protocol.md)."""

    # The largest the protocol allows: fewer round trips per file, still bounded memory per socket.
    chunk_size: int = Field(256 * 1024, ge=64 * 1024, le=256 * 1024)
    window: int = Field(8, ge=1, le=64, description="unacknowledged chunks a client may have in flight")
    max_parallel: int = Field(3, ge=1, le=16, description="uploads in progress per connection")
    stall_timeout_s: float = Field(60.0, gt=0, description="no chunk for this long on a live socket")
    partial_ttl_s: float = Field(600.0, gt=0, description="how long a dropped upload may be resumed")
    max_message_bytes: int = Field(300 * 1024, description="largest WebSocket message accepted")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CAPSEARCH_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    models: ModelSettings = ModelSettings()
    caption_batch: BatchSettings = BatchSettings()
    limits: LimitSettings = LimitSettings()
    server: ServerSettings = ServerSettings()
    uploads: UploadSettings = UploadSettings()


@lru_cache
def get_settings() -> Settings:
    return Settings()
