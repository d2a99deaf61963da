"""Application settings: one class, grouped fields, read once through `get_settings()`.

Environment variables use the prefix ``CAPSEARCH_`` and ``__`` between a group and its field, e.g.
``CAPSEARCH_DATABASE__URL``; a ``.env`` file in the working directory is read too.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from capsearch.broker.settings import BrokerSettings

ModelProfile = Literal["default", "tiny"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DTypeName = Literal["auto", "float32", "float16", "bfloat16"]
CaptionerBackend = Literal["auto", "torch", "openvino"]
TranscriberBackend = Literal["auto", "transformers", "ctranslate2"]

DEFAULT_CAPTIONER_ID = "Salesforce/blip-image-captioning-base"
DEFAULT_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Whisper's encoder dominates its cost: base keeps a CPU near real time, small is better and a GPU affords it.
DEFAULT_TRANSCRIBER_CPU_ID = "openai/whisper-base"
DEFAULT_TRANSCRIBER_GPU_ID = "openai/whisper-small"


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
    # The captioner's engine. "auto": OpenVINO on a CPU (converted once from the checkpoint and cached
    # beside it; ~2.5x torch there), torch elsewhere (float16 on CUDA). "torch" / "openvino" choose.
    captioner_backend: CaptionerBackend = "auto"
    # OpenVINO only: int8 weights (NNCF). Faster and smaller; caption quality unverified (README).
    captioner_int8: bool = False
    embedder_id: str | None = None
    # Longer texts are truncated; captions are a sentence, MiniLM was trained on up to 256 tokens.
    embed_max_tokens: int = Field(256, ge=8, le=512)
    # None: whisper-base on a CPU, whisper-small on a GPU.
    transcriber_id: str | None = None
    # Spoken language (ISO code such as "en"); "auto" (or None) lets Whisper detect it per recording.
    language: str | None = "en"
    # 30 s of speech is about 100 tokens; the cap stops a confused model from rambling.
    transcriber_max_tokens: int = Field(128, ge=1, le=440)
    # The transcriber's engine. "auto": CTranslate2 on a CPU (converted once from the checkpoint and
    # cached beside it; live partials run on a shortened window), transformers elsewhere (float16 on
    # CUDA). "transformers" / "ctranslate2" choose.
    transcriber_backend: TranscriberBackend = "auto"
    # CTranslate2 only (README "Transcriber backends"): int8 weights for every pass, finals too, or
    # for live partials only (on an int8 copy; finals stay float32).
    transcriber_int8: bool = False
    transcriber_partials_int8: bool = True
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


class ArbiterSettings(BaseModel):
    """One compute arbiter: captions give way to transcriptions and query embeddings (README "Models")."""

    enabled: bool = True
    # The longest a caption is held off in a row; then it runs unhindered for min_run_s, so under
    # endless interactive load captions slow down but never stall.
    max_pause_s: float = Field(5.0, gt=0)
    min_run_s: float = Field(1.0, ge=0)


class SearchSettings(BaseModel):
    """Text search over caption embeddings (README "Search")."""

    # None: "index" next to the media directory (data/index with the defaults).
    index_dir: Path | None = None
    # Up to this many vectors the index is exact (a flat scan); above it, IVF (approximate).
    approximate_threshold: int = Field(100_000, ge=1)
    # IVF lists probed per query; more = better recall, slower. 0 = chosen from the list count.
    nprobe: int = Field(0, ge=0, le=65_536)
    default_k: int = Field(12, ge=1, le=1000)
    max_k: int = Field(100, ge=1, le=1000)
    # A hit scoring below best × relative_cutoff is dropped: far worse than the best is noise.
    relative_cutoff: float = Field(0.6, ge=0, le=1)
    # "No match" and the labels (services/relevance.py). A query's background: its cosines with at most
    # background_sample stored captions. The rest is fitted on the tune half of the labelled set, with
    # odds 1:2 for answering (docs/search.md says how; `capsearch bench --only relevance` refits them).
    background_sample: int = Field(512, ge=1, le=65_536)
    prior_location: float = Field(0.078, ge=-1, le=1)
    prior_scale: float = Field(0.088, gt=0, le=2)
    max_location: float = Field(0.15, ge=-1, le=1)
    min_scale: float = Field(0.05, gt=0, le=2)
    prior_weight: float = Field(8.0, ge=0, description="images' worth of the prior (chosen, not fitted)")
    standing_weight: float = Field(0.238, ge=0)
    accept_bar: float = Field(1.538, ge=-10, le=10)
    strong_bar: float = Field(1.637, ge=-10, le=10)
    sure_similarity: float = Field(0.70, ge=-1, le=1)  # a best this close is an answer: README "Search"
    max_query_chars: int = Field(200, ge=1, le=10_000)
    # A changed index is written to disk at most this often (and at shutdown); a crash in between is
    # repaired at the next start by the checksum check against the database.
    save_delay_s: float = Field(2.0, ge=0)


class LimitSettings(BaseModel):
    max_image_bytes: int = Field(5 * 1024 * 1024, ge=1)
    max_pixels: int = Field(50_000_000, ge=1, description="decompression-bomb guard, width * height")
    allowed_types: list[str] = ["image/jpeg", "image/png", "image/webp", "image/gif"]
    max_files_per_request: int = Field(32, ge=1)


class VoiceSettings(BaseModel):
    """Voice search: live recordings over the socket and audio files over REST (docs/protocol.md)."""

    # Whisper hears at most 30 s at once; longer audio would need chunking, so the cap stops there.
    max_seconds: float = Field(30.0, gt=0, le=30)
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="one audio file over REST")
    # Speech = at least min_speech_ms of 20 ms windows with an RMS of speech_rms or more (full scale
    # 1.0; 0.01 is -40 dBFS, above a quiet room's hiss and below a voice at arm's length).
    speech_rms: float = Field(0.01, gt=0, le=1)
    min_speech_ms: float = Field(150.0, ge=0)
    # Silero VAD (capsearch.voice.vad) decides what is speech instead: a fan or traffic loud enough to
    # pass the RMS rule isn't speech to it. False falls back to the RMS rule above.
    vad: bool = True
    # Silero's speech probability that starts speech; speech goes on down to 0.15 below it.
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    # A live recording stops itself after this much silence following speech; 0 waits for voice.stop.
    end_silence_ms: float = Field(800.0, ge=0)
    # Partials start once this much speech has been heard: on a fraction of a word Whisper invents text
    # ("Thank you."), which would flash on the page before the real words.
    first_partial_ms: float = Field(500.0, ge=0)
    # A recording that gets no audio for this long and was never stopped is dropped.
    stream_timeout_s: float = Field(15.0, gt=0)
    max_streams_per_connection: int = Field(2, ge=1, le=16, description="one recording + one finishing")
    max_streams: int = Field(64, ge=1, description="live recordings in the whole app")
    # One client (an IP address) may not take every recording slot, however many sockets it opens.
    max_streams_per_client: int = Field(4, ge=1, le=64, description="live recordings per client")
    # The page sends 50 ms frames; tiny frames cost a message each for almost no audio. A shorter
    # frame is allowed only as the last one before `voice.stop` (the page flushes what is left).
    min_frame_samples: int = Field(320, ge=1, le=16_000, description="20 ms at 16 kHz")
    # Silence after which the final pass starts; speech that resumes makes it stale. 32 ms (a Silero
    # chunk): end of speech to hits 0.85 s (0.89 at 100), 5 of 32 phrases stale (0); docs/benchmarks.md.
    final_after_silence_ms: float = Field(32.0, ge=0)
    # Silence put before the audio of every pass: Whisper tends to drop a word that starts at the very
    # first sample. Measured (`capsearch bench --only voice`, whisper-base, 32 spoken phrases trimmed
    # to start at their first word): word error rate 0.132 without, 0.069 with 250 ms.
    lead_in_ms: float = Field(250.0, ge=0, le=2000)
    # Hits while speaking: a search of the settled words at most this often per recording.
    live_search_interval_ms: float = Field(300.0, ge=0)


class GallerySettings(BaseModel):
    """The example gallery a page shows after it has been left alone for a while."""

    idle_seconds: float = Field(8.0, gt=0, description="no mouse, keyboard, touch or scroll for this long")
    count: int = Field(4, ge=1, le=12)
    # Up to this share of the examples come from the collection; the rest are bundled photos.
    collection_share: float = Field(0.5, ge=0, le=1)
    # Optional remote source, e.g. "https://picsum.photos/seed/{seed}/640/480"; any failure falls
    # back to the bundled photos without bothering the person.
    remote_url_template: str | None = None
    remote_timeout_s: float = Field(3.0, gt=0, le=30)


class ServerSettings(BaseModel):
    """Who may talk to the server, and the limits that keep one client from holding it (docs/security.md)."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Host names the server answers to, besides the loopback names and `host` itself; "*" allows any
    # (only behind a reverse proxy that checks Host). Guards against DNS rebinding.
    allowed_hosts: list[str] = []
    # Extra origins allowed to write (POST/PATCH/DELETE, the WebSocket), e.g. behind a proxy. An
    # http(s) origin whose host is an allowed host (any port) is always allowed (capsearch.hosts).
    allowed_origins: list[str] = []
    # Transport limits (uvicorn): an idle keep-alive connection is closed after this long ...
    keep_alive_s: float = Field(5.0, gt=0, le=300)
    # ... a request whose headers are larger is refused with 431/400 ...
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    # ... a request line and headers must arrive within this long (slowloris), else 408 and closed ...
    header_timeout_s: float = Field(10.0, gt=0, le=300)
    # ... and past this many connections and tasks at once new requests get 503.
    max_concurrency: int = Field(512, ge=1)
    # A request body must arrive completely within this long, and never pause longer than
    # `body_idle_timeout_s` between two parts: a client sending 1 byte/s cannot hold a worker.
    body_timeout_s: float = Field(120.0, gt=0)
    body_idle_timeout_s: float = Field(15.0, gt=0)
    # On SIGTERM, requests waiting for captions (`wait=true`) get this long, then 503 shutting_down.
    shutdown_grace_s: float = Field(5.0, ge=0, le=300)


