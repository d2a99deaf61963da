"""The image flow shared by REST, WebSocket and CLI import: intake → store → row → caption.

Ordering matters for "nothing is lost, nothing half-written": the caption request is queued first
(a full queue refuses before anything is written), then files are stored, then the row is inserted;
if the insert fails the files it wrote are removed again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, Priority
from capsearch.config import Settings
from capsearch.db.models import Image, ImageStatus
from capsearch.errors import CapsearchError, NotFoundError, ShuttingDownError
from capsearch.events import Event, EventBus
from capsearch.intake.images import NormalisedImage, normalise_image
from capsearch.services import repo
from capsearch.services.captioning import CaptionJobs, StartTracker
from capsearch.services.indexing import SearchIndexer
from capsearch.storage import ContentStore

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    image: Image
    created: bool


class ImageService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        store: ContentStore,
        captioner: Batcher[PILImage.Image, str],
        caption_model: str,
        events: EventBus,
        indexer: SearchIndexer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.captioner = captioner
        self.caption_model = caption_model
        self.events = events
        # Without one (tests of the upload flow alone), captions are stored but not made searchable.
        self.indexer = indexer
        self.jobs = CaptionJobs()

    # ---- intake -------------------------------------------------------------------------------

    async def normalise(self, data: bytes) -> NormalisedImage:
        return await asyncio.to_thread(
            normalise_image, data, self.settings.limits, self.settings.storage.thumbnail_size
        )

    async def ingest(
        self,
        data: bytes,
        filename: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        owner: str | None = None,
    ) -> IngestResult:
        """Validate, store and queue one image for captioning; raises IntakeError/BusyError.

        `owner` names who waits for the caption (a page's connection); see `release_owner`.
        """
        norm = await self.normalise(data)
        async with self.sessions() as s:
            existing = await repo.get_by_sha(s, norm.sha256)
        if existing is not None:
            await self._retry_if_failed(existing, norm, data, priority)
            self.jobs.own(existing.id, owner)
            return IngestResult(existing, created=False)

        tracker = self._tracker()
        future = self.captioner.submit(norm.display, priority, on_start=tracker.started)
        try:
            image = await self._store_and_insert(norm, data, filename, tracker)
        except IntegrityError:
            # Someone stored the same bytes between our lookup and insert: theirs wins.
            future.cancel()
            async with self.sessions() as s:
                winner = await repo.get_by_sha(s, norm.sha256)
            if winner is None:
                raise
            return IngestResult(winner, created=False)
        except BaseException:
            future.cancel()
            raise
        tracker.attach(image.id, inserted_as_started=image.status is ImageStatus.CAPTIONING)
        self.jobs.start(image.id, future, tracker, self._finish_caption(image.id, future))
        self.jobs.own(image.id, owner)
        self._publish(image)
        return IngestResult(image, created=True)

    async def _store_and_insert(
        self, norm: NormalisedImage, data: bytes, filename: str | None, tracker: StartTracker
    ) -> Image:
        existed = await asyncio.to_thread(self.store.exists, norm.sha256, norm.mime)
        await asyncio.to_thread(self.store.put, norm.sha256, norm.mime, data, norm.thumbnail_jpeg)
        image = Image(
            sha256=norm.sha256,
            mime=norm.mime,
            width=norm.width,
            height=norm.height,
            size_bytes=norm.size_bytes,
            filename=filename,
            status=ImageStatus.CAPTIONING if tracker.has_started else ImageStatus.RECEIVED,
        )
        try:
            async with self.sessions() as s, s.begin():
                s.add(image)
        except IntegrityError:
            raise
        except BaseException:
            if not existed:
                await asyncio.to_thread(self.store.delete, norm.sha256, norm.mime)
            raise
        return image

    async def _retry_if_failed(
        self, image: Image, norm: NormalisedImage, data: bytes, priority: Priority
    ) -> None:
        """Sending the same bytes again after a failed caption is a person asking to retry."""
        if image.status is not ImageStatus.FAILED or self.jobs.in_flight(image.id):
            return
        tracker = self._tracker(image.id)
        future = self.captioner.submit(norm.display, priority, on_start=tracker.started)
        await asyncio.to_thread(self.store.put, norm.sha256, norm.mime, data, norm.thumbnail_jpeg)
        async with self.sessions() as s, s.begin():
            await repo.set_status(s, image.id, ImageStatus.RECEIVED)
        image.status, image.error = ImageStatus.RECEIVED, None
        self.jobs.start(image.id, future, tracker, self._finish_caption(image.id, future))
        self._publish(image)

    # ---- captioning ---------------------------------------------------------------------------

    def _tracker(self, image_id: int | None = None) -> StartTracker:
        return StartTracker(self._on_caption_started, image_id)

    def _on_caption_started(self, image_id: int) -> None:
        self.jobs.spawn(self._mark_captioning(image_id))

    def release_owner(self, owner: str) -> int:
        """A page went away: its queued, not yet started captions that nobody else wants leave the
        interactive queue and are captioned later at background priority. Returns how many moved."""
        released = self.jobs.release(owner)
        for image_id in released:
            self.jobs.track(image_id, self.jobs.spawn(self._requeue_background(image_id)))
        return len(released)

    async def _requeue_background(self, image_id: int) -> None:
        async with self.sessions() as s:
            image = await repo.get(s, image_id)
        if image is not None:
            await self._recaption_from_store(image, asyncio.Semaphore(1))

    async def _finish_caption(self, image_id: int, future: asyncio.Future[str]) -> None:
        try:
            caption = await future
        except (ShuttingDownError, asyncio.CancelledError):
            # Left as "received": the next start picks it up again (resume_unfinished).
            return
        except CapsearchError as e:
            await self._mark(image_id, ImageStatus.FAILED, error=e.message)
        except Exception as e:  # defensive: a bug must still leave a visible failed state
            log.exception("captioning image %s failed", image_id)
            await self._mark(image_id, ImageStatus.FAILED, error=f"Captioning failed: {e}")
        else:
            await self._caption_ready(image_id, caption)

    async def _caption_ready(self, image_id: int, caption: str) -> None:
        if self.indexer is None:
            await self._mark(image_id, ImageStatus.READY, caption=caption, caption_model=self.caption_model)
            return
        # Embedded before the row turns ready, in the same transaction: "ready" (and wait=true) means
        # findable. If embedding fails the caption is still kept; the next start embeds it.
        vector = await self.indexer.embed(caption)
        fields = {"status": ImageStatus.READY, "caption": caption, "caption_model": self.caption_model}
        image = await self.indexer.apply(image_id, fields | {"error": None}, caption, vector)
        if image is not None:
            self._publish(image)

    async def _mark_captioning(self, image_id: int) -> None:
        async with self.sessions() as s:
            async with s.begin():
                changed = await repo.mark_captioning(s, image_id)
            image = await repo.get(s, image_id) if changed else None
        if image is not None:
            self._publish(image)

    async def _mark(self, image_id: int, status: ImageStatus, **fields: str | None) -> None:
        async with self.sessions() as s:
            async with s.begin():
                await repo.set_status(s, image_id, status, **fields)
            image = await repo.get(s, image_id)
        if image is not None:
            self._publish(image)

    async def wait_captioned(self, image_id: int) -> Image:
        """Wait until an image's caption is in (or has failed); a cancelled waiter does not cancel it."""
        await self.jobs.wait(image_id)
        return await self.get(image_id)

    async def resume_unfinished(self) -> int:
        """Re-queue images a previous process accepted but never captioned (it stopped mid-way)."""
        async with self.sessions() as s:
            rows = await repo.unfinished(s)
        # Bounded so a large backlog trickles through the queue instead of tripping its limit.
        gate = asyncio.Semaphore(self.settings.caption_batch.max_batch_size)
        for image in rows:
            self.jobs.spawn(self._recaption_from_store(image, gate))
        if rows:
            log.info("resuming captioning of %d unfinished image(s)", len(rows))
        return len(rows)

    async def _recaption_from_store(self, image: Image, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                data = await asyncio.to_thread(self.store.read_original, image.sha256, image.mime)
                norm = await self.normalise(data)
                tracker = self._tracker(image.id)
                future = self.captioner.submit(norm.display, Priority.BACKGROUND, tracker.started)
                caption = await future
        except ShuttingDownError:
            return
        except (CapsearchError, OSError) as e:
            await self._mark(image.id, ImageStatus.FAILED, error=getattr(e, "message", str(e)))
        else:
            await self._caption_ready(image.id, caption)

    # ---- reads --------------------------------------------------------------------------------

    async def get(self, image_id: int) -> Image:
        async with self.sessions() as s:
            image = await repo.get(s, image_id)
        if image is None:
            raise NotFoundError(f"There is no image with id {image_id}.")
        return image

    async def get_by_sha256(self, sha256: str) -> Image:
        async with self.sessions() as s:
            image = await repo.get_by_sha(s, sha256.lower())
        if image is None:
            raise NotFoundError("No image with that SHA-256 is stored.")
        return image

    async def page(self, limit: int, before_id: int | None) -> tuple[list[Image], int]:
        async with self.sessions() as s:
            items, total = await repo.page(s, limit, before_id)
        return list(items), total

    # ---- edits --------------------------------------------------------------------------------

    def _search(self) -> SearchIndexer:
        if self.indexer is None:
            raise RuntimeError("ImageService was built without a SearchIndexer")
        return self.indexer

    async def edit_caption(self, image_id: int, text: str) -> Image:
        """Set the person's caption (the model's is kept beside it); re-embedded and re-indexed before
        this returns. Raises NotFoundError, or BusyError with nothing changed."""
        indexer = self._search()
        await self.get(image_id)  # a missing image is a 404 before any model work
        vector = await indexer.embedder.run(text, Priority.INTERACTIVE)
        image = await indexer.apply(image_id, {"user_caption": text}, text, vector)
        if image is None:
            raise NotFoundError(f"There is no image with id {image_id}.")
        self._publish(image)
        return image

    async def delete(self, image_id: int) -> None:
        """Row (with its embeddings), index entry, then files; raises NotFoundError."""
        image = await self._search().delete(image_id)
        if image is None:
            raise NotFoundError(f"There is no image with id {image_id}.")
        # Files go only once the delete has committed. If the same bytes were uploaded again in the
        # meantime, the files belong to that new row and stay.
        async with self.sessions() as s:
            again = await repo.get_by_sha(s, image.sha256)
        if again is None:
            await asyncio.to_thread(self.store.delete, image.sha256, image.mime)
        self.events.publish(Event("image.deleted", {"id": image_id}))

    # ---- lifecycle ----------------------------------------------------------------------------

    def _publish(self, image: Image) -> None:
        self.events.publish(Event("image.updated", {"id": image.id, "status": image.status.value}))

    async def close(self) -> None:
        """Runs after the batcher has stopped, so every caption future has settled by now."""
        await self.jobs.close()
