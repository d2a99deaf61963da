"""Keeps the search index equal to the stored embeddings of the current model.

Rules that make "the index always matches the database" hold:

* Every change goes database first: one transaction changes the image row and its embedding row
  together, it commits, and only then is the index updated. All such writes run under one asyncio
  lock, so the index sees them in commit order. Searches never take that lock.
* The index is saved a little later (debounced), not on every write. If the process dies before a
  save, the saved index no longer matches the database; the next start notices (ids + checksum) and
  rebuilds from the stored embeddings, with a log line saying so.
* Captions that have no vector of the current model (a crash before embedding, a new embedding model)
  are embedded at start, at background priority.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.batching import Batcher, Priority
from capsearch.config import SearchSettings
from capsearch.db.models import Image
from capsearch.errors import CapsearchError, ShuttingDownError
from capsearch.search import persist
from capsearch.search.index import VectorIndex, checksum
from capsearch.services import embedding_repo

log = logging.getLogger(__name__)

_BACKFILL_CHUNK = 1000


class SearchIndexer:
    def __init__(
        self,
        *,
        settings: SearchSettings,
        sessions: async_sessionmaker[AsyncSession],
        embedder: Batcher[str, np.ndarray],
        model: str,
        dim: int,
        index_dir: Path,
        background_slots: int,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.embedder = embedder
        self.model = model
        self.dim = dim
        self.index_dir = index_dir
        self.index = VectorIndex(dim, threshold=settings.approximate_threshold, nprobe=settings.nprobe)
        self._write = asyncio.Lock()
        self._save_lock = threading.Lock()
        self._rebuilding = False
        # Caption embeddings never hold more background slots than the batcher allows: a burst of
        # captions waits here instead of being refused with "busy".
        self._gate = asyncio.Semaphore(background_slots)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None
        self._last_save_s = 0.0

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.reconcile()
        self._spawn(self.backfill())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._dirty:
            await self.save()

    async def settle(self) -> None:
        """Wait until background work (backfill, rebuilds, pending saves) is done: tests, CLI."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- start-up check and rebuild -------------------------------------------------------------

    async def reconcile(self, *, force: bool = False) -> bool:
        """Load the saved index if it matches the database, else rebuild it. True if it was rebuilt."""
        async with self._write:
            async with self.sessions() as s:
                ids, vectors = await embedding_repo.load_all(s, self.model, self.dim)
            db_sum = await asyncio.to_thread(checksum, ids, vectors)
            reason = "a rebuild was requested" if force else await self._load_saved(db_sum, len(ids))
            if reason is None:
                log.info(
                    "search index: loaded %d vectors (%s), equal to the database", len(ids), self.index.kind
                )
                return False
            fresh = not len(ids) and not (self.index_dir / persist.META_FILE).exists()
            if fresh:  # a new installation: nothing to rebuild, nothing worth a warning
                log.info("search index: new and empty, in %s", self.index_dir)
            else:
                log.warning("search index: %s; rebuilding it from %d stored embeddings", reason, len(ids))
            started = perf_counter()
            self.index.begin_rebuild()
            await asyncio.to_thread(self.index.finish_rebuild, ids, vectors)
            self._dirty = True
            await self.save()
            if not fresh:
                log.info(
                    "search index: rebuilt %d vectors (%s) in %.1f s",
                    len(ids),
                    self.index.kind,
                    perf_counter() - started,
                )
            return not fresh

    async def _load_saved(self, db_sum: str, db_count: int) -> str | None:
        """None if the saved index was loaded and equals the database, else why it cannot be used."""
        try:
            meta = await asyncio.to_thread(persist.read_meta, self.index_dir)
            if meta.model == self.model and meta.checksum != db_sum:
                return (
                    f"the saved index ({meta.count} vectors, {meta.saved_at}) differs from the database "
                    f"({db_count} vectors)"
                )
            loaded, meta = await asyncio.to_thread(
                persist.load, self.index_dir, model=self.model, dim=self.dim
            )
        except persist.IndexLoadError as e:
            return str(e)
        self.index = VectorIndex(
            self.dim, threshold=self.settings.approximate_threshold, nprobe=self.settings.nprobe, index=loaded
        )
        return None

    def _changed(self) -> None:
        self._dirty = True
        if self._saver is None or self._saver.done():
            self._saver = self._spawn(self._save_soon())
        if not self._rebuilding and self.index.needs_rebuild():
            self._rebuilding = True
            self._spawn(self._rebuild_in_background())

    async def _save_soon(self) -> None:
        # A save costs seconds at a million vectors: never spend more than ~10% of the time saving.
        while self._dirty:
            await asyncio.sleep(max(self.settings.save_delay_s, 10 * self._last_save_s))
            await self.save()

    async def save(self) -> None:
        self._dirty = False  # before the clone: a write during the save marks it dirty again
        started = perf_counter()
        await asyncio.to_thread(self._save_blocking)
        self._last_save_s = perf_counter() - started

    def _save_blocking(self) -> None:
        # A thread lock, not an asyncio one: a save whose awaiting task was cancelled (shutdown) keeps
        # running in its thread, and the next save must not interleave its files with it.
        with self._save_lock:
            persist.save(self.index_dir, self.index.clone(), model=self.model, dim=self.dim)

    async def _rebuild_in_background(self) -> None:
        """The collection crossed the size that calls for another kind of index (or outgrew its IVF
        lists): rebuild from the index's own vectors while searches and writes go on."""
        try:
            old = self.index.kind
            started = perf_counter()
            await asyncio.to_thread(self.index.rebuild)
            log.info(
                "search index: %s → %s for %d vectors in %.1f s",
                old,
                self.index.kind,
                len(self.index),
                perf_counter() - started,
            )
            self._changed()
        finally:
            self._rebuilding = False

    # ---- embedding and writes -------------------------------------------------------------------

    def record_change(self, session: AsyncSession, image_id: int) -> None:
        """Inside each write's transaction: distributed mode appends to the change feed here."""

    async def embed(self, text: str, priority: Priority = Priority.BACKGROUND) -> np.ndarray | None:
        """A caption's vector, or None if the embedder failed (logged; embedded again at next start)."""
        async with self._gate:
            try:
                return await self.embedder.run(text, priority)
            except ShuttingDownError:
                return None
            except CapsearchError as e:
                log.warning("embedding a caption failed: %s", e.message)
                return None

    async def apply(
        self,
        image_id: int,
        changes: dict[str, Any],
        text: str | None = None,
        vector: np.ndarray | None = None,
    ) -> Image | None:
        """One transaction: `changes` to the image row, and `vector` as its embedding if `text` is
        still the caption it shows; then the index follows. None if the image no longer exists."""
        async with self._write:
            async with self.sessions() as s:
                async with s.begin():
                    image = await s.get(Image, image_id, with_for_update=True)
                    if image is None:
                        return None
                    for name, value in changes.items():
                        setattr(image, name, value)
                    store = vector is not None and text is not None and image.effective_caption == text
                    if store:
                        assert text is not None and vector is not None
                        await embedding_repo.upsert(s, image_id, self.model, text, vector)
                        self.record_change(s, image_id)
                await s.refresh(image)
            if store:
                assert vector is not None
                await asyncio.to_thread(self.index.upsert, [image_id], vector.reshape(1, -1))
                self._changed()
        return image

    async def delete(self, image_id: int) -> Image | None:
        """Delete the row (its embeddings go with it: ON DELETE CASCADE), then the index entry."""
        async with self._write:
            async with self.sessions() as s, s.begin():
                image = await s.get(Image, image_id, with_for_update=True)
                if image is None:
                    return None
                await s.delete(image)
                self.record_change(s, image_id)
            await asyncio.to_thread(self.index.remove, [image_id])
            self._changed()
        return image

    async def backfill(self) -> int:
        """Embed every shown caption that has no (current) vector; returns how many were embedded."""
        async with self.sessions() as s:
            rows = await embedding_repo.unembedded(s, self.model)
        if not rows:
            return 0
        log.info("search index: embedding %d caption(s) that have no vector yet", len(rows))

        async def one(image_id: int, text: str) -> bool:
            vector = await self.embed(text, Priority.BACKGROUND)
            return vector is not None and await self.apply(image_id, {}, text, vector) is not None

        done = 0
        for start in range(0, len(rows), _BACKFILL_CHUNK):
            chunk = rows[start : start + _BACKFILL_CHUNK]
            done += sum(await asyncio.gather(*(one(i, t) for i, t in chunk)))
        return done

    # ---- reads --------------------------------------------------------------------------------

    async def nearest(
        self, vector: np.ndarray, k: int, within: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The k nearest (image id, cosine), only among the ids `within` when given; in a thread."""
        return await asyncio.to_thread(self.index.search, vector, k, within)

    async def background(self, vector: np.ndarray) -> np.ndarray:
        """The query's cosines with (an even spread of) the collection: what "no match" is judged by."""
        return await asyncio.to_thread(self.index.background, vector, self.settings.background_sample)

    async def database_ids(self) -> set[int]:
        async with self.sessions() as s:
            return await embedding_repo.ids_for(s, self.model)
