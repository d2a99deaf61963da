"""The page's own htmx endpoints: search as you type, caption edits and deletes on a card.

They answer with HTML fragments rendered from the page's partials and stay thin: the work is
`state.search.search`, `state.library.edit_caption` and `state.library.delete`, exactly as the REST API.
Refusals a person can fix (an empty or over-long query or caption) answer 422, a busy server 503 and
a client over its rate limit 429 (with Retry-After), with the message in the fragment; the page's htmx
config swaps them like a success, so the message is seen where it applies.
"""

from __future__ import annotations

import contextlib
import math
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from capsearch.api.schemas import MAX_CAPTION_CHARS, ImageId
from capsearch.deps import LibraryDep, PageSearchQuotaDep, Quota, SearchServiceDep
from capsearch.errors import BusyError, NotFoundError, RateLimitedError
from capsearch.services.search import QueryError, SearchService
from capsearch.services.search_options import SearchOptions, SearchOptionsError
from capsearch.shapes import ImageOut, search_response
from capsearch.templating import render, templates
from capsearch.text import clean_text

router = APIRouter(prefix="/ui", include_in_schema=False)

BUSY = "The server is busy right now; try again in a moment."


class PageFilters(BaseModel):
    """The page's sort and upload-date controls, as its address bar holds them beside `q`
    (/?q=dogs&sort=newest&from=2026-01-01&to=2026-01-31&tz=Europe/Berlin): the dates are the date
    inputs' days, read in the browser's time zone `tz`. Empty means not set."""

    model_config = ConfigDict(populate_by_name=True)

    sort: str = ""
    from_: str = Field("", alias="from")
    to: str = ""
    tz: str = ""

    def url(self, q: str) -> str:
        """The page's address for this search: only the controls that are set."""
        sort = "" if self.sort == "relevance" else self.sort  # the default needs no mention
        fields = {"q": q, "sort": sort, "from": self.from_, "to": self.to}
        if self.from_ or self.to:  # the zone only matters to dates
            fields["tz"] = self.tz
        query = urlencode({k: v for k, v in fields.items() if v})
        return f"/?{query}" if query else "/"


PageFiltersIn = Annotated[PageFilters, Query()]
# What a refusal calls the two dates on the page: the controls a person sees.
DATE_NAMES = ("the “From” date", "the “To” date")


def _refused(q: str, code: str, detail: str) -> dict[str, Any]:
    return {"query": q, "hits": [], "no_match": False, "error": {"code": code, "detail": detail}}


async def search_context(
    search: SearchService, q: str, quota: Quota, filters: PageFilters
) -> tuple[dict[str, Any], int]:
    """The context of `partials/search_results.html` for a query, and the status to answer with;
    the client's search `quota` is spent first."""
    try:
        options = SearchOptions.parse(filters.sort, filters.from_, filters.to, filters.tz, names=DATE_NAMES)
        quota.take()
        result = await search.search(q, None, options)
    except (QueryError, SearchOptionsError) as e:
        return _refused(q, e.code, e.message), 422
    except BusyError:
        return _refused(q, "busy", BUSY), 503
    except RateLimitedError as e:
        return _refused(q, e.code, e.message) | {"retry_after": e.retry_after}, 429
    return search_response(result).model_dump(mode="json") | {"error": None}, 200


@router.get("/search", response_class=HTMLResponse)
async def search(
    request: Request, search: SearchServiceDep, quota: PageSearchQuotaDep, filters: PageFiltersIn, q: str = ""
) -> Response:
    # An empty box means "show the collection again", not a mistake to point out.
    if q == "":
        return HTMLResponse("", headers={"HX-Replace-Url": "/"})
    context, status = await search_context(search, q, quota, filters)
    response = templates().TemplateResponse(
        request, "partials/search_results.html", context, status_code=status
    )
    if context.get("retry_after"):
        response.headers["Retry-After"] = str(math.ceil(context["retry_after"]))
    # A reload (or a shared link) lands on the same search: the page renders /?q=&sort=... itself.
    response.headers["HX-Replace-Url"] = filters.url(q)
    return response


def _card(image: ImageOut, score: float | None, status: int = 200, **context: Any) -> HTMLResponse:
    hit = {"score": score} if score is not None else None
    html = render(
        "partials/image_card.html", image=image.model_dump(mode="json"), oob=False, hit=hit, **context
    )
    return HTMLResponse(html, status_code=status)


def _gone(image_id: int, message: str | None = None) -> HTMLResponse:
    """The image is not there (any more): its cards leave this page, with a toast if there is news."""
    html = render("partials/image_deleted.html", image_id=image_id)
    if message:
        html += render("partials/toast.html", level="info", message=message)
    # Only the out-of-band parts apply; the card that asked is removed by them, not swapped.
    return HTMLResponse(html, headers={"HX-Reswap": "none"})


@router.post("/images/{image_id}/caption", response_class=HTMLResponse)
async def edit_caption(
    image_id: ImageId,
    images: LibraryDep,
    quota: PageSearchQuotaDep,
    caption: Annotated[str, Form()] = "",
    score: Annotated[float | None, Form()] = None,
) -> Response:
    """Save a person's caption; answers the re-rendered card (a search hit keeps its score until the
    search runs again, which the edit's live update sets off)."""
    # Checked here rather than by FastAPI, whose refusal would be JSON, not a message on the card.
    # Cleaned as the service will store it: a caption of only invisible characters is an empty one.
    text = clean_text(caption)
    problem, status = None, 422
    if score is not None:
        score = min(1.0, max(0.0, score))
    if not text:
        problem = "Write a caption, or press Cancel to keep the current one."
    elif len(text) > MAX_CAPTION_CHARS:
        problem = f"A caption can be at most {MAX_CAPTION_CHARS} characters; this one has {len(text)}."
    retry_after = None
    try:
        if problem is None:
            quota.take()  # an edit re-embeds the caption: it counts as a search
            return _card(ImageOut.of(await images.edit_caption(image_id, text)), score)
        current = ImageOut.of(await images.get(image_id))
    except NotFoundError:
        return _gone(image_id, "That image was deleted, so its caption was not saved.")
    except BusyError:
        current, problem, status = ImageOut.of(await images.get(image_id)), BUSY, 503
    except RateLimitedError as e:
        current, problem, status = ImageOut.of(await images.get(image_id)), e.message, 429
        retry_after = e.retry_after
    response = _card(current, score, status, editing=True, draft=caption, error=problem)
    if retry_after:
        response.headers["Retry-After"] = str(math.ceil(retry_after))
    return response


@router.delete("/images/{image_id}", response_class=HTMLResponse)
async def delete_image(image_id: ImageId, images: LibraryDep) -> Response:
    # Already gone (another page deleted it first) ends the same way: the card leaves this page.
    with contextlib.suppress(NotFoundError):
        await images.delete(image_id)
    return _gone(image_id)
