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
from capsearch.services.search_options import SORTS, SearchOptions, Sort
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


class SearchOptionsIn(BaseModel):
    """A search's order and upload-date range as clients send them: REST query parameters, and the
    fields of the socket's `voice.start`. `options()` parses them (services/search_options.py)."""

    sort: str | None = Field(
        None,
        max_length=64,
        description="`relevance` (best first, the default) or `newest` (upload time, newest first, "
        "among the images that match).",
        json_schema_extra={"enum": list(SORTS)},
    )
    uploaded_from: str | None = Field(
        None,
        max_length=64,
        description="Only images uploaded at or after this: a date (2026-01-31: from the start of that "
        "day in `tz`) or a date and time (2026-01-31T18:30:00+01:00).",
        examples=["2026-01-01"],
    )
    uploaded_to: str | None = Field(
        None,
        max_length=64,
        description="Only images uploaded at or before this: a date (to the end of that day in `tz`, "
        "inclusive) or a date and time (inclusive). Before `uploaded_from`: 422 `bad_date_range`.",
        examples=["2026-02-01"],
    )
    tz: str | None = Field(
        None,
        max_length=64,
        description="The IANA time zone (Europe/Berlin) that dates, and times without an offset, are "
        "read in; default UTC.",
    )

    def options(self) -> SearchOptions:
        """The parsed options; raises SearchOptionsError (422: bad_sort, bad_date, bad_date_range,
        bad_time_zone)."""
        return SearchOptions.parse(self.sort, self.uploaded_from, self.uploaded_to, self.tz)


class SearchScope(BaseModel):
    """How a search's hits were ordered and narrowed, as the server understood the options."""

    sort: Sort = Field("relevance", description="The order of `hits`: relevance (best first) or newest.")
    uploaded_from: datetime | None = Field(
        None, description="The date range's first instant (inclusive, UTC) as understood; null: open."
    )
    uploaded_to: datetime | None = Field(
        None, description="The date range's last instant (inclusive, UTC) as understood; null: open."
    )
    in_range: int | None = Field(
        None,
        description="How many images were uploaded within the date range (0: no match can be found "
        "there); null when no range was given.",
    )


class SearchResponse(SearchScope):
    query: str = Field(description="The query as searched (whitespace collapsed).")
    hits: list[SearchHit] = Field(
        description="In `sort` order (best first, or newest first); empty when nothing matches well enough."
    )
    no_match: bool = Field(
        description="True when the best caption does not stand out from the query's scores against the "
        'whole collection (README "Search"), or when no image was uploaded in the date range: no hits '
        "rather than the least bad image."
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
    options = result.options
    return SearchResponse(
        query=result.query,
        hits=hits,
        no_match=result.no_match,
        sort=options.sort,
        uploaded_from=options.uploaded_from,
        uploaded_to=options.uploaded_to,
        in_range=result.in_range,
    )


def search_results_html(response: SearchResponse, **context: Any) -> str:
    """The results panel (partials/search_results.html) for a search answer."""
    fields = response.model_dump(mode="json") | {"error": None} | context
    return render("partials/search_results.html", **fields)
