"""Response and request shapes of the REST API (they also become the OpenAPI schema).

The shapes the socket shares (an image, a search answer) live one layer down, in `capsearch.shapes`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from capsearch.shapes import ImageOut


class ErrorOut(BaseModel):
    detail: str = Field(description="A plain sentence saying what went wrong and what to do.")
    code: str = Field(description="Stable machine-readable error code.")


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
