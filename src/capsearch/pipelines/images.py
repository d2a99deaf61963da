"""The image flow, one step after another: intake → store → row → caption → embed → index → publish.

REST uploads, socket uploads and the CLI import all enter at `ingest`. The steps:

1. intake    `normalise`: decode, check, orient, thumbnail (capsearch.intake), in a worker thread.
2. caption   queued first, so a full queue refuses before anything is written (`captioner.submit`).
3. store     originals and thumbnails by hash (capsearch.storage); a socket upload's temp file,
             already hashed as it arrived, is moved in rather than copied.
4. row       inserted; if that fails, the files it wrote are removed again. The hash is claimed from
             the file write to the insert, so the maintenance sweep never takes them for orphans.
5. embed     when the caption lands (`_caption_landed`): the caption's vector, at background priority.
6. index     the caption, its vector and the index in one write (SearchIndexer.apply via CaptionWriter).
7. publish   an `ImageChanged` snapshot on the event bus at every stage; pages render it (ws.feed).

The rules around captions in flight (duplicates join them, a closed page lets go of them, restarts
and outages re-queue them) live in capsearch.services.captioning.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, Priority
from capsearch.config import Settings
from capsearch.db.models import Image, ImageStatus
from capsearch.errors import CapsearchError, DatabaseUnavailableError, NotFoundError, ShuttingDownError
from capsearch.events import EventBus, ImageChanged
from capsearch.intake.images import NormalisedImage, normalise_image
from capsearch.services import repo
from capsearch.services.caption_writer import CaptionWriter
from capsearch.services.captioning import CaptionJobs, Recaptioner, StartTracker
from capsearch.services.indexing import SearchIndexer
from capsearch.services.maintenance import StoreClaims
from capsearch.shutdown import ShutdownClock
from capsearch.storage import ContentStore
from capsearch.text import clean_text

log = logging.getLogger(__name__)

# A wait=true caller whose caption keeps getting lost (an outage longer than the write retries) is told
# to come back rather than held forever.
WAIT_ROUNDS = 3


@dataclass(frozen=True)
class Received:
    """An upload already on disk, on the store's filesystem, hashed as its bytes arrived."""

    path: Path
    sha256: str


Source = bytes | Received


@dataclass
class IngestResult:
    image: Image
    created: bool


