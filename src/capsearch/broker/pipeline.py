"""The image flow of a web replica in distributed mode: intake, store and row happen here as in one
process; the caption is a durable job that a model worker captions, writes and publishes.

The row carries the job's token (`caption_job`), so a job delivered twice, or one superseded by a
newer job, writes nothing. Waiting for a caption (`wait=true`) follows the events that reach this
replica, with a look at the row now and then in case an event was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError

from capsearch.batching import Priority
from capsearch.broker import writes
from capsearch.broker.captions import CaptionQueue
from capsearch.broker.health import Census
from capsearch.db.models import Image, ImageStatus
from capsearch.errors import NotFoundError, ShuttingDownError
from capsearch.events import ImageChanged
from capsearch.pipelines.images import ImagePipeline, IngestResult, Source
from capsearch.services import repo

log = logging.getLogger(__name__)

# A waiter looks at the row itself this often, in case the event it waits for was missed.
RECHECK_S = 1.0


class BrokeredImagePipeline(ImagePipeline):
    def __init__(self, *, queue: CaptionQueue, census: Census, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.queue, self.census = queue, census
        self.recaptioner = JobRequeuer(self)  # type: ignore[assignment]
        self._tasks: set[asyncio.Task[bool]] = set()

    async def ingest(
        self,
        source: Source,
        filename: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        owner: str | None = None,
    ) -> IngestResult:
        await self.census.require("captioner")  # refused at once, before anything is written
        norm = await self.normalise(source)
        async with self.sessions() as s:
            existing = await repo.get_by_sha(s, norm.sha256)
        if existing is not None:
            if existing.status is ImageStatus.FAILED:
                async with self.claims.hold(norm.sha256):
                    await self._store(norm, source)
                await self.requeue(existing, priority)
            return IngestResult(existing, created=False)
        job = uuid.uuid4().hex
        image = Image(
            sha256=norm.sha256, mime=norm.mime, width=norm.width, height=norm.height,
            size_bytes=norm.size_bytes, filename=filename, status=ImageStatus.RECEIVED, caption_job=job,
        )  # fmt: skip
        try:
            async with self.claims.hold(norm.sha256):
                existed = await self._store(norm, source)
                try:
                    async with self.sessions() as s, s.begin():
                        s.add(image)
                except IntegrityError:
                    raise
                except BaseException:
                    if not existed:
                        await asyncio.to_thread(self.store.delete, norm.sha256, norm.mime)
                    raise
        except IntegrityError:
            async with self.sessions() as s:
                winner = await repo.get_by_sha(s, norm.sha256)
            if winner is None:
                raise
            return IngestResult(winner, created=False)
        try:
            await self.queue.enqueue(image, job, priority)
        except RedisError as e:  # Redis gone this instant: the sweep finds the job missing and queues it
            log.warning("image %s: its caption job could not be queued yet (%s)", image.id, e)
        self.publish(image)
        return IngestResult(image, created=True)

    async def requeue(self, image: Image, priority: Priority = Priority.BACKGROUND) -> bool:
        """A new job for a failed row, or for an unfinished one whose job was lost; False if another
        replica got there first, or its job is still queued."""
        job_left = image.status is not ImageStatus.FAILED and image.caption_job is not None
        if job_left and await self.queue.is_live(image.caption_job or ""):
            return False
        job = uuid.uuid4().hex
        if not await writes.assign_job(self.sessions, image.id, image.caption_job, job):
            return False
        image.caption_job, image.status, image.error = job, ImageStatus.RECEIVED, None
        await self.queue.enqueue(image, job, priority)
        log.info("image %s: caption job queued again", image.id)
        self.publish(image)
        return True

    def release_owner(self, owner: str) -> int:
        return 0  # durable jobs stay queued: another page may show the image, and it costs nobody

    async def wait_captioned(self, image_id: int) -> Image:
        async with self.events.subscribe() as sub:
            while True:
                async with self.sessions() as s:
                    image = await repo.get(s, image_id)
                if image is None:
                    raise NotFoundError(f"There is no image with id {image_id}.")
                if image.status not in repo.UNFINISHED:
                    return image
                if self.clock.expired.is_set():
                    raise ShuttingDownError("The server is stopping; this image is captioned by the workers.")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECHECK_S):
                        while True:
                            event = await sub.get()
                            if isinstance(event, ImageChanged) and event.image_id == image_id:
                                break

    async def resume_unfinished(self) -> int:
        """Jobs outlive this process; only rows whose job was lost are queued again."""
        async with self.sessions() as s:
            rows = await repo.unfinished(s)
        count = 0
        for image in rows:
            count += await self.requeue(image)
        if count:
            log.info("queued %d caption job(s) that had been lost", count)
        return count

    def spawn_requeue(self, image: Image, priority: Priority) -> None:
        task = asyncio.create_task(self.requeue(image, priority))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.clock.left())
        await super().close()


class JobRequeuer:
    """What the maintenance sweep calls to re-queue a stuck row: here, only if its job was lost."""

    def __init__(self, pipeline: BrokeredImagePipeline) -> None:
        self.pipeline = pipeline

    def requeue(self, image: Image, priority: Priority = Priority.BACKGROUND) -> bool:
        """Checks (in the background) whether the job was lost; False: nothing was queued yet."""
        self.pipeline.spawn_requeue(image, priority)
        return False

    def requeue_by_id(self, image_id: int) -> None:
        pass
