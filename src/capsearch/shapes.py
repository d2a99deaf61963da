"""The shapes both edges share — an image as clients see it, a search answer — below `api/` and `ws/`.

REST returns them as JSON, the page and the socket render them through the same templates, and the
live events carry an image's snapshot in this shape (so it must stay JSON-serialisable).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from capsearch.db.models import Image, ImageStatus
from capsearch.services.search import SearchResult
from capsearch.templating import render

# How many of the newest images the page's collection shows (rendered by the page and by a resync).
COLLECTION_PAGE_SIZE = 48


class ImageOut(BaseModel):
    # Frozen: a snapshot inside an event is shared by every page of the process.
    model_config = ConfigDict(frozen=True)

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


class SearchHit(BaseModel):
    image: ImageOut
    score: float = Field(description="Cosine similarity clamped to [0, 1]; hits are ordered by it.")
    similarity: float = Field(description="Cosine similarity of query and caption vectors.")
    keyword_match: float = Field(
        description="Share of the query's keywords found in the caption (shown, not used to rank)."
    )
    label: Literal["strong", "possible"] = Field(
        description='"strong": on the labelled set, first hits this sure were right at least 95% of the '
        'time; "possible": the collection seems to hold what was asked, but this hit may be a near '
        'miss (README "Search").'
    )


class SearchResponse(BaseModel):
    query: str = Field(description="The query as searched (whitespace collapsed).")
    hits: list[SearchHit] = Field(description="Best first; empty when nothing matches well enough.")
    no_match: bool = Field(
        description="True when the best caption does not stand out from the query's scores against the "
        'whole collection (README "Search"): no hits rather than the least bad image.'
    )


def search_response(result: SearchResult) -> SearchResponse:
    """The API shape of a search result (also what the page renders)."""
    hits = [
        SearchHit(
            image=ImageOut.of(h.image),
            # A cosine can be negative in principle (and 1.0000001 after rounding); the page draws [0, 1].
            score=round(min(1.0, max(0.0, h.score)), 4),
            similarity=round(h.similarity, 4),
            keyword_match=round(h.keyword_match, 4),
            label=h.label,
        )
        for h in result.hits
    ]
    return SearchResponse(query=result.query, hits=hits, no_match=result.no_match)


def search_results_html(response: SearchResponse, **context: Any) -> str:
    """The results panel (partials/search_results.html) for a search answer."""
    fields = response.model_dump(mode="json") | {"error": None} | context
    return render("partials/search_results.html", **fields)
