"""The upload messages of one socket: start, chunks, end, resume, cancel (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from typing import Any, Protocol

from capsearch.config import LimitSettings, UploadSettings
from capsearch.errors import CapsearchError, IntakeError, RateLimitedError
from capsearch.intake.images import too_large_error
from capsearch.pipelines.images import ImagePipeline
from capsearch.ratelimit import RateLimits
from capsearch.text import clean_filename
from capsearch.ws import fragments
from capsearch.ws.frames import Chunk
from capsearch.ws.messages import (
    ErrorOut,
    Fragment,
    ProtocolError,
    ServerMessage,
    UploadAccepted,
    UploadAck,
    UploadCancel,
    UploadDone,
    UploadEnd,
    UploadRejected,
    UploadResume,
    UploadStart,
)
from capsearch.ws.uploads import PartialUpload, UploadError, UploadRegistry

log = logging.getLogger(__name__)

_LABELS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP", "image/gif": "GIF"}


class Channel(Protocol):
    """What the upload handler needs from its socket."""

    @property
    def id(self) -> str: ...

    @property
    def client(self) -> str: ...  # the client's key for per-client limits (its IP address)

    async def send(self, message: ServerMessage) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def watch(self, image_id: int, upload_id: str) -> None: ...


class UploadHandler:
    """Owns the uploads of one socket in the registry; every rejection deletes the partial bytes."""

    def __init__(
        self,
        channel: Channel,
        *,
        registry: UploadRegistry,
        images: ImagePipeline,
        settings: UploadSettings,
        limits: LimitSettings,
        rate_limits: RateLimits,
    ) -> None:
        self.channel = channel
        self.registry = registry
        self.images = images
        self.settings = settings
        self.limits = limits
        self.rate_limits = rate_limits
        self._uploads: dict[str, PartialUpload] = {}  # sending or finishing on this socket

    @property
    def id(self) -> str:
        return self.channel.id

    # ---- answers ------------------------------------------------------------------------------

    async def reject(
        self,
        upload_id: str,
        code: str,
        detail: str,
        *,
        status_card: bool = True,
        retry_after: float | None = None,
    ) -> None:
        wait = math.ceil(retry_after) if retry_after is not None else None
        await self.channel.send(UploadRejected(id=upload_id, code=code, detail=detail, retry_after=wait))
        if status_card:
            error = {"code": code, "detail": detail}
            html = fragments.upload_status(upload_id, "failed", error=error)
            await self.channel.send(Fragment(html=html))
        await self.channel.send(Fragment(html=fragments.toast(detail)))

    async def _fail(self, upload: PartialUpload, code: str, detail: str) -> None:
        """End an upload: its partial bytes are deleted and the page is told why."""
        self._uploads.pop(upload.id, None)
        await self.registry.discard(upload)
        await self.reject(upload.id, code, detail)

    async def _accepted(self, upload: PartialUpload) -> None:
        s = self.settings
        await self.channel.send(
            UploadAccepted(id=upload.id, offset=upload.offset, chunk_size=s.chunk_size, window=s.window)
        )

    # ---- called by the registry ---------------------------------------------------------------

    def upload_failed(self, upload_id: str, code: str, detail: str) -> None:
        self._uploads.pop(upload_id, None)
        self.channel.spawn(self.reject(upload_id, code, detail))

    def upload_moved(self, upload_id: str) -> None:
        self._uploads.pop(upload_id, None)

    # ---- messages -----------------------------------------------------------------------------

    async def start(self, message: UploadStart) -> None:
        limits = self.rate_limits
        try:
            limits.take(limits.uploads, self.channel.client)
        except RateLimitedError as e:
            await self.reject(message.id, e.code, e.message, retry_after=e.retry_after)
            return
        if self.registry.get(message.id) is not None:
            detail = "Another upload already uses this id; pick a new one."
            # No status card: that id's card belongs to the upload already using it.
            await self.reject(message.id, "duplicate_upload_id", detail, status_card=False)
            return
        refusal = self._refuse(message)
        if refusal is not None:
            await self.reject(message.id, refusal.code, refusal.message)
            return
        name = clean_filename(message.name) or ""
        try:
            upload = await self.registry.create(
                message.id,
                name=name,
                size=message.size,
                mime=message.mime,
                owner=self,
                client=self.channel.client,
            )
        except UploadError as e:  # a per-client or global cap
            await self.reject(message.id, e.code, e.message, retry_after=e.retry_after)
            return
        except OSError:
            log.exception("creating upload %s failed", message.id)
            await self.reject(message.id, "internal_error", "The server could not store this upload.")
            return
        self._uploads[upload.id] = upload
        await self._accepted(upload)

    def _refuse(self, message: UploadStart) -> CapsearchError | None:
        """Why this upload may not begin, judged from its declaration alone."""
        limits = self.limits
        allowed = [m for m in limits.allowed_types if m in _LABELS]
        if message.size == 0:
            return IntakeError("empty_file", "This file is empty.")
        if message.size > limits.max_image_bytes:
            return too_large_error(message.size, limits.max_image_bytes)
        if message.mime.split(";")[0].strip().lower() not in allowed:
            kinds = ", ".join(_LABELS[m] for m in allowed)
            what = f"of type {message.mime[:64]}" if message.mime else "of an unknown type"
            return IntakeError("unsupported_type", f"This file is {what}; only {kinds} images are accepted.")
        if len(self._uploads) >= self.settings.max_parallel:
            return self._too_many()
        return None

    def _too_many(self) -> CapsearchError:
        n = self.settings.max_parallel
        return CapsearchError(
            f"At most {n} uploads can be in progress at once; wait for one to finish.",
            code="too_many_uploads",
        )

    async def resume(self, message: UploadResume) -> None:
        if message.id not in self._uploads and len(self._uploads) >= self.settings.max_parallel:
            # The page is told this upload is over, so its bytes must go too.
            if (stale := self.registry.get(message.id)) is not None and not stale.finishing:
                await self.registry.discard(stale)
            refusal = self._too_many()
            await self.reject(message.id, refusal.code, refusal.message)
            return
        try:
            upload = await self.registry.resume(message.id, self)
        except UploadError as e:
            await self.reject(message.id, e.code, e.message)
            return
        self._uploads[upload.id] = upload
        await self._accepted(upload)

    async def chunk(self, chunk: Chunk) -> None:
        upload = self._uploads.get(chunk.upload_id)
        if upload is None or upload.finishing or upload.owner is not self:
            raise ProtocolError(
                "binary_without_upload",
                "These bytes are for an upload that is not in progress on this connection.",
                chunk.upload_id,
            )
        limit = self.settings.chunk_size
        if len(chunk.payload) > limit:
            await self._fail(upload, "invalid_message", f"A chunk may carry at most {limit:,} bytes.")
            return
        try:
            offset = await self.registry.write(upload, chunk.offset, chunk.payload)
        except UploadError as e:
            if e.code == "bad_offset":
                rejected = UploadRejected(id=upload.id, code=e.code, detail=e.message, offset=e.offset)
                await self.channel.send(rejected)
            elif e.code == "binary_without_upload":
                await self.channel.send(ErrorOut(code=e.code, detail=e.message, id=upload.id))
            else:
                await self._fail(upload, e.code, e.message)
            return
        except OSError:
            log.exception("writing upload %s failed", upload.id)
            await self._fail(upload, "internal_error", "The server could not store this upload; try again.")
            return
        await self.channel.send(UploadAck(id=upload.id, offset=offset))

    async def end(self, message: UploadEnd) -> None:
        upload = self._uploads.get(message.id)
        if upload is None or upload.finishing or upload.owner is not self:
            raise ProtocolError("unknown_upload", "No upload with this id is in progress here.", message.id)
        upload.finishing = True
        # Its own task: intake takes a while, and the other uploads' chunks must keep flowing.
        self.channel.spawn(self._finish(upload, message.sha256))

    async def cancel(self, message: UploadCancel) -> None:
        upload = self._uploads.get(message.id)
        # Cancelling what is already gone or being finished is harmless and needs no answer.
        if upload is not None and not upload.finishing:
            del self._uploads[upload.id]
            await self.registry.discard(upload)

    async def _finish(self, upload: PartialUpload, sha256: str) -> None:
        try:
            received = await self.registry.complete(upload, sha256)
            result = await self.images.ingest(received, filename=upload.name or None, owner=self.id)
        except asyncio.CancelledError:
            upload.finishing = False  # the socket went away mid-intake: it may be resumed and ended again
            raise
        except CapsearchError as e:
            await self._fail(upload, e.code, e.message)
            return
        except Exception:
            log.exception("finishing upload %s failed", upload.id)
            await self._fail(upload, "internal_error", "The server could not process this file; try again.")
            return
        self._uploads.pop(upload.id, None)
        await self.registry.discard(upload)
        image = result.image
        await self.channel.send(UploadDone(id=upload.id, image_id=image.id, duplicate=not result.created))
        self.channel.watch(image.id, upload.id)

    # ---- the socket closed --------------------------------------------------------------------

    async def close(self, *, normal: bool) -> None:
        """Closed by the page: drop its partials now. Dropped: keep them for a resume (TTL)."""
        mine = [u for u in self._uploads.values() if u.owner is self]
        self._uploads.clear()
        if normal:
            for upload in mine:
                await self.registry.discard(upload)
        else:
            self.registry.detach(mine, self)
