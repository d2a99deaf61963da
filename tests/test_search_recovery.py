"""The index survives losing its file, a crash between commit and save, a new embedding model, and
growing past the exact-search threshold. Each test restarts the app on the same database."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from capsearch.app import create_app
from capsearch.cli import cmd_reindex
from capsearch.compose import index_dir
from capsearch.config import Settings
from capsearch.db.models import Image
from capsearch.ml.factory import build_embedder
from capsearch.search import persist
from capsearch.services.indexing import SearchIndexer
from tests.apikit import state_of
from tests.search_helpers import CAPTIONS, ScriptedCaptioner, assert_index_matches_database, upload_captioned

INDEX_LOG = "capsearch.services.indexing"


@asynccontextmanager
async def running(
    settings: Settings, **factories: object
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, captioner_factory=lambda _s: ScriptedCaptioner(), **factories)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


async def top_hit(client: httpx.AsyncClient, q: str) -> int | None:
    hits = (await client.get("/api/search", params={"q": q})).json()["hits"]
    return hits[0]["image"]["id"] if hits else None


def rebuild_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == INDEX_LOG and "rebuilding" in r.getMessage()]


async def test_rebuilt_after_its_file_is_deleted(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as (_app, client):
        ids = await upload_captioned(client, CAPTIONS[:4])
    (index_dir(settings) / persist.INDEX_FILE).unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, INDEX_LOG):
        async with running(settings) as (app, client):
            assert await top_hit(client, "dog on a beach") == ids["a dog running on the beach"]
            await assert_index_matches_database(app)
    (line,) = rebuild_lines(caplog)
    assert "missing" in line and "4 stored embeddings" in line
    # Saved again: the next start loads it without a rebuild.
    caplog.clear()
    with caplog.at_level(logging.INFO, INDEX_LOG):
        async with running(settings) as (app, _client):
            assert len(state_of(app).indexer.index) == 4
    assert rebuild_lines(caplog) == []


async def test_rebuilt_after_a_crash_between_commit_and_save(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(settings) as (_app, client):
        first = await upload_captioned(client, CAPTIONS[:3])

    # A process that commits rows but dies before any index save: saving never happens.
    async def no_save(self: SearchIndexer) -> None:
        self._dirty = False

    monkeypatch.setattr(SearchIndexer, "save", no_save)
    async with running(settings) as (_app, client):
        later = await upload_captioned(client, CAPTIONS[3:6], seed=400)
        assert (await client.delete(f"/api/images/{first['a dog running on the beach']}")).status_code == 204
        edited = first["a red car parked on a city street"]
        assert (
            await client.patch(f"/api/images/{edited}", json={"caption": "a hot air balloon"})
        ).status_code == 200
    monkeypatch.undo()
    saved = persist.read_meta(index_dir(settings))
    assert saved.count == 3  # the file on disk is the stale one from before the "crash"
    caplog.clear()
    with caplog.at_level(logging.INFO, INDEX_LOG):
        async with running(settings) as (app, client):
            await assert_index_matches_database(app)
            assert len(state_of(app).indexer.index) == 5
            assert await top_hit(client, "dog on a beach") is None
            assert await top_hit(client, "hot air balloon") == edited
            assert await top_hit(client, "kitten on a couch") == later["a cat sleeping on a sofa"]
    (line,) = rebuild_lines(caplog)
    assert "differs from the database" in line


async def test_captions_without_vectors_are_embedded_at_start(settings: Settings) -> None:
    async with running(settings) as (app, client):
        ids = await upload_captioned(client, CAPTIONS[:3])
        # As if the process died after the caption committed but before it was embedded.
        async with state_of(app).sessions() as s, s.begin():
            image_id = ids["a plate of pasta with tomato sauce"]
            await s.execute(
                update(Image).where(Image.id == image_id).values(caption="a bowl of ramen noodles")
            )
    async with running(settings) as (app, client):
        await state_of(app).indexer.settle()
        assert await top_hit(client, "ramen") == image_id
        await assert_index_matches_database(app)


async def test_a_new_embedding_model_gets_its_own_vectors(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as (_app, client):
        ids = await upload_captioned(client, CAPTIONS[:3])

    def other_model(s: Settings) -> object:
        embedder = build_embedder(s)
        embedder.label = "my-minilm-copy"
        return embedder

    caplog.clear()
    with caplog.at_level(logging.INFO, INDEX_LOG):
        async with running(settings, embedder_factory=other_model) as (app, client):
            await state_of(app).indexer.settle()
            assert state_of(app).indexer.model == "my-minilm-copy"
            await assert_index_matches_database(app)
            assert len(state_of(app).indexer.index) == 3
            assert await top_hit(client, "dog on a beach") == ids["a dog running on the beach"]
    (line,) = rebuild_lines(caplog)
    assert "for sentence-transformers/all-MiniLM-L6-v2" in line and "my-minilm-copy" in line


async def test_grows_from_exact_to_approximate_and_back(settings: Settings) -> None:
    settings.search.approximate_threshold = 5
    settings.search.save_delay_s = 0
    async with running(settings) as (app, client):
        ids = await upload_captioned(client, CAPTIONS)
        indexer = state_of(app).indexer
        await indexer.settle()
        assert indexer.index.kind == "ivf"
        assert await top_hit(client, "dog on a beach") == ids["a dog running on the beach"]
        await assert_index_matches_database(app)
        # Below half the threshold: back to exact (between half and the threshold it stays IVF).
        for caption in CAPTIONS[:7]:
            assert (await client.delete(f"/api/images/{ids[caption]}")).status_code == 204
        await indexer.settle()
        assert indexer.index.kind == "exact"
        await assert_index_matches_database(app)
    async with running(settings) as (app, client):
        assert state_of(app).indexer.index.kind == "exact"
        assert await top_hit(client, "laptop") == ids["a laptop and a cup of coffee on a desk"]


async def test_reindex_command(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    async with running(settings) as (_app, client):
        await upload_captioned(client, CAPTIONS[:4])
    before = persist.read_meta(index_dir(settings))
    (index_dir(settings) / persist.INDEX_FILE).write_bytes(b"damaged")
    # A command line of its own: its own event loop, so off this test's loop.
    assert await asyncio.to_thread(cmd_reindex, settings, argparse.Namespace()) == 0
    assert "4 vectors (exact" in capsys.readouterr().out
    loaded, meta = persist.load(index_dir(settings), model=before.model, dim=before.dim)
    assert meta.checksum == before.checksum and loaded.ntotal == 4
    assert np.isclose(meta.dim, 384)
