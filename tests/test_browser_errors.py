"""Errors on the live page, in a real Chromium: an htmx request the server refuses is never silent.

A JSON error (500 `internal_error` here) is shown as a toast with the server's own sentence; during a
database outage a delete answers 503 with a toast fragment, and the card stays where it was.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.requests import HTTPConnection

from capsearch.api.middleware import DB_DOWN, INTERNAL
from capsearch.deps import get_search_service
from capsearch.services.search import SearchService
from capsearch.state import AppState
from tests.apikit import dead_database_url
from tests.browserkit import BROWSER, launch
from tests.conftest import photo_bytes

pytestmark = [*BROWSER, pytest.mark.fake_captioner]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

OPEN = '#connection[data-state="open"]'


async def test_refused_htmx_requests_show_a_toast(
    server: str, app: FastAPI, db_url: str, tmp_path: Any
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as api:
        r = await api.post(
            "/api/images?wait=true", files=[("files", ("a.jpg", photo_bytes(3), "image/jpeg"))]
        )
        assert r.status_code == 201, r.text
        image_id = r.json()["items"][0]["image"]["id"]
    state: AppState = app.state.capsearch

    def search_fails_on_the_page(conn: HTTPConnection) -> SearchService:
        if conn.url.path.startswith("/ui/"):
            raise RuntimeError("search fell over")
        return state.search

    app.dependency_overrides[get_search_service] = search_fails_on_the_page
    async with async_playwright() as pw:
        browser = await launch(pw)
        page = await browser.new_page()
        page.on("dialog", lambda d: d.accept())  # the delete button asks first
        await page.goto(server)
        await page.wait_for_selector(OPEN)
        await page.fill("#search-input", "a dog")
        toast = page.locator("#toasts .toast-error .toast-message")
        await toast.filter(has_text=INTERNAL).wait_for()

        # The failed search swapped nothing: the collection, with its card, is still shown.
        dead = create_async_engine(dead_database_url(db_url, tmp_path))
        state.sessions.configure(bind=dead)
        try:
            await page.click(f"#image-{image_id} [hx-delete]")
            await toast.filter(has_text=DB_DOWN).wait_for()
            assert await page.locator(f"#image-{image_id}").count() == 1
        finally:
            state.sessions.configure(bind=state.engine)
            await dead.dispose()
        await browser.close()
