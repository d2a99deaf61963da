"""Partial uploads from the page's WebSocket, kept on disk and keyed by the client's upload id.

Keying by upload id rather than by socket is what lets a page that lost its connection resume on a
new one. Bytes go straight to one temp file per upload and the sha256 is updated as they arrive, so
memory holds at most one chunk per upload until `upload.end`. Every file operation runs in a worker
thread.

Two caps keep partial uploads from filling the disk or the registry: each client (IP address, however
many sockets it opens) holds at most `max_per_client` of them, in progress or waiting for a resume, and
all of them together reserve at most `max_partial_bytes` (their declared sizes). Both are released
wherever an upload leaves the registry (`_forget`), so no ending can leak a slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from capsearch.config import UploadSettings
from capsearch.errors import CapsearchError
from capsearch.periodic import Periodic, sweep_interval
from capsearch.pipelines.images import Received
from capsearch.ratelimit import ClientSlots

if TYPE_CHECKING:
    from hashlib import _Hash

log = logging.getLogger(__name__)


class UploadOwner(Protocol):
    """The connection an upload's bytes arrive on; told when the registry takes an upload away."""

    @property
    def id(self) -> str: ...

    def upload_failed(self, upload_id: str, code: str, detail: str) -> None: ...

    def upload_moved(self, upload_id: str) -> None: ...


