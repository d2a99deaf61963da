"""HTML fragments the socket pushes to the page, rendered from the page's own partial templates."""

from __future__ import annotations

from typing import Any, Literal

from capsearch.db.models import ImageStatus
from capsearch.services.gallery import Example, ExampleCaption
from capsearch.shapes import ImageOut
from capsearch.templating import render

Stage = Literal["uploading", "queued", "captioning", "done", "failed"]

STAGE_BY_STATUS: dict[ImageStatus, Stage] = {
    ImageStatus.RECEIVED: "queued",
    ImageStatus.CAPTIONING: "captioning",
    ImageStatus.READY: "done",
    ImageStatus.FAILED: "failed",
}
FINAL_STAGES: frozenset[Stage] = frozenset({"done", "failed"})


def image_json(image: ImageOut) -> dict[str, Any]:
    return image.model_dump(mode="json")


def image_card(image: ImageOut) -> str:
    return render("partials/image_card.html", image=image_json(image))


def collection(images: list[ImageOut], total: int) -> str:
    """The whole collection (its newest cards and its count), swapped in out of band: a page that
    fell behind the live feed is brought back to what it would show if it were loaded now."""
    return render("partials/collection_resync.html", images=[image_json(i) for i in images], total=total)


def image_deleted(image_id: int) -> str:
    """Removes the image's collection card and search hit from a page (both where present)."""
    return render("partials/image_deleted.html", image_id=image_id)


def upload_status(
    upload_id: str, stage: Stage, image: ImageOut | None = None, error: dict[str, str] | None = None
) -> str:
    return render(
        "partials/upload_status.html",
        upload_id=upload_id,
        stage=stage,
        image=image_json(image) if image is not None else None,
        error=error,
    )


def upload_status_of(upload_id: str, image: ImageOut) -> str:
    """The status card of an upload that became `image`, at the image's current stage."""
    stage = STAGE_BY_STATUS[image.status]
    error = None
    if stage == "failed":
        error = {"code": "caption_failed", "detail": image.error or "Captioning this image failed."}
    return upload_status(upload_id, stage, image, error)


def toast(message: str, level: Literal["error", "info"] = "error") -> str:
    return render("partials/toast.html", level=level, message=message)


def gallery(gallery_id: str, examples: list[Example]) -> str:
    """The gallery section with a skeleton card per example (captions still to come)."""
    return render("partials/gallery.html", gallery_id=gallery_id, examples=examples)


def gallery_card(gallery_id: str, result: ExampleCaption) -> str:
    return render(
        "partials/gallery_card.html",
        gallery_id=gallery_id,
        example=result.example,
        caption=result.caption,
        error=result.error,
        oob=True,
    )
