"""Images: upload (many at once), read one, list the collection, edit a caption, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from capsearch.api.errors import RETRY_AFTER_S, error_body
from capsearch.api.multipart import read_uploaded_files
from capsearch.api.schemas import (
    Cursor,
    ErrorOut,
    ImageId,
    ImagePage,
    ImagePatch,
    UploadOutcome,
    UploadResponse,
)
from capsearch.deps import ImagePipelineDep, LibraryDep, SearchQuota, SettingsDep, UploadQuota
from capsearch.errors import CapsearchError
from capsearch.services.uploads import FileOutcome, IncomingFile, ingest_files
from capsearch.shapes import ImageOut

router = APIRouter(prefix="/api/images", tags=["images"])

_MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "JPEG, PNG, WebP or GIF, up to 5 MB each; repeat the field.",
                        }
                    },
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (404, 413, 415, 422, 503)}
_LIMITED = {**_ERRORS, 429: {"model": ErrorOut}}  # routes with a per-client rate limit


def _outcome(o: FileOutcome) -> UploadOutcome:
    if o.error is not None:
        return UploadOutcome(
            filename=o.filename, ok=False, error=ErrorOut(detail=o.error.message, code=o.error.code)
        )
    assert o.image is not None
    return UploadOutcome(filename=o.filename, ok=True, duplicate=o.duplicate, image=ImageOut.of(o.image))


def _all_rejected(outcomes: list[FileOutcome], items: list[UploadOutcome]) -> JSONResponse:
    errors: list[CapsearchError] = [o.error for o in outcomes if o.error is not None]
    statuses = {e.status_code for e in errors}
    codes = {e.code for e in errors}
    status = statuses.pop() if len(statuses) == 1 else 422
    if len(errors) == 1:
        body = error_body(errors[0].code, errors[0].message)
    else:
        code = codes.pop() if len(codes) == 1 else "all_rejected"
        body = error_body(code, f"None of the {len(errors)} files was accepted; see `items` for each reason.")
    body["items"] = [i.model_dump(mode="json") for i in items]
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


@router.post(
    "",
    status_code=202,
    response_model=UploadResponse,
    responses={201: {"model": UploadResponse, "description": "With wait=true: captions are in."}, **_LIMITED},
    openapi_extra=_MULTIPART_BODY,
    dependencies=[UploadQuota],
)
async def upload_images(
    request: Request,
    images: ImagePipelineDep,
    settings: SettingsDep,
    wait: Annotated[bool, Query(description="Answer 201 once every caption is in.")] = False,
) -> JSONResponse:
    """Upload images (multipart field `files`, repeatable); each file reports its own outcome."""
    uploaded = await read_uploaded_files(request, "files", settings.limits)
    incoming = [IncomingFile(u.filename, u.data, u.error) for u in uploaded]
    outcomes = await ingest_files(images, incoming, wait=wait)
    items = [_outcome(o) for o in outcomes]
    if not any(o.ok for o in items):
        return _all_rejected(outcomes, items)
    body = UploadResponse(items=items).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if wait else 202)


@router.get("/by-sha256/{sha256}", response_model=ImageOut, responses=_ERRORS)
async def get_image_by_sha256(
    sha256: Annotated[str, Path(pattern=r"^[0-9a-fA-F]{64}$")], images: LibraryDep
) -> ImageOut:
    """The stored image with these exact bytes (lets a client skip uploading what is already here)."""
    return ImageOut.of(await images.get_by_sha256(sha256))


@router.get("/{image_id}", response_model=ImageOut, responses=_ERRORS)
async def get_image(image_id: ImageId, images: LibraryDep) -> ImageOut:
    """One image with its status and caption."""
    return ImageOut.of(await images.get(image_id))


@router.get("", response_model=ImagePage, responses=_ERRORS)
async def list_images(
    images: LibraryDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 24,
    cursor: Cursor = None,
    sha256: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-fA-F]{64}$", description="Only the image with exactly these bytes, if any."),
    ] = None,
) -> ImagePage:
    """The collection, newest first, a page at a time; with `sha256`, only the stored image with
    exactly those bytes (no item if there is none)."""
    if sha256 is not None:
        # The page asks this for every file before sending it. Not stored is the usual answer, and as
        # /by-sha256's 404 the browser would log it as an error in the console every time.
        found = await images.find_by_sha256(sha256)
        return ImagePage(items=[ImageOut.of(found)] if found else [], total=int(found is not None), next=None)
    items, total = await images.page(limit, int(cursor) if cursor else None)
    nxt = str(items[-1].id) if len(items) == limit and items[-1].id > 1 else None
    return ImagePage(items=[ImageOut.of(i) for i in items], total=total, next=nxt)


@router.patch("/{image_id}", response_model=ImageOut, responses=_LIMITED, dependencies=[SearchQuota])
async def edit_image(image_id: ImageId, patch: ImagePatch, images: LibraryDep) -> ImageOut:
    """Set a person's caption; it wins over the model's and is searchable when this returns."""
    return ImageOut.of(await images.edit_caption(image_id, patch.caption))


@router.delete("/{image_id}", status_code=204, response_class=Response, responses=_ERRORS)
async def delete_image(image_id: ImageId, images: LibraryDep) -> Response:
    """Delete an image: its row, search entry and files."""
    await images.delete(image_id)
    return Response(status_code=204)
