"""Stored originals and thumbnails, addressed by content hash."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from capsearch.deps import StateDep
from capsearch.errors import NotFoundError
from capsearch.services import repo
from capsearch.storage import MIME_BY_EXT, is_sha256

router = APIRouter(prefix="/media", tags=["media"])


@router.head("/{kind}/{sha256}", include_in_schema=False)
@router.get("/{kind}/{sha256}", response_class=FileResponse)
async def get_media(kind: Literal["originals", "thumbs"], sha256: str, state: StateDep) -> FileResponse:
    """The original bytes or the display thumbnail of an image."""
    # Files are served only for a hash a row names: a crash can leave files behind (until the
    # maintenance sweep removes them), and a deleted image must not stay reachable by its URL.
    image = None
    if is_sha256(sha256):
        async with state.sessions() as s:
            image = await repo.get_by_sha(s, sha256)
    if image is None:
        raise NotFoundError("No stored file has that hash.")
    path = await asyncio.to_thread(state.store.find, kind, sha256)
    if path is None:
        raise NotFoundError("No stored file has that hash.")
    return FileResponse(
        path,
        media_type=MIME_BY_EXT[path.suffix.lstrip(".")],
        headers={
            "X-Content-Type-Options": "nosniff",
            # Content-addressed: the bytes behind a URL never change.
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )
