"""How a search is ordered and which uploads it may find: `SearchOptions`, shared by REST, the page and
voice (REST query parameters, the page's controls, the socket's `voice.start`), parsed in one place so
every edge accepts the same values and refuses the same mistakes with the same codes.

* sort: `relevance` (best first, the default) or `newest` (upload time, newest first; ties by id).
  Newest-first orders the hits that pass the relevance decision; it never lets in an image that
  does not match just because it is new.
* uploaded_from / uploaded_to: an inclusive range of upload times. A date (`2026-01-31`) is that
  whole day in the time zone `tz` (an IANA name such as `Europe/Berlin`, default UTC): from its first
  moment, to its last. A date and time (`2026-01-31T18:30:00+01:00`) is that instant; without an
  offset it is read in `tz` too. Either bound may be left out.

The range restricts the candidates before the index's top-k cut (SearchService asks the database for
the ids uploaded in it and the index searches only those), so three matching images among a million
are still found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from capsearch.db.models import Image
from capsearch.errors import CapsearchError

Sort = Literal["relevance", "newest"]
SORTS: tuple[Sort, ...] = ("relevance", "newest")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_TEXT = 64  # longer than any date, date and time, or zone name
_MICROSECOND = timedelta(microseconds=1)


class SearchOptionsError(CapsearchError):
    """Codes: bad_sort, bad_date, bad_date_range, bad_time_zone (422)."""

    status_code = 422


@dataclass(frozen=True)
class SearchOptions:
    sort: Sort = "relevance"
    uploaded_from: datetime | None = None  # inclusive, in UTC
    uploaded_until: datetime | None = None  # exclusive, in UTC: the instant after `uploaded_to`

    @property
    def filtered(self) -> bool:
        return self.uploaded_from is not None or self.uploaded_until is not None

    @property
    def uploaded_to(self) -> datetime | None:
        """The range's last instant (inclusive), as the API reports it."""
        return self.uploaded_until - _MICROSECOND if self.uploaded_until is not None else None

    @classmethod
    def parse(
        cls,
        sort: str | None = None,
        uploaded_from: str | None = None,
        uploaded_to: str | None = None,
        tz: str | None = None,
        *,
        names: tuple[str, str] = ("uploaded_from", "uploaded_to"),
    ) -> SearchOptions:
        """Options from what a person or a client sent (empty text = not given); raises
        SearchOptionsError with a sentence that names the field (as `names` call the two dates:
        the page's are its controls, not the API's parameters) and the accepted forms."""
        # Only dates need a zone: a search without them never fails on one the server lacks.
        zone = _zone(tz) if uploaded_from or uploaded_to else UTC
        start = _instant(names[0], uploaded_from, zone, end_of_day=False)
        until = _instant(names[1], uploaded_to, zone, end_of_day=True)
        if start is not None and until is not None and start >= until:
            raise SearchOptionsError(
                f"The date range ends before it starts: {names[0]} must not be after {names[1]}.",
                code="bad_date_range",
            )
        return cls(_sort(sort), start, until)


RELEVANCE = SearchOptions()


def _sort(value: str | None) -> Sort:
    if not value:
        return "relevance"
    if value not in SORTS:
        raise SearchOptionsError(
            f"Sort by “relevance” or “newest”, not “{value[:_MAX_TEXT]}”.", code="bad_sort"
        )
    return value


def _zone(name: str | None) -> tzinfo:
    if not name or name == "UTC":
        return UTC
    try:
        if len(name) > _MAX_TEXT:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SearchOptionsError(
            f"“{name[:_MAX_TEXT]}” is not a time zone this server knows; use an IANA name such as "
            "Europe/Berlin, or leave tz out for UTC.",
            code="bad_time_zone",
        ) from None


def _instant(field: str, text: str | None, zone: tzinfo, *, end_of_day: bool) -> datetime | None:
    """The range bound `text` names, in UTC; the end of a day is the first instant of the next, so
    the upper bound is exclusive. A bound past the calendar's end is no bound at all."""
    if not text:
        return None
    try:
        if len(text) > _MAX_TEXT:
            raise ValueError(text)
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day, datetime.min.time(), zone)
            return (moment + timedelta(days=1) if end_of_day else moment).astimezone(UTC)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return (moment + _MICROSECOND if end_of_day else moment).astimezone(UTC)
    except OverflowError:
        return None
    except ValueError:
        raise SearchOptionsError(
            f"Expected a date like 2026-01-31, or a date and time like 2026-01-31T18:30:00+01:00, for "
            f"{field}, not “{text[:_MAX_TEXT]}”.",
            code="bad_date",
        ) from None


async def ids_in_range(sessions: async_sessionmaker[AsyncSession], options: SearchOptions) -> np.ndarray:
    """Ids of the images uploaded within the options' range (an index range scan on created_at).

    As one aggregated value, not a row per id: rows cost ~4 µs each in the driver and SQLAlchemy
    (a million: 3.8 s on PostgreSQL), one array of a million ids 0.27 s."""
    where = []
    if options.uploaded_from is not None:
        where.append(Image.created_at >= options.uploaded_from)
    if options.uploaded_until is not None:
        where.append(Image.created_at < options.uploaded_until)
    async with sessions() as s:
        if (await s.connection()).dialect.name == "postgresql":
            ids = (await s.execute(select(func.array_agg(Image.id)).where(*where))).scalar_one()
            return np.array(ids or [], dtype=np.int64)
        listed = (await s.execute(select(func.group_concat(Image.id)).where(*where))).scalar_one()
    return np.array(listed.split(",") if listed else [], dtype=np.int64)


class _HasImage(Protocol):
    @property
    def image(self) -> Image: ...


H = TypeVar("H", bound=_HasImage)


def _uploaded(image: Image) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    t = image.created_at
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def newest_first(hits: Sequence[H]) -> list[H]:
    """Hits by upload time, newest first; images uploaded at the same instant by id, newest first."""
    return sorted(hits, key=lambda h: (_uploaded(h.image), h.image.id), reverse=True)
