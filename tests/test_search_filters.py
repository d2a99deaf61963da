"""Sort and upload-date filters of search: parsing, GET /api/search, and the filter's place before the
index's top-k cut. Real MiniLM embedder, scripted captions, upload times set on the rows. Runs on
SQLite, and on Postgres when TEST_DATABASE_URL is set."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from capsearch.services import search as search_module
from capsearch.services.search_options import SearchOptions, SearchOptionsError
from tests.apikit import state_of
from tests.search_helpers import (
    DOGS,
    END_OF_DAY,
    JAN_10,
    OTHERS,
    TIMES,
    api_search,
    captioner_factory,
    dated,
    set_uploaded,
    upload_captioned,
)

__all__ = ["captioner_factory", "dated"]  # fixtures, used by name


def captions(body: dict[str, Any]) -> list[str]:
    return [h["image"]["caption"] for h in body["hits"]]


# ---- parsing ------------------------------------------------------------------------------------


def test_dates_are_whole_days_in_the_time_zone() -> None:
    day = SearchOptions.parse(None, "2026-01-10", "2026-01-10")
    assert (day.uploaded_from, day.uploaded_to) == (JAN_10, JAN_10 + END_OF_DAY)
    assert day.uploaded_until == JAN_10 + timedelta(days=1) and day.filtered and day.sort == "relevance"
    tokyo = SearchOptions.parse("newest", "2026-01-10", None, "Asia/Tokyo")  # UTC+9
    assert tokyo.uploaded_from == JAN_10 - timedelta(hours=9) and tokyo.uploaded_to is None
    assert tokyo.sort == "newest"
    exact = SearchOptions.parse("", "2026-01-10T12:00:00+01:00", "2026-01-10T12:00:00Z")
    assert exact.uploaded_from == JAN_10 + timedelta(hours=11)
    assert exact.uploaded_to == JAN_10 + timedelta(hours=12)  # inclusive: that very instant
    naive = SearchOptions.parse(None, "2026-01-10T09:00", None, "Asia/Tokyo")
    assert naive.uploaded_from == JAN_10
    assert not SearchOptions.parse("", "", "", "").filtered
    assert not SearchOptions.parse(None, None, None, "Nowhere/Special").filtered  # no dates, no zone
    # The calendar's end is no bound at all, not an error.
    assert SearchOptions.parse(None, None, "9999-12-31").uploaded_until is None


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("oldest",), "bad_sort", "“relevance” or “newest”"),
        ((None, "yesterday"), "bad_date", "a date like 2026-01-31, or a date and time like"),
        ((None, None, "2026-13-01"), "bad_date", "for uploaded_to, not “2026-13-01”"),
        ((None, "2026-01-10T25:00"), "bad_date", "not “2026-01-10T25:00”"),
        ((None, "2026-02-01", "2026-01-31"), "bad_date_range", "uploaded_from must not be after uploaded_to"),
        ((None, "2026-01-10T12:00Z", "2026-01-10T11:59Z"), "bad_date_range", "ends before it starts"),
        ((None, "2026-01-10", None, "Mars/Olympus_Mons"), "bad_time_zone", "not a time zone"),
        ((None, "2026-01-10", None, "../../etc/passwd"), "bad_time_zone", "IANA name"),
    ],
)
def test_mistakes_are_named(args: tuple[str | None, ...], code: str, words: str) -> None:
    with pytest.raises(SearchOptionsError) as e:
        SearchOptions.parse(*args)
    assert (e.value.code, e.value.status_code) == (code, 422)
    assert words in e.value.message


# ---- GET /api/search ----------------------------------------------------------------------------


async def test_newest_first_orders_the_matches_and_lets_in_nothing_else(
    client: httpx.AsyncClient, app: FastAPI, dated: dict[str, int]
) -> None:
    best = await api_search(client, "dog")
    assert sorted(captions(best)) == sorted(DOGS) and best["sort"] == "relevance"
    newest = await api_search(client, "dog", sort="newest")
    # The same matches, newest first; the pasta is the newest image of all but no dog.
    assert captions(newest) == [DOGS[3], DOGS[2], DOGS[1], DOGS[0]]
    assert newest["sort"] == "newest" and newest["in_range"] is None
    assert newest["uploaded_from"] is None and newest["uploaded_to"] is None
    # Uploaded at the same instant: the larger id first.
    await set_uploaded(app, {dated[DOGS[0]]: TIMES[DOGS[3]]})
    tied = sorted([DOGS[0], DOGS[3]], key=dated.__getitem__, reverse=True)
    assert captions(await api_search(client, "dog", sort="newest"))[:2] == tied
    # k still caps the answer: the newest k of the matches.
    assert captions(await api_search(client, "dog", sort="newest", k=1)) == tied[:1]


async def test_a_date_range_holds_both_its_ends(client: httpx.AsyncClient, dated: dict[str, int]) -> None:
    day = await api_search(client, "dog", uploaded_from="2026-01-10", uploaded_to="2026-01-10")
    assert sorted(captions(day)) == sorted([DOGS[1], DOGS[2]])
    assert day["in_range"] == 2  # the two dogs; the car came a microsecond too early
    assert day["uploaded_from"] == "2026-01-10T00:00:00Z"
    assert day["uploaded_to"] == "2026-01-10T23:59:59.999999Z"
    exact = {"uploaded_from": "2026-01-10T00:00:00Z", "uploaded_to": "2026-01-10T23:59:59.999998Z"}
    assert captions(await api_search(client, "dog", **exact)) == [DOGS[1]]
    # The same day in Tokyo (UTC+9) starts at 15:00 UTC on the 9th: the car is in, the late dog out.
    tokyo = await api_search(
        client, "a red car", uploaded_from="2026-01-10", uploaded_to="2026-01-10", tz="Asia/Tokyo"
    )
    assert captions(tokyo) == [OTHERS[1]] and tokyo["in_range"] == 2
    # One bound alone: everything after it.
    since = await api_search(client, "dog", sort="newest", uploaded_from="2026-01-11")
    assert captions(since) == [DOGS[3]] and since["in_range"] == 2


async def test_a_range_holding_nothing_says_so(client: httpx.AsyncClient, dated: dict[str, int]) -> None:
    empty = await api_search(client, "dog", uploaded_from="2025-01-01", uploaded_to="2025-12-31")
    assert (empty["hits"], empty["no_match"], empty["in_range"]) == ([], True, 0)
    # Images in the range, none of them a match: no_match too, but in_range tells the two apart.
    none = await api_search(client, "quantum chromodynamics lecture", uploaded_from="2026-01-01")
    assert (none["hits"], none["no_match"], none["in_range"]) == ([], True, 6)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"sort": "oldest"}, "bad_sort"),
        ({"uploaded_from": "last week"}, "bad_date"),
        ({"uploaded_to": "2026-02-30"}, "bad_date"),
        ({"uploaded_from": "2026-02-01", "uploaded_to": "2026-01-01"}, "bad_date_range"),
        ({"uploaded_from": "2026-02-01", "tz": "Nowhere/Special"}, "bad_time_zone"),
    ],
)
async def test_bad_options_are_422_with_their_code(
    client: httpx.AsyncClient, params: dict[str, str], code: str
) -> None:
    r = await client.get("/api/search", params={"q": "dog", **params})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code and r.json()["detail"].endswith(".")


async def test_the_range_narrows_the_candidates_before_the_top_k_cut(
    client: httpx.AsyncClient, app: FastAPI, dated: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pool of 4 candidates for k=1 (as 50 are for a real collection's first page), and more
    # than 4 captions nearer the query than the old beach dog, the only image of its day.
    monkeypatch.setattr(search_module, "MIN_POOL", 1)
    # The query matches the beach dog well (a filtered search still only shows real matches).
    query = "a dog running on the beach at sunset"
    nearer = [
        "a dog running on the beach at sunset",
        "a dog running on a beach at sunset",
        "two dogs running on the beach at sunset",
        "a puppy running on the beach at sunset",
        "a dog running along the beach at sunset",
        "dogs running on the beach at sunset",
    ]
    await upload_captioned(client, nearer, seed=800)
    indexer = state_of(app).indexer
    vector = await indexer.embedder.run(query)
    assert dated[DOGS[0]] not in {i for i, _ in await indexer.nearest(vector, 4)}
    body = await api_search(client, query, k=1, uploaded_from="2026-01-05", uploaded_to="2026-01-05")
    assert captions(body) == [DOGS[0]] and body["in_range"] == 1