class RateLimitSettings(BaseModel):
    """Per-client token buckets (a client = its IP address); over the limit → 429 `rate_limited`.

    Each bucket refills at `*_per_minute` and holds at most `*_burst` tokens. The defaults leave the
    page's search-as-you-type and a drop of a hundred photos well inside them.
    """

    enabled: bool = True
    # One token per uploaded file over the socket, one per REST upload request.
    uploads_per_minute: float = Field(240.0, gt=0)
    uploads_burst: int = Field(120, ge=1)
    # Typed searches (REST and the page's search box) and caption edits.
    searches_per_minute: float = Field(600.0, gt=0)
    searches_burst: int = Field(60, ge=1)
    # Voice: REST transcriptions / voice searches and live recordings started.
    voice_per_minute: float = Field(60.0, gt=0)
    voice_burst: int = Field(20, ge=1)
    # Buckets of clients not seen for a while are forgotten; this caps the memory they take.
    max_clients: int = Field(10_000, ge=1)


class UploadSettings(BaseModel):
    """Chunked uploads over the WebSocket (docs/protocol.md)."""

    # The largest the protocol allows: fewer round trips per file, still bounded memory per socket.
    chunk_size: int = Field(256 * 1024, ge=64 * 1024, le=256 * 1024)
    window: int = Field(8, ge=1, le=64, description="unacknowledged chunks a client may have in flight")
    max_parallel: int = Field(3, ge=1, le=16, description="uploads in progress per connection")
    stall_timeout_s: float = Field(60.0, gt=0, description="no chunk for this long on a live socket")
    partial_ttl_s: float = Field(600.0, gt=0, description="how long a dropped upload may be resumed")
    max_message_bytes: int = Field(300 * 1024, description="largest WebSocket message accepted")
    # However many sockets one client (IP address) opens.
    max_per_client: int = Field(12, ge=1, le=1024, description="partial uploads per client")
    max_partial_bytes: int = Field(1 << 30, ge=1 << 20, description="disk all partial uploads may reserve")


