"""Text search over captions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from capsearch.api.schemas import ErrorOut
from capsearch.deps import SearchOptionsDep, SearchQuota, SearchServiceDep
from capsearch.shapes import SearchResponse, search_response

router = APIRouter(prefix="/api/search", tags=["search"])

_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (422, 429, 503)}


@router.get("", response_model=SearchResponse, responses=_ERRORS, dependencies=[SearchQuota])
async def search(
    search: SearchServiceDep,
    options: SearchOptionsDep,
    q: Annotated[str, Query(description="A few words; whitespace is collapsed.")] = "",
    k: Annotated[
        int | None, Query(ge=1, description="How many hits at most (default 12, capped at 100).")
    ] = None,
) -> SearchResponse:
    """Images whose captions match the query, best or newest first, optionally within an upload-date range."""
    return search_response(await search.search(q, k, options))
