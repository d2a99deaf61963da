"""The idle gallery over `/ws`: skeleton cards at once, captions filled in live, cancelled on activity."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from capsearch.config import Settings
from tests.fakes import FakeCaptioner
from tests.ws_page import Page, page, root_of, state_of, stored

pytestmark = pytest.mark.fake_captioner


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.gallery.count = 4
    settings.caption_batch.max_batch_size = 1  # one example at a time, so a cancel finds some queued
    return settings


def galleries(p: Page) -> list[str]:
    return [f for f in p.fragments if root_of(f).get("id") == "gallery"]


def next_gallery(p: Page, seen: int) -> str:
    """The next gallery fragment after `seen` of them (however long picking the examples takes)."""
    p.until(lambda: len(galleries(p)) > seen)
    return galleries(p)[seen]


def card_ids(gallery_html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in gallery_html.split('id="example-')[1:]]


def test_idle_page_gets_skeletons_then_captions(web: TestClient) -> None:
    with page(web) as p:
        p.send(type="gallery.request")
        gallery = next_gallery(p, 0)
        assert root_of(gallery).get("hx-swap-oob") == "true"
        ids = card_ids(gallery)
        assert len(ids) == 4 and gallery.count('data-stage="captioning"') == 4
        for card in ids:
            assert "a picture" in p.fragment(f"example-{card}", "done")  # the fake captioner's words
        p.send(type="gallery.request")  # a new idle period: a new gallery
        assert card_ids(next_gallery(p, 1)) != ids
    assert stored(web) == (0, 0)  # examples are shown, never stored


def test_activity_drops_the_examples_still_queued(web: TestClient, fake_captioner: FakeCaptioner) -> None:
    fake_captioner.gate.clear()
    batcher = state_of(web).caption_batcher
    with page(web) as p:
        p.send(type="gallery.request")
        ids = card_ids(next_gallery(p, 0))
        assert fake_captioner.entered.wait(10)  # the first example is on the (held) model
        assert batcher.depth == 3
        p.send(type="gallery.cancel")
        for _ in range(200):  # round trips let the cancellation reach the queued requests
            if batcher.depth == 0:
                break
            p.ping()
        assert batcher.depth == 0, "cancelled examples must leave the caption queue"
        fake_captioner.gate.set()
        p.ping()
        assert len(fake_captioner.batches) <= 1  # only the example already on the model ran
        finished = [f for f in p.fragments if 'data-stage="done"' in f]
        assert not any(f'id="example-{i}"' in f for i in ids for f in finished)


def test_a_second_request_while_one_runs_is_ignored(web: TestClient, fake_captioner: FakeCaptioner) -> None:
    fake_captioner.gate.clear()
    with page(web) as p:
        p.send(type="gallery.request")
        next_gallery(p, 0)
        assert fake_captioner.entered.wait(10)
        p.send(type="gallery.request")
        p.ping()
        assert len(galleries(p)) == 1
        fake_captioner.gate.set()
