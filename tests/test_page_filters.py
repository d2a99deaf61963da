"""The page's sort and date controls (/ui/search and /): sent beside q, kept in the address bar, shown
in the results' header, refused with a message in the results. Scripted captions and the real MiniLM,
upload times set on the rows (tests/test_search_filters.py has the collection)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from capsearch.templating import uploaded
from tests.search_helpers import DOGS, OTHERS, TIMES, captioner_factory, dated

FILTERS = {"sort": "newest", "from": "2026-01-10", "to": "2026-01-20", "tz": "Europe/Berlin"}

__all__ = ["captioner_factory", "dated"]  # fixtures, used by name


def hit_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<article id="hit-(\d+)"', html)]


async def ui_search(client: httpx.AsyncClient, q: str, **params: Any) -> httpx.Response:
    return await client.get("/ui/search", params={"q": q, **params}, headers={"HX-Request": "true"})


async def test_the_controls_order_narrow_and_stay_in_the_address(
    client: httpx.AsyncClient, dated: dict[str, int]
) -> None:
    r = await ui_search(client, "dog", **FILTERS)
    assert r.status_code == 200
    assert (
        r.headers["hx-replace-url"] == "/?q=dog&sort=newest&from=2026-01-10&to=2026-01-20&tz=Europe%2FBerlin"
    )
    # 10 January in Berlin starts at 23:00 UTC on the 9th: both dogs of the 10th, and the one of the 20th.
    assert hit_ids(r.text) == [dated[DOGS[3]], dated[DOGS[2]], dated[DOGS[1]]]
    assert "3 matches, newest first" in r.text and "filtered by upload date" in r.text
    assert 'data-sort="newest"' in r.text and 'data-filtered="true"' in r.text
    # The defaults need no mention in the address; the zone only comes with dates.
    plain = await ui_search(client, "dog", sort="relevance", tz="Europe/Berlin")
    assert plain.headers["hx-replace-url"] == "/?q=dog"
    assert "4 matches, best first" in plain.text and "filtered by upload date" not in plain.text


async def test_every_card_says_when_it_was_uploaded(client: httpx.AsyncClient, dated: dict[str, int]) -> None:
    r = await ui_search(client, "dog", sort="newest")
    card_date = r'<time class="card-date" datetime="([^"]+)" title="Uploaded ([^"]+)">([^<]+)</time>'
    dates = re.findall(card_date, r.text)
    # In UTC, the same for every page that gets the fragment; the page rewrites it in its own zone.
    assert dates == [
        ("2026-01-20T12:00:00Z", "20 Jan 2026, 12:00 UTC", "20 Jan 2026"),
        ("2026-01-10T23:59:59Z", "10 Jan 2026, 23:59 UTC", "10 Jan 2026"),
        ("2026-01-10T00:00:00Z", "10 Jan 2026, 00:00 UTC", "10 Jan 2026"),
        ("2026-01-05T10:00:00Z", "5 Jan 2026, 10:00 UTC", "5 Jan 2026"),
    ]
    page = await client.get("/")  # the collection's cards too
    assert f'datetime="{uploaded(TIMES[OTHERS[0]])["iso"]}"' in page.text


def test_an_upload_time_without_a_zone_is_utc() -> None:
    # SQLite hands back naive datetimes; the API's JSON may carry either spelling of UTC.
    naive = uploaded("2026-03-01T08:05:09.123456")
    assert naive == uploaded("2026-03-01T08:05:09.123456Z") == uploaded("2026-03-01T09:05:09+01:00")
    assert naive == {"iso": "2026-03-01T08:05:09Z", "day": "1 Mar 2026", "full": "1 Mar 2026, 08:05 UTC"}


async def test_a_range_with_no_images_says_so_and_offers_to_clear(
    client: httpx.AsyncClient, dated: dict[str, int]
) -> None:
    r = await ui_search(client, "dog", **{"from": "2024-01-01", "to": "2024-12-31"})
    assert r.status_code == 200 and 'data-reason="empty-range"' in r.text
    assert "No images were uploaded in the chosen dates" in r.text
    assert 'data-action="clear-filters"' in r.text
    none = await ui_search(client, "quantum chromodynamics lecture", **{"from": "2026-01-01"})
    assert "None of the 6 images uploaded in the chosen dates comes close enough" in none.text


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        (
            {"from": "2026-02-01", "to": "2026-01-01"},
            "bad_date_range",
            "the “From” date must not be after the “To” date",
        ),
        ({"from": "2026-02-30"}, "bad_date", "for the “From” date, not “2026-02-30”"),
        ({"sort": "oldest"}, "bad_sort", "Sort by “relevance” or “newest”"),
        ({"from": "2026-01-01", "tz": "Nowhere/Special"}, "bad_time_zone", "not a time zone"),
    ],
)
async def test_a_bad_range_is_a_message_in_the_results(
    client: httpx.AsyncClient, params: dict[str, str], code: str, words: str
) -> None:
    r = await ui_search(client, "dog", **params)
    assert r.status_code == 422
    assert f'data-code="{code}"' in r.text and words in r.text and 'role="alert"' in r.text


async def test_the_page_restores_a_filtered_search_from_its_address(
    client: httpx.AsyncClient, dated: dict[str, int]
) -> None:
    r = await client.get("/", params={"q": "dog", **FILTERS})
    assert r.status_code == 200
    html = r.text
    assert re.search(r'<option value="newest" selected>', html)
    assert 'id="filter-from" type="date" name="from" value="2026-01-10"' in html
    assert 'id="filter-to" type="date" name="to" value="2026-01-20"' in html
    assert 'name="tz" value="Europe/Berlin"' in html
    assert hit_ids(html) == [dated[DOGS[3]], dated[DOGS[2]], dated[DOGS[1]]]
    assert not re.search(r'data-action="clear-filters"\s+hidden', html)  # something to clear
    # Without filters the controls show their defaults and nothing to clear.
    bare = (await client.get("/", params={"q": "dog"})).text
    assert '<option value="relevance" selected>' in bare and 'value=""' in bare
    assert re.search(r'data-action="clear-filters"\s+hidden', bare)
    # A refused range still loads the page, with the message where the results would be.
    bad = await client.get("/", params={"q": "dog", "from": "2026-02-01", "to": "2026-01-01"})
    assert bad.status_code == 200 and 'data-code="bad_date_range"' in bad.text
    assert OTHERS[0] not in "".join(re.findall(r'<article id="hit-.*?</article>', html, re.S))
