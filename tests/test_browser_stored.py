"""Files the collection already holds, on the live page in a real Chromium: the page hashes each file in
a Web Worker (hash-wasm) and asks the server (GET /api/images?sha256=) before sending it. Stored and
captioned, or still being captioned: the card says "Already in your collection" and not a byte goes
over the socket. Stored as failed, or when the server cannot say: the file is sent as usual, which
retries a failed caption. The app runs with the fake captioner, held or failing on demand.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from typing import Any

import pytest

from capsearch.config import Settings
from tests.browser_js import RECEIVED_JS, SENT_JS, SOCKET_PROBE_JS
from tests.browserkit import ARTIFACTS, BROWSER, drop_file, launch, open_page, real_photos, running
from tests.fakes import FakeCaptioner

pytestmark = [*BROWSER, pytest.mark.fake_captioner]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

STORED = '#uploads .upload[data-stage="stored"]'


def lookup(url: str) -> bool:
    """The page's question whether a file is stored."""
    return "/api/images?sha256=" in url


async def only_card(page: Any) -> str:
    """The element id of the collection's one card."""
    cards = page.locator("#collection .card")
    assert await cards.count() == 1
    return str(await cards.get_attribute("id"))


async def test_a_file_already_in_the_collection_is_not_sent_again(settings: Settings) -> None:
    photo = real_photos()[0]
    data = photo.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    fake = FakeCaptioner()
    frames: Counter[str] = Counter()
    problems: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    async with running(settings, lambda _s: fake) as api, async_playwright() as p:
        browser = await launch(p)
        try:
            base = str(api.base_url).rstrip("/")
            page = await open_page(browser, base, problems, SOCKET_PROBE_JS, frames=frames)
            # The first time it is sent; its caption is held back, so it is still being captioned.
            fake.gate.clear()
            await page.set_input_files("#file-input", str(photo))
            await page.locator('#collection .card[data-stage="captioning"]').wait_for(timeout=30_000)
            image_id = await only_card(page)
            card = page.locator(f"#{image_id}")
            assert await page.evaluate(SENT_JS, "upload.start") == 1
            sent = Counter(frames)
            assert sent["binary"] >= 1 and sent["bytes"] > len(data)

            # Dropped again while being captioned: already there, nothing sent, the collection's card linked.
            await drop_file(page, photo.name, data)
            again = page.locator(STORED)
            await again.wait_for(timeout=15_000)
            assert "Already in your collection" in (await again.locator(".stage-badge").text_content() or "")
            assert await again.locator(".caption").count() == 0
            assert await again.locator(".upload-link").get_attribute("href") == f"#{image_id}"
            assert not await again.locator(".upload-bar").is_visible()
            assert await again.locator(".upload-cancel").get_attribute("aria-label") == (
                f"Remove {photo.name} from this list"
            )

            # Once captioned, a third drop shows the caption and the collection's thumbnail.
            fake.gate.set()
            await page.locator(f'#{image_id}[data-stage="done"]').wait_for(timeout=30_000)
            caption = (await card.locator(".caption").text_content() or "").strip()
            await drop_file(page, photo.name, data)
            await page.locator(STORED).nth(1).wait_for(timeout=15_000)
            third = page.locator(STORED).first
            assert (await third.locator(".caption").text_content() or "").strip() == caption
            thumb = await third.locator(".upload-thumb img").get_attribute("src")
            assert thumb == f"/media/thumbs/{sha}"
            await page.wait_for_function(
                "(text) => document.getElementById('announcer').textContent.includes(text)",
                arg=f"{photo.name}: Already in your collection. {caption}",
                timeout=5_000,
            )
            await page.screenshot(path=str(ARTIFACTS / "browser-stored.png"), full_page=True)

            # Not one more start, chunk or card: the server never heard of the two drops.
            assert await page.evaluate(SENT_JS, "upload.start") == 1
            assert frames["binary"] == sent["binary"] and frames["bytes"] == sent["bytes"]
            assert (await api.get("/api/images")).json()["total"] == 1
            assert await page.locator("#collection .card").count() == 1
            assert (await page.locator("#collection-count").text_content() or "").strip() == "1 image"

            # The link leads to the collection's card.
            await third.locator(".upload-link").click()
            assert await page.evaluate("() => location.hash") == f"#{image_id}"
            assert await card.evaluate("el => el.matches(':target')")
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"


async def test_a_failed_image_and_an_unanswered_lookup_are_sent(settings: Settings) -> None:
    photo = real_photos()[1]
    data = photo.read_bytes()
    failing = threading.Event()
    failing.set()
    fake = FakeCaptioner(fail=lambda _batch: failing.is_set())
    frames: Counter[str] = Counter()
    problems: list[str] = []
    async with running(settings, lambda _s: fake) as api, async_playwright() as p:
        browser = await launch(p)
        try:
            base = str(api.base_url).rstrip("/")
            page = await open_page(browser, base, problems, SOCKET_PROBE_JS, frames=frames)
            await page.set_input_files("#file-input", str(photo))
            await page.locator('#collection .card[data-stage="failed"]').wait_for(timeout=30_000)
            image_id = await only_card(page)
            sent_once = frames["binary"]

            # Stored as failed: sent again, and the server captions it this time.
            failing.clear()
            await drop_file(page, photo.name, data)
            await page.locator(f'#{image_id}[data-stage="done"]').wait_for(timeout=30_000)
            retried = page.locator("#uploads .upload").first
            await retried.locator('.card-status[data-stage="done"]').wait_for(timeout=15_000)
            assert await page.locator(STORED).count() == 0
            assert await page.evaluate(SENT_JS, "upload.start") == 2
            assert frames["binary"] == 2 * sent_once
            log = await page.evaluate("() => window.__wsLog")
            done = [m for d, m in log if d == "in" and m["type"] == "upload.done"]
            assert [m["duplicate"] for m in done] == [False, True]
            assert {f"image-{m['image_id']}" for m in done} == {image_id}

            # The server cannot say (a network failure): the file goes out, and the server's own
            # duplicate check answers.
            await page.route(lookup, lambda route: route.abort())
            await drop_file(page, photo.name, data)
            await page.wait_for_function(RECEIVED_JS, arg=["upload.done", 3], timeout=30_000)
            assert await page.evaluate(SENT_JS, "upload.start") == 3
            assert await page.locator(STORED).count() == 0
            assert (await api.get("/api/images")).json()["total"] == 1
        finally:
            await browser.close()
    # The aborted lookup is the browser's own line in the console; nothing else may be there.
    assert [m for m in problems if "ERR_FAILED" not in m] == []
