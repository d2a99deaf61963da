"""One page's `/ws` socket: uploads and voice in; acks, transcripts and HTML fragments out (docs/protocol.md).

Messages are read and handled in order; everything sent goes through one bounded outbox drained by a
single writer task, so concurrent senders (the read loop, finishing uploads, the live feed, the
sweeper) never interleave frames, and a page that reads slowly only slows itself down. Live updates
arrive already rendered from the process's one LiveFeed (ws.feed); only an upload's own status card
is rendered here, for this page alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket

from capsearch.config import Settings
from capsearch.events import ImageChanged
from capsearch.pipelines.images import ImagePipeline
from capsearch.pipelines.voice import VoicePipeline
from capsearch.ratelimit import RateLimits, client_key
from capsearch.services.gallery import Gallery
from capsearch.shapes import ImageOut
from capsearch.voice.streams import VoiceStreams
from capsearch.ws import fragments
from capsearch.ws.feed import LiveFeed, PageFeed, Rendered, Resync, Watch
from capsearch.ws.frames import PcmFrame, parse_binary
from capsearch.ws.gallery_handler import GalleryHandler
from capsearch.ws.messages import (
    ClientMessage,
    ErrorOut,
    Fragment,
    GalleryCancel,
    GalleryRequest,
    Ping,
    Pong,
    ProtocolError,
    ServerMessage,
    UploadCancel,
    UploadEnd,
    UploadResume,
    UploadStart,
    VoiceCancel,
    VoiceStart,
    VoiceStop,
    parse_text,
)
from capsearch.ws.upload_handler import UploadHandler
from capsearch.ws.uploads import UploadRegistry
from capsearch.ws.voice_handler import VoiceHandler

log = logging.getLogger(__name__)

NORMAL_CLOSE = frozenset({1000, 1001})  # the page closed or navigated away on purpose
OUTBOX_SIZE = 64
CLOSE_FLUSH_S = 5.0


@dataclass(frozen=True)
class SocketServices:
    """What page sockets work with; each handler is given only the parts it uses."""

    settings: Settings
    live: LiveFeed
    images: ImagePipeline
    uploads: UploadRegistry
    voice: VoicePipeline
    voice_streams: VoiceStreams
    gallery: Gallery
    rate_limits: RateLimits


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class Connection:
    def __init__(self, websocket: WebSocket, services: SocketServices) -> None:
        self.ws = websocket
        self.live = services.live
        self._release = services.images.release_owner
        self._max_message = services.settings.uploads.max_message_bytes
        self._id = f"ws-{uuid.uuid4().hex}"
        # Per-client limits (uploads, recordings, rates) count every socket of one address together.
        self.client = client_key(websocket)
        self._failures = 0  # unexpected errors while handling a message: the first is logged in full
        self._outbox: asyncio.Queue[str | _Close] = asyncio.Queue(OUTBOX_SIZE)
        self._watch: dict[int, set[str]] = {}  # image id → upload ids whose status card follows it
        self._tasks: set[asyncio.Task[None]] = set()
        self._feed_in = PageFeed()
        self._writer: asyncio.Task[None] | None = None
        settings = services.settings
        self.uploads = UploadHandler(
            self,
            registry=services.uploads,
            images=services.images,
            settings=settings.uploads,
            limits=settings.limits,
            rate_limits=services.rate_limits,
        )
        self.voice = VoiceHandler(
            self,
            streams=services.voice_streams,
            voice=services.voice,
            settings=settings.voice,
            rate_limits=services.rate_limits,
        )
        self.gallery = GalleryHandler(self, services.gallery)

    @property
    def id(self) -> str:
        return self._id

    async def serve(self) -> None:
        # Joined before accepting, so no image update between accept and the feed starting is lost.
        with self.live.join() as feed_in:
            self._feed_in = feed_in
            await self.ws.accept()
            self._writer = asyncio.create_task(self._write_loop())
            feed = self.spawn(self._feed())
            code = 1006
            try:
                code = await self._read_loop()
            finally:
                # Shielded: a server shutting down cancels us, but the clean-up must still happen.
                await asyncio.shield(self._shutdown(code, feed))

    # ---- sending ------------------------------------------------------------------------------

    async def send(self, message: ServerMessage) -> None:
        await self._outbox.put(message.dump())

    async def send_text(self, text: str) -> None:
        """A message already serialised (a live update, rendered once for every page)."""
        await self._outbox.put(text)

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, _Close):
                    await self.ws.close(item.code, item.reason)
                    return
                await self.ws.send_text(item)
            except Exception:  # the page is gone; the read loop sees the disconnect and cleans up
                log.debug("sending on %s failed", self._id, exc_info=True)
                return

    async def _close(self, code: int, reason: str) -> None:
        await self._outbox.put(_Close(code, reason))
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_FLUSH_S)

    # ---- receiving ----------------------------------------------------------------------------

    async def _read_loop(self) -> int:
        """Handle messages until the page goes away; returns the close code."""
        limit = self._max_message
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1005)
            data: bytes | None = message.get("bytes")
            text: str | None = message.get("text")
            # surrogatepass: a server that let a lone surrogate through must not make the count fail.
            size = (
                len(data) if data is not None else len(text.encode("utf-8", "surrogatepass")) if text else 0
            )
            if size > limit:
                await self._close(1009, f"Messages may be at most {limit} bytes.")
                return 1009
            try:
                await self._handle(data, text)
            except ProtocolError as e:
                await self.send(ErrorOut(code=e.code, detail=e.detail, id=e.upload_id))
            except Exception:
                # A bug met by one message must not end the page's socket, nor its uploads and recordings.
                self._failures += 1
                if self._failures == 1:
                    log.exception("handling a message on %s failed", self._id)
                else:
                    log.debug("handling a message on %s failed again", self._id, exc_info=True)
                detail = "The server could not handle this message; try again."
                await self.send(ErrorOut(code="internal_error", detail=detail))

    async def _handle(self, data: bytes | None, text: str | None) -> None:
        if data is not None:
            frame = parse_binary(data)
            if isinstance(frame, PcmFrame):
                await self.voice.frame(frame)
            else:
                await self.uploads.chunk(frame)
        elif text is not None:
            await self._on_message(parse_text(text))

    async def _on_message(self, message: ClientMessage) -> None:
        if isinstance(message, Ping):
            await self.send(Pong())
        elif isinstance(message, UploadStart):
            await self.uploads.start(message)
        elif isinstance(message, UploadResume):
            await self.uploads.resume(message)
        elif isinstance(message, UploadEnd):
            await self.uploads.end(message)
        elif isinstance(message, UploadCancel):
            await self.uploads.cancel(message)
        elif isinstance(message, VoiceStart):
            await self.voice.start(message)
        elif isinstance(message, VoiceStop):
            await self.voice.stop(message)
        elif isinstance(message, VoiceCancel):
            await self.voice.cancel(message)
        elif isinstance(message, GalleryRequest):
            await self.gallery.request()
        elif isinstance(message, GalleryCancel):
            await self.gallery.cancel()

    # ---- live feed ----------------------------------------------------------------------------

    def watch(self, image_id: int, upload_id: str) -> None:
        """From now on, send the upload's status card whenever the image changes stage."""
        self._watch.setdefault(image_id, set()).add(upload_id)
        # Through the feed rather than sent from here, so status cards keep the feed's order.
        self._feed_in.offer(Watch(image_id, upload_id))

    async def _feed(self) -> None:
        while True:
            item = await self._feed_in.next()
            try:
                if isinstance(item, Rendered):
                    await self.send_text(item.text)
                    if isinstance(item.event, ImageChanged):
                        await self._send_status_cards(item.event.image)
                    else:
                        self._watch.pop(item.event.image_id, None)
                elif isinstance(item, Watch):
                    image = await self.live.snapshot(item.image_id)  # where it is now, not at upload
                    if image is not None:
                        await self._send_status_cards(image)
                elif isinstance(item, Resync):
                    await self._resync()
            except Exception as e:  # a database outage or a broken render must not end live updates
                log.warning("a live update on %s was skipped: %s", self._id, e, exc_info=True)

    async def _resync(self) -> None:
        """This page fell behind: send what it shows (the collection, its uploads' cards) as it is now."""
        log.info("%s fell behind the live feed; resyncing it", self._id)
        await self.send(Fragment(html=await self.live.collection()))
        for image_id in sorted(self._watch):
            image = await self.live.snapshot(image_id)
            if image is not None:
                await self._send_status_cards(image)

    async def _send_status_cards(self, image: ImageOut) -> None:
        upload_ids = self._watch.get(image.id)
        if not upload_ids:
            return
        for upload_id in sorted(upload_ids):
            await self.send(Fragment(html=fragments.upload_status_of(upload_id, image)))
        if fragments.STAGE_BY_STATUS[image.status] in fragments.FINAL_STAGES:
            del self._watch[image.id]

    # ---- tasks and clean-up -----------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shutdown(self, code: int, feed: asyncio.Task[None]) -> None:
        tasks = [*self._tasks, feed]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        normal = code in NORMAL_CLOSE
        await self.voice.close()
        await self.uploads.close(normal=normal)
        if normal:
            moved = self._release(self._id)
            if moved:
                log.info("page closed: %d queued caption(s) moved to background priority", moved)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
