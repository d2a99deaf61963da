"""The page's live feed (one subscriber per socket) outlives what it cannot read: a database that is
away for a moment costs one update, never the socket or the updates after it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa

from capsearch.db.models import Image
from capsearch.events import Event
from tests.conftest import photo_bytes
from tests.ws_page import page, root_of, state_of

pytestmark = pytest.mark.fake_captioner


def test_the_live_feed_skips_an_update_it_cannot_read_and_keeps_going(
    web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_of(web)
    uploaded = web.post("/api/images?wait=true", files={"files": ("a.jpg", photo_bytes(1))}).json()
    image_id = uploaded["items"][0]["image"]["id"]
    real_get = state.images.get
    failures: list[int] = []

    async def get_while_the_database_is_away(wanted: int) -> Image:
        if not failures:  # the first read meets the outage; the database is back for the next
            failures.append(wanted)
            raise sa.OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))
        return await real_get(wanted)

    def publish() -> None:
        state.events.publish(Event("image.updated", {"id": image_id, "status": "ready"}))

    with page(web) as p:
        p.ping()  # subscribed to the feed
        monkeypatch.setattr(state.images, "get", get_while_the_database_is_away)
        assert web.portal is not None
        web.portal.call(publish)  # this update cannot be read: skipped, not fatal
        web.portal.call(publish)
        # The feed handles events in order: the second one's card means the first was met and skipped.
        assert root_of(p.fragment(f"image-{image_id}"))["data-stage"] == "done"
        assert failures == [image_id]
        p.ping()
