"""The live feed: each event is rendered once per process whatever the number of open pages, a page
that falls behind is resynced instead of left stale, and a database that is away for a moment costs
one status card, never the socket or the updates after it."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa

from capsearch.events import ImageChanged, ImageDeleted, parse_event, to_json
from capsearch.shapes import ImageOut
from capsearch.ws.feed import PageFeed, Rendered, Resync
from tests.conftest import photo_bytes
from tests.ws_page import page, root_of, state_of

pytestmark = pytest.mark.fake_captioner


def _uploaded(web: TestClient, seed: int) -> int:
    r = web.post("/api/images?wait=true", files={"files": (f"{seed}.jpg", photo_bytes(seed))})
    return int(r.json()["items"][0]["image"]["id"])


def test_events_are_json_and_back(web: TestClient) -> None:
    image_id = _uploaded(web, 1)
    assert web.portal is not None
    image = web.portal.call(state_of(web).library.get, image_id)
    for event in (ImageChanged.of(image), ImageDeleted(id=image_id)):
        assert parse_event(to_json(event)) == event
    with pytest.raises(Exception, match="validation error"):
        parse_event(b'{"type": "image.exploded", "id": 1}')


def test_one_render_per_event_whatever_the_number_of_pages(web: TestClient) -> None:
    live = state_of(web).live
    with page(web) as a, page(web) as b, page(web) as c:
        for p in (a, b, c):
            p.ping()  # all three have joined the feed
        before = live.renders
        image_id = _uploaded(web, 2)
        cards = [p.fragment(f"image-{image_id}", stage="done") for p in (a, b, c)]
        # Every page got the very same text; the card was rendered once per event, not once per page.
        assert cards[0] == cards[1] == cards[2]
        events = live.renders - before
        assert 1 <= events <= 3  # queued, captioning (when the batch started after the insert), ready


def test_a_page_that_falls_behind_is_resynced() -> None:
    feed = PageFeed(size=3)
    image = ImageOut.model_construct(id=1)
    for _ in range(5):  # more than the page can hold: the backlog is dropped, one resync remains
        feed.offer(Rendered(ImageChanged.model_construct(image=image), "{}"))
    assert feed.resyncs == 1
    assert isinstance(asyncio.run(feed.next()), Resync)


def test_a_lagging_page_gets_the_collection_as_it_is_now(web: TestClient) -> None:
    first = _uploaded(web, 3)
    with page(web) as p:
        p.ping()
        (feed_in,) = [f for f in state_of(web).live._pages]
        assert web.portal is not None
        web.portal.call(feed_in.resync)
        resync = p.fragment("collection-count")
        assert root_of(resync)["data-total"] == "1" and root_of(resync)["hx-swap-oob"] == "true"
        assert f'id="image-{first}"' in resync
        p.ping()


def test_a_status_card_it_cannot_read_is_skipped_and_the_feed_goes_on(
    web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = state_of(web).live
    real = live.snapshot
    failures: list[int] = []

    async def snapshot_while_the_database_is_away(wanted: int) -> ImageOut | None:
        if not failures:  # the first read meets the outage; the database is back for the next
            failures.append(wanted)
            raise sa.OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))
        return await real(wanted)

    monkeypatch.setattr(live, "snapshot", snapshot_while_the_database_is_away)
    with page(web) as p:
        p.upload("feed-outage", photo_bytes(4))
        image_id = p.expect("upload.done", id="feed-outage")["image_id"]
        # The upload's own status card could not be read once; the live card still arrives.
        assert root_of(p.fragment(f"image-{image_id}", stage="done"))["data-stage"] == "done"
        assert failures == [image_id]
        p.ping()