class MaintenanceSettings(BaseModel):
    """Background repair: what a crash or an outage left behind is put right without a restart."""

    # How often the sweeper looks for rows stuck in flight and files with no row.
    sweep_interval_s: float = Field(30.0, gt=0)
    # A row `received`/`captioning` with no live caption task for this long is queued again.
    stuck_after_s: float = Field(60.0, gt=0)
    # Temp files (interrupted atomic writes) older than this are deleted.
    temp_file_age_s: float = Field(60.0, gt=0)
    # Stored files with no row are deleted once this old (an upload between its file write and its
    # row insert must not lose its files).
    orphan_grace_s: float = Field(300.0, gt=0)
    # A caption whose database write fails (an outage) is retried with backoff up to this long.
    db_retry_s: float = Field(300.0, gt=0)


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
    # Texts are cheap to embed: bigger batches, shorter wait (a query is waiting on the other side).
    embed_batch: BatchSettings = BatchSettings(max_batch_size=32, max_wait_ms=5, queue_limit=512)
    search: SearchSettings = SearchSettings()
    # Each Whisper pass costs a full 30 s window whatever the clip's length: batching concurrent
    # streams is the main saving, and a short wait is enough to collect them.
    transcribe_batch: BatchSettings = BatchSettings(max_batch_size=8, max_wait_ms=10, queue_limit=64)
    arbiter: ArbiterSettings = ArbiterSettings()
    voice: VoiceSettings = VoiceSettings()
    gallery: GallerySettings = GallerySettings()
    limits: LimitSettings = LimitSettings()
    server: ServerSettings = ServerSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    uploads: UploadSettings = UploadSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()
    broker: BrokerSettings = BrokerSettings()


@lru_cache
def get_settings() -> Settings:
    return Settings()
