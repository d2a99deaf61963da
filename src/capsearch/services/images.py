"""The image flow shared by REST, WebSocket and CLI import: intake → store → row → caption.

Ordering matters for "nothing is lost, nothing half-written": the caption request is queued first
(a full queue refuses before anything is written), then files are stored, then the row is inserted;
if the insert fails the files it wrote are removed again. The hash is claimed from the file write to
the insert, so the maintenance sweep never takes those files for orphans.
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
from capsearch.errors import CapsearchError, DatabaseUnavailableError, NotFoundError, ShuttingDownError
from capsearch.events import Event, EventBus
from capsearch.intake.images import NormalisedImage, normalise_image
from capsearch.services import repo
from capsearch.services.captioning import CaptionJobs, CaptionWriter, Recaptioner, StartTracker
from capsearch.services.indexing import SearchIndexer
from capsearch.services.maintenance import StoreClaims
from capsearch.shutdown import ShutdownClock
from capsearch.storage import ContentStore
from capsearch.text import clean_text

log = logging.getLogger(__name__)

# A wait=true caller whose caption keeps getting lost (an outage longer than the write retries) is told
# to come back rather than held forever.
WAIT_ROUNDS = 3


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
        clock: ShutdownClock | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.captioner = captioner
        self.caption_model = caption_model
        self.events = events
        # Without one (tests of the upload flow alone), captions are stored but not made searchable.
        self.indexer = indexer
        self.clock = clock or ShutdownClock(settings.server.shutdown_grace_s)
        self.jobs = CaptionJobs(self.clock)
        self.claims = StoreClaims()
        self.writer = CaptionWriter(
            sessions=sessions,
            indexer=indexer,
            caption_model=caption_model,
            retry_s=settings.maintenance.db_retry_s,
            publish=self._publish,
        )
        self.recaptioner = Recaptioner(
            sessions=sessions,
            store=store,
            captioner=captioner,
            normalise=self.normalise,
            tracker=self._tracker,
            jobs=self.jobs,
            writer=self.writer,
            background_slots=settings.caption_batch.max_batch_size,
        )

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
            await self._restart_if_idle(existing, norm, data, priority)
            self.jobs.own(existing.id, owner)
            return IngestResult(existing, created=False)

        tracker = self._tracker()
        future = self.captioner.submit(norm.display, priority, on_start=tracker.started)
        try:
            async with self.claims.hold(norm.sha256):
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

    async def _restart_if_idle(
        self, image: Image, norm: NormalisedImage, data: bytes, priority: Priority
    ) -> None:
        """Sending the same bytes again restarts a caption nobody is working on: a failed one (a person
        asking to retry) or one lost to an outage or a crash (else it would wait for the sweep)."""
        if image.status is ImageStatus.READY or self.jobs.in_flight(image.id):
            return
        tracker = self._tracker(image.id)
        future = self.captioner.submit(norm.display, priority, on_start=tracker.started)
        try:
            async with self.claims.hold(norm.sha256):
                await asyncio.to_thread(self.store.put, norm.sha256, norm.mime, data, norm.thumbnail_jpeg)
            if image.status is ImageStatus.FAILED:
                async with self.sessions() as s, s.begin():
                    await repo.set_status(s, image.id, ImageStatus.RECEIVED)
                image.status, image.error = ImageStatus.RECEIVED, None
        except BaseException:
            future.cancel()
            raise
        self.jobs.start(image.id, future, tracker, self._finish_caption(image.id, future))
        self._publish(image)

    # ---- captioning ---------------------------------------------------------------------------

    def _tracker(self, image_id: int | None = None) -> StartTracker:
        return StartTracker(self._on_caption_started, image_id)

    def _on_caption_started(self, image_id: int) -> None:
        self.jobs.spawn(self.writer.captioning(image_id))

    def release_owner(self, owner: str) -> int:
        """A page went away: its queued, not yet started captions that nobody else wants leave the
        interactive queue and are captioned later at background priority. Returns how many moved."""
        released = self.jobs.release(owner)
        for image_id in released:
            self.recaptioner.requeue_by_id(image_id)
        return len(released)

    async def _finish_caption(self, image_id: int, future: asyncio.Future[str]) -> None:
        try:
            caption = await future
        except (ShuttingDownError, asyncio.CancelledError):
            # Left as "received": the next start picks it up again (resume_unfinished).
            return
        except CapsearchError as e:
            await self.writer.failed(image_id, e.message)
        except Exception as e:  # defensive: a bug must still leave a visible failed state
            log.exception("captioning image %s failed", image_id)
            await self.writer.failed(image_id, f"Captioning failed: {e}")
        else:
            await self.writer.ready(image_id, caption)

    async def wait_captioned(self, image_id: int) -> Image:
        """Wait until an image's caption is in (or has failed); a cancelled waiter does not cancel it.
        Never answers with an unfinished image: a caption lost meanwhile (its write gave up during an
        outage) is queued again; ShuttingDownError once shutdown's grace runs out."""
        for _ in range(WAIT_ROUNDS):
            await self.jobs.wait(image_id)
            image = await self.get(image_id)
            if image.status not in repo.UNFINISHED:
                return image
            if self.clock.begun:
                raise ShuttingDownError("The server is stopping; this image is captioned after it restarts.")
            self.recaptioner.requeue(image, Priority.INTERACTIVE)
        raise DatabaseUnavailableError("The caption could not be saved yet; it is kept and retried later.")

    async def resume_unfinished(self) -> int:
        """Re-queue images a previous process accepted but never captioned (it stopped mid-way)."""
        async with self.sessions() as s:
            rows = await repo.unfinished(s)
        for image in rows:
            self.recaptioner.requeue(image)
        if rows:
            log.info("resuming captioning of %d unfinished image(s)", len(rows))
        return len(rows)

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
        text = clean_text(text)
        if not text:
            raise CapsearchError(
                "The caption has no visible text; write a few words.", code="empty_caption", status_code=422
            )
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
        # meantime, the files belong to that new row and stay (the claim keeps an upload from racing).
        async with self.claims.hold(image.sha256):
            async with self.sessions() as s:
                again = await repo.get_by_sha(s, image.sha256)
            if again is None:
                await asyncio.to_thread(self.store.delete, image.sha256, image.mime)
        self.events.publish(Event("image.deleted", {"id": image_id}))

    # ---- lifecycle ----------------------------------------------------------------------------

    def _publish(self, image: Image) -> None:
        self.events.publish(Event("image.updated", {"id": image.id, "status": image.status.value}))

    async def close(self) -> None:
        """Runs after the batcher has stopped, so every caption future has settled by now; tasks still
        writing (an outage) get what is left of shutdown's grace."""
        await self.jobs.close()