class UploadError(CapsearchError):
    """An upload that cannot begin or go on; `offset` is set for `bad_offset`."""

    def __init__(
        self, code: str, message: str, offset: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.offset = offset


@dataclass(eq=False)
class PartialUpload:
    id: str
    name: str
    size: int
    mime: str
    path: Path
    owner: UploadOwner | None  # None while no socket holds it (dropped, waiting to be resumed)
    touched: float  # monotonic time of the last sign of life: start, resume, chunk or drop
    client: str = "unknown"  # who started it: holds one of that client's slots until it leaves
    offset: int = 0  # bytes written and acknowledged
    finishing: bool = False  # upload.end is being processed; no more bytes, no resume
    hasher: _Hash = field(default_factory=hashlib.sha256)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class SweepResult:
    stalled: int
    expired: int


class UploadRegistry:
    def __init__(self, settings: UploadSettings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self._uploads: dict[str, PartialUpload] = {}
        self._clients = ClientSlots(settings.max_per_client)
        self._reserved = 0  # declared bytes of every upload in the registry
        timeout = min(settings.stall_timeout_s, settings.partial_ttl_s)
        self._sweeper = Periodic(
            "sweeping partial uploads", sweep_interval(timeout, ceiling_s=15.0), self.sweep
        )

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Delete partials a previous process left behind, then start the sweeper."""
        removed = await asyncio.to_thread(_empty_directory, self.directory)
        if removed:
            log.info("deleted %d partial upload(s) left by a previous run", removed)
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()
        # A new process could not resume them: their running hashes die with this one.
        uploads = list(self._uploads.values())
        for upload in uploads:
            self._forget(upload)
        await asyncio.to_thread(_unlink_all, [u.path for u in uploads])

    # ---- uploads ------------------------------------------------------------------------------

    def get(self, upload_id: str) -> PartialUpload | None:
        return self._uploads.get(upload_id)

    def __len__(self) -> int:
        return len(self._uploads)

    @property
    def reserved_bytes(self) -> int:
        """The declared sizes of every partial upload, together (what the global cap counts)."""
        return self._reserved

    def held_by(self, client: str) -> int:
        """How many partial uploads this client holds (in progress or waiting for a resume)."""
        return self._clients.held(client)

    def _forget(self, upload: PartialUpload) -> bool:
        """Take an upload out of the registry and give back its slot and bytes; False if already out."""
        if self._uploads.get(upload.id) is not upload:
            return False
        del self._uploads[upload.id]
        self._clients.release(upload.client)
        self._reserved -= upload.size
        return True

    async def create(
        self, upload_id: str, *, name: str, size: int, mime: str, owner: UploadOwner, client: str = "unknown"
    ) -> PartialUpload:
        """Register a new upload and its empty temp file; raises UploadError when a cap refuses it."""
        if upload_id in self._uploads:
            raise UploadError("duplicate_upload_id", "Another upload already uses this id; pick a new one.")
        s = self.settings
        if not self._clients.acquire(client):
            raise UploadError(
                "too_many_uploads",
                f"At most {s.max_per_client} uploads from one address can be in progress or waiting to be "
                "resumed; wait for one to finish.",
            )
        if self._reserved + size > s.max_partial_bytes:
            self._clients.release(client)
            # Not this client's doing (everyone's partials together): retrying later will work.
            raise UploadError(
                "server_busy",
                "The server is holding too many unfinished uploads right now; try again in a moment.",
                retry_after=5,
            )
        upload = PartialUpload(
            id=upload_id,
            name=name,
            size=size,
            mime=mime,
            path=self.directory / f"{upload_id}.part",  # ids are [A-Za-z0-9_-]{8,64}: safe as a name
            owner=owner,
            touched=time.monotonic(),
            client=client,
        )
        # Registered before the await so a second start with the same id (or one past a cap) is
        # refused meanwhile.
        self._uploads[upload_id] = upload
        self._reserved += size
        try:
            await asyncio.to_thread(upload.path.write_bytes, b"")
        except BaseException:
            self._forget(upload)
            raise
        return upload

    async def resume(self, upload_id: str, owner: UploadOwner) -> PartialUpload:
        """`claim`, for a socket's `upload.resume` (distributed mode also looks on other replicas)."""
        return self.claim(upload_id, owner)

    def claim(self, upload_id: str, owner: UploadOwner) -> PartialUpload:
        """Hand an upload to the socket that resumes it (a dropped socket may not know it died yet)."""
        upload = self._uploads.get(upload_id)
        if upload is None or upload.finishing:
            raise UploadError(
                "unknown_upload", "This upload is not known to the server (it expired or never started)."
            )
        previous, upload.owner = upload.owner, owner
        upload.touched = time.monotonic()
        if previous is not None and previous is not owner:
            previous.upload_moved(upload_id)
        return upload

    async def write(self, upload: PartialUpload, offset: int, payload: bytes) -> int:
        """Append one chunk at the acknowledged offset; returns the new offset."""
        async with upload.lock:
            if self._uploads.get(upload.id) is not upload or upload.finishing:
                raise UploadError("binary_without_upload", "This upload is no longer in progress.")
            if offset != upload.offset:
                raise UploadError(
                    "bad_offset",
                    f"This chunk starts at byte {offset:,}; the next chunk must start at {upload.offset:,}.",
                    offset=upload.offset,
                )
            if offset + len(payload) > upload.size:
                raise UploadError(
                    "past_declared_size",
                    f"This chunk goes past the declared size of {upload.size:,} bytes.",
                )
            await asyncio.to_thread(_append, upload, payload)
            upload.offset += len(payload)
            upload.touched = time.monotonic()
            return upload.offset

    async def complete(self, upload: PartialUpload, sha256: str) -> Received:
        """Check the length and hash of a finished upload: its file, hashed as it arrived, is handed
        to the image pipeline as it is (moved into the store, not read back and written again)."""
        async with upload.lock:
            if upload.offset != upload.size:
                raise UploadError(
                    "length_mismatch",
                    f"The upload ended after {upload.offset:,} of the {upload.size:,} bytes it declared.",
                )
            if upload.hasher.hexdigest() != sha256.lower():
                raise UploadError(
                    "sha256_mismatch", "The file arrived damaged (its sha256 does not match); send it again."
                )
            size = await asyncio.to_thread(_size, upload.path)
        if size != upload.size:  # the temp file was tampered with or truncated under us
            raise UploadError("length_mismatch", "The stored upload is incomplete; send it again.")
        return Received(upload.path, sha256.lower())

    async def discard(self, upload: PartialUpload) -> None:
        self._forget(upload)
        await asyncio.to_thread(upload.path.unlink, missing_ok=True)

    def detach(self, uploads: list[PartialUpload], owner: UploadOwner) -> None:
        """The socket dropped: keep these uploads for a resume until the TTL runs out."""
        now = time.monotonic()
        for upload in uploads:
            if upload.owner is owner:
                upload.owner, upload.touched = None, now

    async def sweep(self, now: float | None = None) -> SweepResult:
        """Fail uploads stalled on a live socket and delete partials nobody resumed in time."""
        now = time.monotonic() if now is None else now
        stalled: list[PartialUpload] = []
        expired: list[PartialUpload] = []
        for upload in list(self._uploads.values()):
            if upload.finishing or upload.lock.locked():
                continue  # being written or ingested right now: alive by definition
            idle = now - upload.touched
            if upload.owner is not None and idle > self.settings.stall_timeout_s:
                stalled.append(upload)
            elif upload.owner is None and idle > self.settings.partial_ttl_s:
                expired.append(upload)
        for upload in (*stalled, *expired):
            self._forget(upload)
        if stalled or expired:
            await asyncio.to_thread(_unlink_all, [u.path for u in (*stalled, *expired)])
        wait = round(self.settings.stall_timeout_s)
        for upload in stalled:
            if upload.owner is not None:
                upload.owner.upload_failed(
                    upload.id,
                    "stalled",
                    f"No data arrived for this upload for {wait} seconds; it was stopped.",
                )
        return SweepResult(stalled=len(stalled), expired=len(expired))


def _append(upload: PartialUpload, payload: bytes) -> None:
    with upload.path.open("ab") as f:
        f.write(payload)
    upload.hasher.update(payload)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _unlink_all(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _empty_directory(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    removed = 0
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed
