"""Response and request shapes of the REST API (they also become the OpenAPI schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from capsearch.db.models import Image, ImageStatus


class ErrorOut(BaseModel):
    detail: str = Field(description="A plain sentence saying what went wrong and what to do.")
    code: str = Field(description="Stable machine-readable error code.")


class ImageOut(BaseModel):
    id: int
    sha256: str
    status: ImageStatus
    caption: str | None = Field(description="What is shown and searched: the person's caption if set.")
    model_caption: str | None = Field(description="The model's caption, kept when a person edits it.")
    user_caption: str | None = Field(description="The caption a person wrote, or null.")
    caption_model: str | None
    error: str | None
    mime: str
    width: int
    height: int
    size_bytes: int
    filename: str | None
    url: str = Field(description="The original bytes, as uploaded.")
    thumbnail_url: str = Field(description="A JPEG, longest side 640 px, without metadata.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        return cls(
            id=image.id,
            sha256=image.sha256,
            status=image.status,
            caption=image.effective_caption,
            model_caption=image.caption,
            user_caption=image.user_caption,
            caption_model=image.caption_model,
            error=image.error,
            mime=image.mime,
            width=image.width,
            height=image.height,
            size_bytes=image.size_bytes,
            filename=image.filename,
            url=f"/media/originals/{image.sha256}",
            thumbnail_url=f"/media/thumbs/{image.sha256}",
            created_at=_utc(image.created_at),
            updated_at=_utc(image.updated_at),
        )


def _utc(t: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class UploadOutcome(BaseModel):
    filename: str | None
    ok: bool
    duplicate: bool = Field(False, description="The same bytes were already stored; no second caption.")
    image: ImageOut | None = None
    error: ErrorOut | None = None


class UploadResponse(BaseModel):
    items: list[UploadOutcome]


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int
    next: str | None = Field(description="Pass as `cursor` to get the next (older) page; null at the end.")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


# Ids are signed 64-bit (BIGINT; SQLite's INTEGER): a larger number names no image, and reaching the
# driver it overflowed into a 500. Out of range is refused as invalid, like any malformed value.
MAX_IMAGE_ID = 2**63 - 1
ImageId = Annotated[int, Path(ge=1, le=MAX_IMAGE_ID, description="The image's id.")]


def _an_image_id(cursor: str | None) -> str | None:
    if cursor is not None and int(cursor) > MAX_IMAGE_ID:
        raise ValueError(f"must be an image id, at most {MAX_IMAGE_ID}")
    return cursor


# The list cursor: an image id in decimal, as `next` of the previous page gave it.
Cursor = Annotated[
    str | None, Query(pattern=r"^[1-9][0-9]{0,18}$", description="From `next`."), AfterValidator(_an_image_id)
]

MAX_CAPTION_CHARS = 500
CaptionText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CAPTION_CHARS)
]


class ImagePatch(BaseModel):
    caption: CaptionText = Field(description="The person's caption; the model's is kept beside it.")


class SearchHit(BaseModel):
    image: ImageOut
    score: float = Field(description='Hybrid score in [0, 1] (README "Search"); hits are ordered by it.')
    similarity: float = Field(description="Cosine similarity of query and caption alone.")
    keyword_match: float = Field(description="Share of the query's keywords found in the caption.")


class SearchResponse(BaseModel):
    query: str = Field(description="The query as searched (whitespace collapsed).")
    hits: list[SearchHit] = Field(description="Best first; empty when nothing matches well enough.")
    no_match: bool = Field(description="True when no image clears the score floor.")
