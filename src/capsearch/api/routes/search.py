"""Text search over captions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from capsearch.api.deps import SearchQuota, SearchServiceDep
from capsearch.api.schemas import ErrorOut, ImageOut, SearchHit, SearchResponse
from capsearch.services.search import SearchResult

router = APIRouter(prefix="/api/search", tags=["search"])

_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (422, 429, 503)}


def search_response(result: SearchResult) -> SearchResponse:
    """The API shape of a search result (also what the page renders)."""
    hits = [
        SearchHit(
            image=ImageOut.of(h.image),
            # Within [0, 1] by construction; the clamp only absorbs float rounding (1.0000001).
            score=round(min(1.0, max(0.0, h.score)), 4),
            similarity=round(h.similarity, 4),
            keyword_match=round(h.keyword_match, 4),
        )
        for h in result.hits
    ]
    return SearchResponse(query=result.query, hits=hits, no_match=result.no_match)


@router.get("", response_model=SearchResponse, responses=_ERRORS, dependencies=[SearchQuota])
async def search(
    search: SearchServiceDep,
    q: Annotated[str, Query(description="A few words; whitespace is collapsed.")] = "",
    k: Annotated[
        int | None, Query(ge=1, description="How many hits at most (default 12, capped at 100).")
    ] = None,
) -> SearchResponse:
    """Images whose captions match the query, best first, with scores."""
    return search_response(await search.search(q, k))
