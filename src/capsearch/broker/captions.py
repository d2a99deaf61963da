"""Durable caption jobs: web replicas queue them, model workers caption, write and acknowledge.

A job is a stream entry (one stream per priority) naming the image, its stored original and the job
token its row holds. Workers read them in one consumer group: `XREADGROUP COUNT <max batch> BLOCK`
is the dynamic batcher. The worker writes the caption itself (capsearch.broker.writes: idempotent,
guarded by the token) and acknowledges only after the commit. A job its worker never acknowledged
(the worker died) is claimed by another after `visibility_timeout_s` (`XAUTOCLAIM`); a job taken
`max_attempts` times without success fails its image with a clear error instead of cycling forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from PIL import Image as PILImage
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, Priority
from capsearch.broker import writes
from capsearch.broker.health import now_ms
from capsearch.broker.keys import GROUP, Keys
from capsearch.broker.serve import ensure_group, read_entries
from capsearch.broker.settings import BrokerSettings
from capsearch.config import LimitSettings
from capsearch.db.models import Image
from capsearch.db.outage import is_unavailable
from capsearch.errors import CapsearchError, IntakeError, ShuttingDownError
from capsearch.intake.images import normalise_image
from capsearch.storage import ContentStore
from capsearch.text import clean_text

log = logging.getLogger(__name__)

# Batches a worker holds at once: the next is read, decoded and marked while the model runs the
# current one, so the model does not wait on Redis, the store or the database between batches.
IN_HAND = 2


class CaptionQueue:
    """The web replica's side: queue a job, and tell whether a job is still queued or running."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    async def enqueue(self, image: Image, job: str, priority: Priority) -> None:
        fields: dict[Any, Any] = {
            "image_id": str(image.id),
            "job": job,
            "sha256": image.sha256,
            "mime": image.mime,
        }
        async with self.redis.pipeline(transaction=True) as p:
            p.xadd(self.keys.captions(priority), fields)
            p.hset(self.keys.caption_jobs(), job, str(image.id))
            await p.execute()

    async def is_live(self, job: str) -> bool:
        return bool(await cast(Awaitable[bool], self.redis.hexists(self.keys.caption_jobs(), job)))


@dataclass(frozen=True)
class Job:
    stream: str
    entry_id: bytes
    image_id: int
    token: str
    sha256: str
    mime: str
    attempts: int

    @property
    def priority(self) -> Priority:
        return Priority.BACKGROUND if self.stream.endswith("background") else Priority.INTERACTIVE


