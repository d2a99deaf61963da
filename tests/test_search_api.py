"""Search end to end with the real MiniLM embedder: relevance, caption edits, deletes, validation.

Captions come from a scripted captioner (the caption-ready path) or from PATCH (the edit path), so
the right answers are known. Runs on SQLite, and on Postgres when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from capsearch.events import ImageChanged, ImageDeleted
from tests.apikit import files, state_of
from tests.conftest import photo_bytes
from tests.search_helpers import (
    CAPTIONS,
    ScriptedCaptioner,
    api_search,
    assert_index_matches_database,
    captioner_factory,
    upload_captioned,
)

# What an answer says of its order and date range when the request named neither.
UNFILTERED = {"sort": "relevance", "uploaded_from": None, "uploaded_to": None, "in_range": None}

__all__ = ["captioner_factory"]  # fixtures, used by name


@pytest.fixture
async def collection(client: httpx.AsyncClient) -> dict[str, int]:
    """caption → image id, for every caption in CAPTIONS, captioned by the model path."""
    return await upload_captioned(client, CAPTIONS)


def hit_ids(body: dict[str, object]) -> list[int]:
    hits = body["hits"]
    assert isinstance(hits, list)
    return [h["image"]["id"] for h in hits]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dog on a beach", "a dog running on the beach"),
        ("puppy playing in the sand", "a dog running on the beach"),
        ("red car", "a red car parked on a city street"),
        ("plate of spaghetti", "a plate of pasta with tomato sauce"),
        ("snowy mountains", "snow covered mountains under a blue sky"),
        ("kitten", "a cat sleeping on a sofa"),
    ],
)
async def test_known_answers_come_first(
    client: httpx.AsyncClient, app: FastAPI, collection: dict[str, int], query: str, expected: str
) -> None:
    body = await api_search(client, query)
    assert body["no_match"] is False
    assert body["query"] == query
    assert hit_ids(body)[0] == collection[expected]
    hits = body["hits"]
    assert isinstance(hits, list)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    # The relative cut-off keeps the list to hits comparable with the best one.
    assert len(hits) < len(CAPTIONS)
    assert all(s >= scores[0] * state_of(app).settings.search.relative_cutoff for s in scores)


@pytest.mark.parametrize("query", ["quantum chromodynamics lecture", "tax return spreadsheet 2023"])
async def test_no_right_answer_is_no_match(
    client: httpx.AsyncClient, collection: dict[str, int], query: str
) -> None:
    body = await api_search(client, query)
    assert body == {"query": query, "hits": [], "no_match": True} | UNFILTERED


@pytest.mark.parametrize("query", ["beach", "dog"])
async def test_a_caption_holding_every_query_word_answers_it(
    client: httpx.AsyncClient, collection: dict[str, int], query: str
) -> None:
    # MiniLM scores a lone word low against a whole caption (0.45 and 0.35 here), below what the
    # adaptive decision accepts on its own; the literal word makes it an answer, ranked by cosine.
    body = await api_search(client, query)
    hits = body["hits"]
    assert isinstance(hits, list) and body["no_match"] is False
    (top,) = hits
    assert top["image"]["caption"] == "a dog running on the beach"
    assert top["keyword_match"] == 1.0
    assert top["score"] == top["similarity"] < 0.5
    assert top["label"] == "possible"


async def test_hits_are_labelled(client: httpx.AsyncClient, collection: dict[str, int]) -> None:
    hits = (await api_search(client, "plate of spaghetti"))["hits"]
    assert isinstance(hits, list)
    assert hits[0]["label"] == "strong"
    assert all(h["label"] in ("strong", "possible") for h in hits)


async def test_query_validation(client: httpx.AsyncClient, app: FastAPI) -> None:
    for q in ["", "   ", "\n\t"]:
        r = await client.get("/api/search", params={"q": q})
        assert r.status_code == 422
        assert r.json()["code"] == "empty_query" and r.json()["detail"]
    limit = state_of(app).settings.search.max_query_chars
    r = await client.get("/api/search", params={"q": "dog " * limit})
    assert r.status_code == 422 and r.json()["code"] == "query_too_long"
    assert (await client.get("/api/search")).json()["code"] == "empty_query"
    r = await client.get("/api/search", params={"q": "dog", "k": 0})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    # Whitespace is collapsed; k beyond the cap is capped, not refused.
    body = await api_search(client, "  a   dog ", k=10_000)
    assert body["query"] == "a dog"


async def test_k_limits_the_hits(client: httpx.AsyncClient, collection: dict[str, int]) -> None:
    await upload_captioned(client, ["a dog sleeping by the fire", "a dog playing in the snow"], seed=700)
    assert len(hit_ids(await api_search(client, "dog"))) == 3
    assert len(hit_ids(await api_search(client, "dog", k=1))) == 1


async def test_empty_collection_is_no_match(client: httpx.AsyncClient) -> None:
    assert (await api_search(client, "dog"))["no_match"] is True


async def test_edit_caption_reindexes_and_keeps_the_model_caption(
    client: httpx.AsyncClient, app: FastAPI, collection: dict[str, int]
) -> None:
    image_id = collection["a red car parked on a city street"]
    async with state_of(app).events.subscribe() as updates:
        r = await client.patch(f"/api/images/{image_id}", json={"caption": "  a yellow submarine  "})
        assert r.status_code == 200, r.text
        event = await asyncio.wait_for(updates.get(), 10)
    assert isinstance(event, ImageChanged) and event.image_id == image_id
    assert event.image.caption == "a yellow submarine"
    body = r.json()
    assert body["caption"] == "a yellow submarine"
    assert body["user_caption"] == "a yellow submarine"
    assert body["model_caption"] == "a red car parked on a city street"
    assert (await client.get(f"/api/images/{image_id}")).json()["caption"] == "a yellow submarine"
    # Searchable by the new words as soon as PATCH answered; no longer found by the old ones.
    assert hit_ids(await api_search(client, "submarine"))[0] == image_id
    assert image_id not in hit_ids(await api_search(client, "red car"))
    await assert_index_matches_database(app)
    # The stored vector is that of the person's caption.
    state = state_of(app)
    (expected,) = await asyncio.to_thread(state.embedder.predict, ["a yellow submarine"])
    ids, vectors = state.indexer.index.snapshot()
    np.testing.assert_allclose(vectors[list(ids).index(image_id)], expected, atol=1e-5)


async def test_edit_validation(client: httpx.AsyncClient, collection: dict[str, int]) -> None:
    image_id = next(iter(collection.values()))
    for bad in ({"caption": ""}, {"caption": "   "}, {"caption": "x" * 501}, {}, {"caption": 3}):
        r = await client.patch(f"/api/images/{image_id}", json=bad)
        assert r.status_code == 422, bad
        assert r.json()["code"] == "invalid_request"
    assert (await client.patch(f"/api/images/{image_id}", json={"caption": "x" * 500})).status_code == 200
    missing = await client.patch("/api/images/999999", json={"caption": "hello"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_delete_removes_row_files_and_index_entry(
    client: httpx.AsyncClient, app: FastAPI, collection: dict[str, int]
) -> None:
    image_id = collection["a dog running on the beach"]
    image = (await client.get(f"/api/images/{image_id}")).json()
    state = state_of(app)
    files_before = len(state.store.all_files())
    async with state.events.subscribe() as updates:
        r = await client.delete(f"/api/images/{image_id}")
        assert r.status_code == 204 and r.content == b""
        event = await asyncio.wait_for(updates.get(), 10)
    assert event == ImageDeleted(id=image_id)
    assert (await client.get(f"/api/images/{image_id}")).status_code == 404
    assert (await client.get(image["url"])).status_code == 404
    assert (await client.get(image["thumbnail_url"])).status_code == 404
    assert len(state.store.all_files()) == files_before - 2
    assert image_id not in hit_ids(await api_search(client, "dog on a beach"))
    await assert_index_matches_database(app)
    again = await client.delete(f"/api/images/{image_id}")
    assert again.status_code == 404 and again.json()["code"] == "not_found"


async def test_many_edits_and_deletes_keep_index_and_database_equal(
    client: httpx.AsyncClient, app: FastAPI, collection: dict[str, int]
) -> None:
    ids = list(collection.values())
    edits = [
        client.patch(f"/api/images/{i}", json={"caption": f"edited caption number {i}"}) for i in ids[::2]
    ]
    deletes = [client.delete(f"/api/images/{i}") for i in ids[1::3]]
    # Edits and deletes of the same images race; every outcome must leave index == database.
    responses = await asyncio.gather(*edits, *deletes)
    assert {r.status_code for r in responses} <= {200, 204, 404}
    await assert_index_matches_database(app)


async def test_searches_during_concurrent_uploads(
    client: httpx.AsyncClient, collection: dict[str, int]
) -> None:
    new_captions = [f"a green tractor in a field number {i}" for i in range(6)]
    uploads = [
        client.post(
            "/api/images?wait=true", files=files(photo_bytes(500 + i, size=ScriptedCaptioner.size_for(c)))
        )
        for i, c in enumerate(new_captions)
    ]
    searches = [
        client.get("/api/search", params={"q": q}) for q in ("dog on a beach", "tractor", "red car") * 4
    ]
    responses = await asyncio.gather(*uploads, *searches)
    assert all(r.status_code == 201 for r in responses[: len(uploads)])
    for r in responses[len(uploads) :]:
        assert r.status_code == 200
        assert set(r.json()) == {"query", "hits", "no_match", *UNFILTERED}
    # Once the uploads answered (wait=true), their captions are searchable.
    tractors = (await api_search(client, "green tractor", k=20))["hits"]
    assert isinstance(tractors, list)
    assert sum("tractor" in h["image"]["caption"] for h in tractors) == len(new_captions)
    beach = await api_search(client, "dog on a beach")
    assert hit_ids(beach)[0] == collection["a dog running on the beach"]
