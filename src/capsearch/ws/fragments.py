"""HTML fragments the socket pushes to the page, rendered from the page's own partial templates."""

from __future__ import annotations

from typing import Any, Literal

from capsearch.api.schemas import ImageOut
from capsearch.db.models import Image, ImageStatus
from capsearch.templating import render

Stage = Literal["uploading", "queued", "captioning", "done", "failed"]

STAGE_BY_STATUS: dict[ImageStatus, Stage] = {
    ImageStatus.RECEIVED: "queued",
    ImageStatus.CAPTIONING: "captioning",
    ImageStatus.READY: "done",
    ImageStatus.FAILED: "failed",
}
FINAL_STAGES: frozenset[Stage] = frozenset({"done", "failed"})


def image_json(image: Image) -> dict[str, Any]:
    return ImageOut.of(image).model_dump(mode="json")


def image_card(image: Image) -> str:
    return render("partials/image_card.html", image=image_json(image))


def upload_status(
    upload_id: str, stage: Stage, image: Image | None = None, error: dict[str, str] | None = None
) -> str:
    return render(
        "partials/upload_status.html",
        upload_id=upload_id,
        stage=stage,
        image=image_json(image) if image is not None else None,
        error=error,
    )


def upload_status_of(upload_id: str, image: Image) -> str:
    """The status card of an upload that became `image`, at the image's current stage."""
    stage = STAGE_BY_STATUS[image.status]
    error = None
    if stage == "failed":
        error = {"code": "caption_failed", "detail": image.error or "Captioning this image failed."}
    return upload_status(upload_id, stage, image, error)


def toast(message: str, level: Literal["error", "info"] = "error") -> str:
    return render("partials/toast.html", level=level, message=message)
