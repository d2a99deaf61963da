"""The page's search, caption-edit and delete routes (/ui/...), and the live feed's removal fragment.

Captions come from the scripted captioner, so the right answers are known; the embedder is the real
MiniLM, as in tests/test_search_api.py.
"""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from capsearch.templating import render
from tests.apikit import files
from tests.conftest import photo_bytes
from tests.search_helpers import (
    CAPTIONS,
    ScriptedCaptioner,
    assert_index_matches_database,
    captioner_factory,
    upload_captioned,
)
from tests.ws_page import Page, page, root_of, text_of

DOG = "a dog running on the beach"

__all__ = ["captioner_factory"]  # fixtures, used by name


@pytest.fixture
async def collection(client: httpx.AsyncClient) -> dict[str, int]:
    return await upload_captioned(client, CAPTIONS)


def hits_of(html: str) -> list[tuple[int, float, str]]:
    """(image id, meter value, shown score) of each search hit, in page order."""
    cards = re.findall(
        r'<article id="hit-(\d+)".*?<meter [^>]*value="([\d.]+)".*?class="score-value"[^>]*>([\d.]+)<',
        html,
        re.S,
    )
    return [(int(i), float(v), shown) for i, v, shown in cards]


async def test_search_renders_hits_best_first_with_score_bars(
    client: httpx.AsyncClient, collection: dict[str, int]
) -> None:
    r = await client.get("/ui/search", params={"q": "dog on a beach"})
    assert r.status_code == 200
    assert r.headers["hx-replace-url"] == "/?q=dog+on+a+beach"
    html = r.text
    assert 'data-state="hits"' in html and "Results for “dog on a beach”" in html
    hits = hits_of(html)
    assert hits and hits[0][0] == collection[DOG]
    scores = [v for _, v, _ in hits]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert all(shown == f"{v:.2f}" for _, v, shown in hits)
    assert f"{len(hits)} match" in html
    # Hits are the search's own cards: never out of band, never clashing with the collection's ids.
    assert "hx-swap-oob" not in html and 'id="image-' not in html
    # Scores are drawn without style attributes (the page's CSP forbids them).
    assert not re.search(r"\sstyle=", html)


async def test_nothing_close_enough_is_a_clear_no_match(
    client: httpx.AsyncClient, collection: dict[str, int]
) -> None:
    r = await client.get("/ui/search", params={"q": "quantum chromodynamics lecture"})
    assert r.status_code == 200
    assert 'data-state="no-match"' in r.text
    assert "No match for “quantum chromodynamics lecture”" in r.text
    assert "<article" not in r.text


@pytest.mark.parametrize(
    ("q", "code", "words"),
    [("   ", "empty_query", "Type a few words"), ("x" * 201, "query_too_long", "at most 200")],
)
async def test_refused_queries_say_why(client: httpx.AsyncClient, q: str, code: str, words: str) -> None:
    r = await client.get("/ui/search", params={"q": q})
    assert r.status_code == 422  # the page's htmx config swaps 422, so the message is shown
    assert f'data-code="{code}"' in r.text and words in r.text and 'role="alert"' in r.text


async def test_a_cleared_box_goes_back_to_the_collection(client: httpx.AsyncClient) -> None:
    r = await client.get("/ui/search", params={"q": ""})
    assert r.status_code == 200 and r.text == ""
    assert r.headers["hx-replace-url"] == "/"


async def test_the_page_renders_a_search_from_its_address(
    client: httpx.AsyncClient, collection: dict[str, int]
) -> None:
    html = (await client.get("/", params={"q": "plate of spaghetti"})).text
    assert re.search(r'<input id="search-input"[^>]*type="search"[^>]*value="plate of spaghetti"', html)
    results = html[html.index('id="search-results"') : html.index('id="dropzone"')]
    assert hits_of(results)[0][0] == collection["a plate of pasta with tomato sauce"]
    box = re.search(r'<input id="search-input"[^>]*>', html)
    assert box is not None
    assert 'hx-get="/ui/search"' in box[0] and 'hx-trigger="input changed delay:250ms, search"' in box[0]
    assert 'hx-target="#search-results"' in box[0] and "hx-indicator=" in box[0]
    assert '<label for="search-input"' in html
    # Without a query the results region is empty and the collection shows.
    assert "search-panel" not in (await client.get("/")).text


