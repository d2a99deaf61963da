"""Many files in one request: each gets its own outcome, and one bad file never sinks the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from capsearch.batching import Priority
from capsearch.db.models import Image
from capsearch.errors import CapsearchError
from capsearch.pipelines.images import ImagePipeline


@dataclass(frozen=True)
class IncomingFile:
    filename: str | None
    data: bytes
    # Set when the reader already refused the file (e.g. it passed the size cap while streaming).
    error: CapsearchError | None = None


@dataclass(frozen=True)
class FileOutcome:
    filename: str | None
    image: Image | None = None
    duplicate: bool = False
    error: CapsearchError | None = None


async def ingest_files(
    service: ImagePipeline,
    files: Sequence[IncomingFile],
    *,
    wait: bool = False,
    priority: Priority = Priority.INTERACTIVE,
) -> list[FileOutcome]:
    async def one(f: IncomingFile) -> FileOutcome:
        if f.error is not None:
            return FileOutcome(f.filename, error=f.error)
        try:
            result = await service.ingest(f.data, f.filename, priority)
            image = await service.wait_captioned(result.image.id) if wait else result.image
        except CapsearchError as e:
            return FileOutcome(f.filename, error=e)
        return FileOutcome(f.filename, image=image, duplicate=not result.created)

    return list(await asyncio.gather(*(one(f) for f in files)))
