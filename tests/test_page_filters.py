"""The page's sort and date controls (/ui/search and /): sent beside q, kept in the address bar, shown
in the results' header, refused with a message in the results. Scripted captions and the real MiniLM,
upload times set on the rows (tests/test_search_filters.py has the collection)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.search_helpers import DOGS, OTHERS, captioner_factory, dated

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