async def test_caption_edit_returns_the_card_showing_both_captions(
    client: httpx.AsyncClient, app: FastAPI, collection: dict[str, int]
) -> None:
    dog = collection[DOG]
    r = await client.post(f"/ui/images/{dog}/caption", data={"caption": "  Rex on Brighton beach "})
    assert r.status_code == 200
    assert root_of(r.text) | {"id": None} == {"id": None, "class": "card", "data-stage": "done"}
    assert f'id="image-{dog}"' in r.text
    assert '<p class="caption">Rex on Brighton beach</p>' in r.text
    assert "edited" in text_of(r.text) and f'model: <span class="model-caption">{DOG}</span>' in r.text
    assert re.search(r'<form class="caption-form"[^>]*hidden>', r.text)  # closed again
    image = (await client.get(f"/api/images/{dog}")).json()
    assert (image["caption"], image["model_caption"]) == ("Rex on Brighton beach", DOG)
    found = (await client.get("/api/search", params={"q": "Rex in Brighton"})).json()
    assert found["hits"][0]["image"]["id"] == dog
    await assert_index_matches_database(app)

    # From a search hit: the answer is the hit again, keeping its score until the search reruns.
    r = await client.post(f"/ui/images/{dog}/caption", data={"caption": "Rex the dog", "score": "0.8123"})
    assert r.status_code == 200 and f'<article id="hit-{dog}" class="card card-hit"' in r.text
    assert hits_of(r.text) == [(dog, 0.8123, "0.81")]


@pytest.mark.parametrize(
    ("caption", "words"),
    [("   ", "Write a caption, or press Cancel"), ("y" * 501, "at most 500 characters; this one has 501")],
)
async def test_a_refused_caption_reopens_the_form_with_the_reason(
    client: httpx.AsyncClient, collection: dict[str, int], caption: str, words: str
) -> None:
    dog = collection[DOG]
    r = await client.post(f"/ui/images/{dog}/caption", data={"caption": caption})
    assert r.status_code == 422
    assert f'<article id="image-{dog}" class="card card-editing"' in r.text
    assert words in r.text and 'role="alert"' in r.text
    assert f'aria-describedby="image-{dog}-caption-error"' in r.text and 'aria-invalid="true"' in r.text
    assert not re.search(r'<form class="caption-form"[^>]*hidden>', r.text)
    assert f'value="{caption}"' in r.text  # what was typed is kept to fix
    assert (await client.get(f"/api/images/{dog}")).json()["caption"] == DOG


async def test_delete_removes_the_image_and_its_cards(
    client: httpx.AsyncClient, app: FastAPI, collection: dict[str, int]
) -> None:
    dog = collection[DOG]
    r = await client.delete(f"/ui/images/{dog}")
    assert r.status_code == 200 and r.headers["hx-reswap"] == "none"
    assert r.text == render("partials/image_deleted.html", image_id=dog)
    assert (await client.get(f"/api/images/{dog}")).status_code == 404
    body = (await client.get("/api/search", params={"q": "dog on a beach"})).json()
    assert dog not in [h["image"]["id"] for h in body["hits"]]
    await assert_index_matches_database(app)
    # Deleted elsewhere first: the card still just leaves this page.
    again = await client.delete(f"/ui/images/{dog}")
    assert again.status_code == 200 and 'hx-swap-oob="delete"' in again.text
    # Editing a card whose image is gone: the card leaves, and a toast says why nothing was saved.
    edit = await client.post(f"/ui/images/{dog}/caption", data={"caption": "too late"})
    assert edit.status_code == 200 and edit.headers["hx-reswap"] == "none"
    assert f'<div id="image-{dog}" hx-swap-oob="delete">' in edit.text and "was deleted" in edit.text


def test_deleted_fragment_removes_both_cards() -> None:
    html = render("partials/image_deleted.html", image_id=42)
    assert '<div id="image-42" hx-swap-oob="delete"></div>' in html
    assert '<div id="hit-42" hx-swap-oob="delete"></div>' in html


def removal(p: Page, image_id: int) -> str:
    """The next fragment that removes the image's card (other fragments are collected on the way)."""
    seen = 0
    while True:
        for fragment in p.fragments[seen:]:
            root = root_of(fragment)
            if root.get("id") == f"image-{image_id}" and root.get("hx-swap-oob") == "delete":
                return fragment
        seen = len(p.fragments)
        p._pump()


def test_every_open_page_hears_of_edits_and_deletes(app: FastAPI) -> None:
    with TestClient(app) as web:
        size = ScriptedCaptioner.size_for(DOG)
        r = web.post("/api/images?wait=true", files=files(photo_bytes(900, size=size)))
        image_id = r.json()["items"][0]["image"]["id"]
        with page(web) as one, page(web) as two:
            one.ping()
            two.ping()
            assert web.post(f"/ui/images/{image_id}/caption", data={"caption": "Rex"}).status_code == 200
            for p in (one, two):
                card = p.fragment(f"image-{image_id}")
                assert '<p class="caption">Rex</p>' in card and "edited" in card
            assert web.delete(f"/ui/images/{image_id}").status_code == 200
            for p in (one, two):
                fragment = removal(p, image_id)
                assert f'<div id="hit-{image_id}" hx-swap-oob="delete">' in fragment