class ImagePipeline:
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
            publish=self.publish,
        )
        self.recaptioner = Recaptioner(
            sessions=sessions,
            store=store,
            captioner=captioner,
            normalise=self.normalise,
            tracker=self._tracker,
            jobs=self.jobs,
            landed=self._caption_landed,
            failed=self.writer.failed,
            background_slots=settings.caption_batch.max_batch_size,
        )

    async def ingest(
        self,
        source: Source,
        filename: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        owner: str | None = None,
    ) -> IngestResult:
        """Validate, store and queue one image for captioning; raises IntakeError/BusyError.

        `owner` names who waits for the caption (a page's connection); see `release_owner`.
        """
        norm = await self.normalise(source)  # 1. intake
        async with self.sessions() as s:
            existing = await repo.get_by_sha(s, norm.sha256)
        if existing is not None:
            await self._restart_if_idle(existing, norm, source, priority)
            self.jobs.own(existing.id, owner)
            return IngestResult(existing, created=False)

        tracker = self._tracker()
        future = self.captioner.submit(norm.display, priority, on_start=tracker.started)  # 2. caption
        try:
            async with self.claims.hold(norm.sha256):
                existed = await self._store(norm, source)  # 3. store
                image = await self._insert(norm, filename, tracker, keep_files=existed)  # 4. row
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
        self.publish(image)  # 7. publish: the new card, queued (or already captioning)
        return IngestResult(image, created=True)

    # ---- 1. intake ----------------------------------------------------------------------------

    async def normalise(self, source: Source) -> NormalisedImage:
        return await asyncio.to_thread(self._normalise_blocking, source)

    def _normalise_blocking(self, source: Source) -> NormalisedImage:
        limits, size = self.settings.limits, self.settings.storage.thumbnail_size
        if isinstance(source, Received):
            # Read once, to decode; the digest was taken as the bytes arrived.
            return normalise_image(source.path.read_bytes(), limits, size, sha256=source.sha256)
        return normalise_image(source, limits, size)

    # ---- 3. store, 4. row ---------------------------------------------------------------------

    async def _store(self, norm: NormalisedImage, source: Source) -> bool:
        """Write the files unless they are there; returns whether they already were."""
        existed = await asyncio.to_thread(self.store.exists, norm.sha256, norm.mime)
        if isinstance(source, Received):
            await asyncio.to_thread(
                self.store.adopt, norm.sha256, norm.mime, source.path, norm.thumbnail_jpeg
            )
        else:
            await asyncio.to_thread(self.store.put, norm.sha256, norm.mime, source, norm.thumbnail_jpeg)
        return existed

    async def _insert(
        self, norm: NormalisedImage, filename: str | None, tracker: StartTracker, *, keep_files: bool
    ) -> Image:
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
            raise  # the same bytes were stored by someone else: the files are theirs now
        except BaseException:
            if not keep_files:  # written for this row alone (the claim keeps everyone else off them)
                await asyncio.to_thread(self.store.delete, norm.sha256, norm.mime)
            raise
        return image

    async def _restart_if_idle(
        self, image: Image, norm: NormalisedImage, source: Source, priority: Priority
    ) -> None:
        """Sending the same bytes again restarts a caption nobody is working on: a failed one (a person
        asking to retry) or one lost to an outage or a crash (else it would wait for the sweep)."""
        if image.status is ImageStatus.READY or self.jobs.in_flight(image.id):
            return
        tracker = self._tracker(image.id)
        future = self.captioner.submit(norm.display, priority, on_start=tracker.started)
        try:
            async with self.claims.hold(norm.sha256):
                await self._store(norm, source)
            if image.status is ImageStatus.FAILED:
                async with self.sessions() as s, s.begin():
                    await repo.set_status(s, image.id, ImageStatus.RECEIVED)
                image.status, image.error = ImageStatus.RECEIVED, None
        except BaseException:
            future.cancel()
            raise
        self.jobs.start(image.id, future, tracker, self._finish_caption(image.id, future))
        self.publish(image)

    # ---- 2. caption, 5. embed, 6. index -------------------------------------------------------

    def _tracker(self, image_id: int | None = None) -> StartTracker:
        return StartTracker(self._on_caption_started, image_id)

    def _on_caption_started(self, image_id: int) -> None:
        self.jobs.spawn(self.writer.captioning(image_id))

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
            await self._caption_landed(image_id, caption)

    async def _caption_landed(self, image_id: int, caption: str) -> None:
        # Cleaned like a person's caption: PostgreSQL cannot store NUL, and no caption hides text.
        caption = clean_text(caption)
        # Embedded before the row turns ready, so "ready" (and wait=true) means findable. If embedding
        # fails the caption is still kept; the next start embeds it.
        vector = await self.indexer.embed(caption) if self.indexer is not None else None
        await self.writer.ready(image_id, caption, vector)

    # ---- 7. publish ---------------------------------------------------------------------------

    def publish(self, image: Image) -> None:
        self.events.publish(ImageChanged.of(image))

    # ---- waiting, releasing, resuming ---------------------------------------------------------

    def release_owner(self, owner: str) -> int:
        """A page went away: its queued, not yet started captions that nobody else wants leave the
        interactive queue and are captioned later at background priority. Returns how many moved."""
        released = self.jobs.release(owner)
        for image_id in released:
            self.recaptioner.requeue_by_id(image_id)
        return len(released)

    async def wait_captioned(self, image_id: int) -> Image:
        """Wait until an image's caption is in (or has failed); a cancelled waiter does not cancel it.
        Never answers with an unfinished image: a caption lost meanwhile (its write gave up during an
        outage) is queued again; ShuttingDownError once shutdown's grace runs out."""
        for _ in range(WAIT_ROUNDS):
            await self.jobs.wait(image_id)
            async with self.sessions() as s:
                image = await repo.get(s, image_id)
            if image is None:
                raise NotFoundError(f"There is no image with id {image_id}.")
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

    async def close(self) -> None:
        """Runs after the batcher has stopped, so every caption future has settled by now; tasks still
        writing (an outage) get what is left of shutdown's grace."""
        await self.jobs.close()