class CaptionWorker:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        settings: BrokerSettings,
        sessions: async_sessionmaker[AsyncSession],
        store: ContentStore,
        limits: LimitSettings,
        captioner: Batcher[PILImage.Image, str],
        caption_model: str,
        embed: Callable[[str], Awaitable[np.ndarray | None]],
        embed_model: str | None,
        consumer: str,
        max_batch: int,
        published: Callable[[Image], Awaitable[None]],
    ) -> None:
        self.redis, self.keys, self.settings = redis, keys, settings
        self.sessions, self.store, self.limits = sessions, store, limits
        self.captioner, self.caption_model = captioner, caption_model
        self.embed, self.embed_model = embed, embed_model
        self.consumer, self.max_batch, self.published = consumer, max_batch, published
        self.streams = [keys.captions(p) for p in (Priority.INTERACTIVE, Priority.BACKGROUND)]
        self._stopping = False
        # A batch that failed is retried one image at a time, so one poison image fails alone.
        self._solo = asyncio.Lock()

    async def run(self) -> None:
        for stream in self.streams:
            await ensure_group(self.redis, stream)
        last_reclaim = 0
        in_hand: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                if len(in_hand) >= IN_HAND:
                    await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    entries: list[tuple[str, tuple[bytes, dict[bytes, bytes]]]] = []
                    if now_ms() - last_reclaim > self.settings.visibility_timeout_s * 250:
                        last_reclaim = now_ms()
                        entries = await self._reclaimed()
                    if not entries:
                        entries = await read_entries(
                            self.redis, self.streams, self.consumer, self.max_batch, 500
                        )
                except Exception as e:  # Redis away for a moment: the jobs wait there
                    log.warning("caption jobs: %s", e)
                    await asyncio.sleep(0.5)
                    continue
                if entries:
                    task = asyncio.create_task(self._batch(entries))
                    in_hand.add(task)
                    task.add_done_callback(in_hand.discard)
        except asyncio.CancelledError:
            for task in in_hand:  # unacknowledged, they go to another worker
                task.cancel()
            raise
        finally:
            if in_hand:  # stopping: the batches in hand finish first
                await asyncio.wait(in_hand)

    def stop(self) -> None:
        """Take no new jobs; the batch in hand is finished (run() returns after it)."""
        self._stopping = True

    async def _reclaimed(self) -> list[tuple[str, tuple[bytes, dict[bytes, bytes]]]]:
        idle_ms = int(self.settings.visibility_timeout_s * 1000)
        for stream in self.streams:
            _, entries, _ = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, idle_ms, count=self.max_batch
            )
            if entries:
                log.info("caption jobs: took over %d job(s) a stopped worker left", len(entries))
                return [(stream, e) for e in entries]
        return []

    async def _batch(self, entries: list[tuple[str, tuple[bytes, dict[bytes, bytes]]]]) -> None:
        try:
            await self._jobs(entries)
        except Exception as e:  # Redis or the database away: unacknowledged, the jobs come back
            log.warning("caption jobs: %s", e)

    async def _jobs(self, entries: list[tuple[str, tuple[bytes, dict[bytes, bytes]]]]) -> None:
        jobs = []
        for stream, (entry_id, f) in entries:
            attempts = int(
                await cast(
                    Awaitable[int], self.redis.hincrby(self.keys.caption_attempts(), entry_id.decode(), 1)
                )
            )
            job = Job(
                stream, entry_id, int(f[b"image_id"]), f[b"job"].decode(), f[b"sha256"].decode(),
                f[b"mime"].decode(), attempts,
            )  # fmt: skip
            if attempts > self.settings.max_attempts:
                log.error(
                    "caption job %s (image %s) failed %d times; giving up",
                    entry_id,
                    job.image_id,
                    attempts - 1,
                )
                await self._finish(job, error=self._poison_message())
            else:
                jobs.append(job)
        await asyncio.gather(*(self._one(job) for job in jobs))

    def _poison_message(self) -> str:
        return (
            f"Captioning this image failed {self.settings.max_attempts} times (the model failed or its "
            "worker stopped each time), so it was given up. Upload it again to retry."
        )

    async def _one(self, job: Job) -> None:
        try:
            data = await asyncio.to_thread(self.store.read_original, job.sha256, job.mime)
            norm = await asyncio.to_thread(normalise_image, data, self.limits, sha256=job.sha256)
        except FileNotFoundError:
            await self._finish(
                job, error="The stored original of this image is missing, so it cannot be captioned."
            )
            return
        except IntakeError as e:
            await self._finish(job, error=e.message)
            return
        marked = await writes.mark_captioning(self.sessions, job.image_id, job.token)
        if marked is not None:
            await self.published(marked)
        try:
            caption = await self.captioner.run(norm.display, job.priority)
        except ShuttingDownError:
            return  # not acknowledged: another worker takes it after the visibility timeout
        except CapsearchError:
            try:
                async with self._solo:
                    caption = await self.captioner.run(norm.display, job.priority)
            except CapsearchError as e:
                # Not acknowledged: retried after the visibility timeout, until max_attempts.
                log.warning("caption job %s (image %s) failed: %s", job.entry_id, job.image_id, e.message)
                return
        await self._finish(job, caption=clean_text(caption))

    async def _finish(self, job: Job, *, caption: str | None = None, error: str | None = None) -> None:
        try:
            image = await self._write(job, caption, error)
        except Exception as e:
            if not (is_unavailable(e) or isinstance(e, CapsearchError)):
                raise
            # The database or the embedder away is nobody's fault: this delivery does not count
            # towards max_attempts, and the job comes back after the visibility timeout.
            await self.redis.hincrby(self.keys.caption_attempts(), job.entry_id.decode(), -1)  # type: ignore[misc]
            log.warning("caption job %s: not written (%s); it is retried later", job.entry_id, e)
            return
        await self._after_commit(job, image)

    async def _write(self, job: Job, caption: str | None, error: str | None) -> Image | None:
        if caption is None:
            return await writes.write_failure(self.sessions, job.image_id, job.token, error or "")
        vector = await self.embed(caption)
        return await writes.write_caption(
            self.sessions, job.image_id, job.token, caption=caption,
            caption_model=self.caption_model, vector=vector, embed_model=self.embed_model,
        )  # fmt: skip

    async def _after_commit(self, job: Job, image: Image | None) -> None:
        """Acknowledged only now that the outcome is committed (or the job turned out stale)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.xack(job.stream, GROUP, job.entry_id)
            p.xdel(job.stream, job.entry_id)
            p.hdel(self.keys.caption_attempts(), job.entry_id.decode())
            p.hdel(self.keys.caption_jobs(), job.token)
            await p.execute()
        if image is not None:
            await self.published(image)
