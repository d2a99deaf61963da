"""Socket uploads that resume on any web replica.

Each replica keeps its partial uploads in its own folder of the shared store and records each one in
Redis (who holds it, where its bytes are, what was declared), for as long as it may be resumed. A page
whose socket reconnects to another replica sends `upload.resume` there: that replica takes the record
over (compare-and-set, so two replicas never both do), moves the partial file into its own folder,
hashes the bytes so far once to rebuild the running sha256, and goes on from that offset. The replica
that held it before finds the record no longer names it and lets go of its copy without deleting it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from capsearch.broker.health import Census
from capsearch.broker.keys import Keys
from capsearch.config import UploadSettings
from capsearch.errors import CapsearchError
from capsearch.pipelines.images import Received
from capsearch.ws.uploads import PartialUpload, SweepResult, UploadError, UploadOwner, UploadRegistry

log = logging.getLogger(__name__)

# Sets the holder only if it is still the one we read: KEYS[1] the record, ARGV[1] old, ARGV[2] new.
_TAKE_OVER = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'holder', ARGV[2])
  return 1
end
return 0
"""


class SharedUploadRegistry(UploadRegistry):
    def __init__(
        self,
        settings: UploadSettings,
        directory: Path,
        *,
        redis: Redis,
        keys: Keys,
        holder: str,
        census: Census,
    ) -> None:
        super().__init__(settings, directory)
        self.redis, self.keys, self.holder, self.census = redis, keys, holder, census
        self._ttl_s = int(settings.partial_ttl_s + settings.stall_timeout_s)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _key(self, upload_id: str) -> str:
        return f"{self.keys.prefix}:uploads:{upload_id}"

    async def create(
        self, upload_id: str, *, name: str, size: int, mime: str, owner: UploadOwner, client: str = "unknown"
    ) -> PartialUpload:
        try:  # refused before any byte moves, not after the whole file arrived
            await self.census.require("captioner")
        except CapsearchError as e:
            raise UploadError(e.code, e.message, retry_after=e.retry_after) from e
        if await self.redis.exists(self._key(upload_id)):
            raise UploadError("duplicate_upload_id", "Another upload already uses this id; pick a new one.")
        upload = await super().create(upload_id, name=name, size=size, mime=mime, owner=owner, client=client)
        record = {"holder": self.holder, "name": name, "size": size, "mime": mime, "client": client}
        try:
            async with self.redis.pipeline(transaction=True) as p:
                p.hset(self._key(upload_id), mapping={**record, "path": str(upload.path)})
                p.expire(self._key(upload_id), self._ttl_s)
                await p.execute()
        except Exception as e:  # still resumable here, only not elsewhere
            log.warning("upload %s: not shared with the other replicas (%s)", upload_id, e)
        return upload

    async def resume(self, upload_id: str, owner: UploadOwner) -> PartialUpload:
        record = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self._key(upload_id)))
        holder = record.get(b"holder", b"").decode()
        local = self.get(upload_id)
        # Another replica that took it over moved its bytes away (and may have finished it since).
        moved = local is not None and not await asyncio.to_thread(local.path.exists)
        if local is not None and not moved and (not record or holder == self.holder):
            await self._refresh(upload_id)
            return self.claim(upload_id, owner)
        if local is not None:
            self._forget(local)
        if not record:
            return self.claim(upload_id, owner)  # unknown_upload
        return await self._take_over(upload_id, record, holder, owner)

    async def _take_over(
        self, upload_id: str, record: dict[bytes, bytes], holder: str, owner: UploadOwner
    ) -> PartialUpload:
        client = record[b"client"].decode()
        if not self._clients.acquire(client):
            raise UploadError(
                "too_many_uploads",
                f"At most {self.settings.max_per_client} uploads from one address can be in progress or "
                "waiting to be resumed; wait for one to finish.",
            )
        taken = await self.redis.eval(_TAKE_OVER, 1, self._key(upload_id), holder, self.holder)  # type: ignore[misc]
        if not taken:
            self._clients.release(client)
            raise UploadError("unknown_upload", "This upload was resumed elsewhere; start it again.")
        size = int(record[b"size"])
        path = self.directory / f"{upload_id}.part"
        try:
            hasher, offset = await asyncio.to_thread(_adopt, Path(record[b"path"].decode()), path)
        except FileNotFoundError:
            self._clients.release(client)
            raise UploadError("unknown_upload", "This upload's bytes are gone; start it again.") from None
        upload = PartialUpload(
            id=upload_id, name=record[b"name"].decode(), size=size, mime=record[b"mime"].decode(),
            path=path, owner=owner, touched=time.monotonic(), client=client, offset=offset, hasher=hasher,
        )  # fmt: skip
        self._uploads[upload_id] = upload
        self._reserved += size
        await self.redis.hset(self._key(upload_id), "path", str(path))  # type: ignore[misc]
        await self._refresh(upload_id)
        log.info(
            "upload %s: resumed here at %d of %d bytes (it began on %s)", upload_id, offset, size, holder
        )
        return upload

    async def stop(self) -> None:
        """Unlike one process, a stopping replica leaves its partial uploads in place: another replica
        may resume them (a folder nobody resumes from is deleted once stale)."""
        await self._sweeper.stop()
        for upload in list(self._uploads.values()):
            self._forget(upload)

    async def sweep(self, now: float | None = None) -> SweepResult:
        """Also lets go of uploads another replica took over (their bytes moved there), so their
        client's slots and declared bytes are free here again at once."""
        waiting = [u for u in list(self._uploads.values()) if u.owner is None and not u.finishing]
        gone = await asyncio.to_thread(lambda: [u for u in waiting if not u.path.exists()])
        for upload in gone:
            self._forget(upload)
        return await super().sweep(now)

    async def _refresh(self, upload_id: str) -> None:
        try:
            await self.redis.expire(self._key(upload_id), self._ttl_s)
        except Exception as e:
            log.warning("upload %s: %s", upload_id, e)

    async def complete(self, upload: PartialUpload, sha256: str) -> Received:
        received = await super().complete(upload, sha256)
        await self._unshare(upload.id)
        return received

    async def discard(self, upload: PartialUpload) -> None:
        await super().discard(upload)
        await self._unshare(upload.id)

    async def _unshare(self, upload_id: str) -> None:
        try:
            await self.redis.delete(self._key(upload_id))
        except Exception as e:  # it expires by itself
            log.warning("upload %s: %s", upload_id, e)


def _adopt(source: Path, target: Path) -> tuple[Any, int]:
    """Move a partial file into this replica's folder; its sha256 so far and its length."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source != target:
        os.replace(source, target)
    hasher = hashlib.sha256()
    with target.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher, target.stat().st_size
