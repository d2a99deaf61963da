"""The results' sort and upload-date controls on the live page, in a real Chromium: the order changes,
the dates narrow, the address bar keeps both and a reload or coming back restores them, a bad range
says why, Clear filters undoes them, and a voice search carries them too (a fake microphone, the tiny
Whisper: both images are captioned with what it hears)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import update

from capsearch.config import Settings
from capsearch.db.models import Image
from capsearch.db.session import create_engine
from tests.apikit import files
from tests.browser_js import SOCKET_PROBE_JS
from tests.browserkit import (
    ARTIFACTS,
    BROWSER,
    OPEN,
    launch,
    microphone_args,
    open_page,
    running,
    speech_with_pause,
)
from tests.conftest import photo_bytes
from tests.search_helpers import DOGS, OTHERS, TIMES, ScriptedCaptioner, upload_captioned
from tests.test_browser_voice import record
from tests.test_voice_filters import NEW, OLD

pytestmark = BROWSER
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

HITS = '#search-results .search-panel[data-state="hits"]'
ZONE = "Europe/Berlin"  # the browser's: its days start an hour before UTC's in January


async def set_uploaded(settings: Settings, times: dict[int, datetime]) -> None:
    # The server runs in its own thread and loop: the test moves the rows over its own connection.
    engine = create_engine(settings.database.url)
    async with engine.begin() as conn:
        for image_id, when in times.items():
            await conn.execute(update(Image).where(Image.id == image_id).values(created_at=when))
    await engine.dispose()


async def hit_ids(page: Any) -> list[int]:
    ids = await page.eval_on_selector_all("#search-results .card-hit", "els => els.map(e => e.id)")
    return [int(i.removeprefix("hit-")) for i in ids]


def address(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


# Every date under a selector is in the page's own zone and language (local-dates.js has run on it).
LOCALIZED_JS = (
    "sel => { const t = [...document.querySelectorAll(sel)];"
    " return t.length > 0 && t.every(e => e.hasAttribute('data-local')); }"
)


async def settled(page: Any, ids: list[int]) -> None:
    """Wait until the results are exactly `ids`, in this order."""
    await page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#search-results .card-hit')]"
        ".map(e => +e.id.slice(4))) === JSON.stringify(ids)",
        arg=ids,
        timeout=15_000,
    )


async def test_sort_and_dates_beside_the_results(settings: Settings) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    async with running(settings, lambda _s: ScriptedCaptioner()) as api, async_playwright() as p:
        ids = await upload_captioned(api, DOGS + OTHERS, seed=700)
        await set_uploaded(settings, {ids[c]: t for c, t in TIMES.items()})
        base = str(api.base_url).rstrip("/")
        browser = await launch(p)
        try:
            context = await browser.new_context(
                timezone_id=ZONE, locale="en-US", viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.goto(base + "/")
            await page.wait_for_selector(OPEN, timeout=15_000)
            filters = page.get_by_role("form", name="Sort and filter the results")
            assert not await filters.is_visible()  # nothing to sort before a search

            await page.locator("#search-input").fill("dog")
            await page.wait_for_selector(HITS, timeout=15_000)
            assert await filters.is_visible()
            best = await hit_ids(page)
            assert sorted(best) == sorted(ids[c] for c in DOGS)
            assert "4 matches, best first" in await page.locator(f"{HITS} .count").inner_text()
            assert not await page.get_by_role("button", name="Clear filters").is_visible()

            # Newest first: the same four, by upload time.
            await page.get_by_label("Sort by", exact=True).select_option("newest")
            await settled(page, [ids[DOGS[3]], ids[DOGS[2]], ids[DOGS[1]], ids[DOGS[0]]])
            assert "4 matches, newest first" in await page.locator(f"{HITS} .count").inner_text()
            # Each card says when it came, in the reader's zone: 23:59 UTC on the 10th is the 11th here.
            # local-dates.js rewrites a swap's cards when htmx has settled it, a moment after the swap.
            await page.wait_for_function(LOCALIZED_JS, arg=f"{HITS} time.card-date", timeout=15_000)
            dates = page.locator(f"{HITS} time.card-date")
            shown = ["Jan 20, 2026", "Jan 11, 2026", "Jan 10, 2026", "Jan 5, 2026"]
            assert await dates.all_inner_texts() == shown
            title = await dates.nth(1).get_attribute("title") or ""
            assert title.startswith("Uploaded Jan 11, 2026, 12:59")
            await page.wait_for_function(LOCALIZED_JS, arg="#collection time.card-date", timeout=15_000)
            assert await page.locator("#collection time.card-date").count() == len(DOGS + OTHERS)
            assert address(page) == {"q": ["dog"], "sort": ["newest"]}

            # 6 to 15 January in Berlin: the dogs of the 10th (one is the 11th's first hour there).
            # Each change searches at once; waiting between them keeps the second from cancelling the
            # first (which htmx would log as an error).
            await page.get_by_label("From", exact=True).fill("2026-01-06")
            await settled(page, [ids[DOGS[3]], ids[DOGS[2]], ids[DOGS[1]]])
            await page.get_by_label("To", exact=True).fill("2026-01-15")
            await settled(page, [ids[DOGS[2]], ids[DOGS[1]]])
            count = await page.locator(f"{HITS} .count").inner_text()
            assert "2 matches, newest first" in count and "filtered by upload date" in count
            want = {
                "q": ["dog"],
                "sort": ["newest"],
                "from": ["2026-01-06"],
                "to": ["2026-01-15"],
                "tz": [ZONE],
            }
            assert address(page) == want
            assert await page.get_by_role("button", name="Clear filters").is_visible()
            await page.screenshot(path=str(ARTIFACTS / "browser-search-filters.png"), full_page=True)
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(ARTIFACTS / "browser-search-filters-mobile.png"))
            await page.set_viewport_size({"width": 1280, "height": 900})

            # A reload lands on the same search, controls and all; so does coming back to the page.
            await page.reload()
            await page.wait_for_selector(HITS, timeout=15_000)
            assert await hit_ids(page) == [ids[DOGS[2]], ids[DOGS[1]]]
            assert await page.get_by_label("Sort by", exact=True).input_value() == "newest"
            assert await page.get_by_label("From", exact=True).input_value() == "2026-01-06"
            assert await page.get_by_label("To", exact=True).input_value() == "2026-01-15"
            await page.goto("about:blank")
            await page.go_back()
            await page.wait_for_selector(HITS, timeout=15_000)
            assert await hit_ids(page) == [ids[DOGS[2]], ids[DOGS[1]]] and address(page) == want
            assert await page.get_by_label("To", exact=True).input_value() == "2026-01-15"
            await page.go_forward()
            await page.go_back()
            await page.wait_for_selector(HITS, timeout=15_000)
            assert await page.get_by_label("From", exact=True).input_value() == "2026-01-06"

            # A range that ends before it starts is refused, in the results, where it applies.
            await page.get_by_label("From", exact=True).fill("2026-01-20")
            refused = page.locator('#search-results [data-state="error"]')
            await refused.wait_for(timeout=15_000)
            assert await refused.get_attribute("data-code") == "bad_date_range"
            assert (
                "the “From” date must not be after the “To” date"
                in await refused.get_by_role("alert").inner_text()
            )
            await refused.screenshot(path=str(ARTIFACTS / "browser-search-filters-refused.png"))

            # Dates when nothing was uploaded: said so, with a way out.
            await page.get_by_label("From", exact=True).fill("2024-01-01")
            await settled(page, [ids[DOGS[2]], ids[DOGS[1]], ids[DOGS[0]]])
            await page.get_by_label("To", exact=True).fill("2024-12-31")
            empty = page.locator('#search-results [data-reason="empty-range"]')
            await empty.wait_for(timeout=15_000)
            assert "No images were uploaded in the chosen dates" in await empty.inner_text()
            await empty.get_by_role("button", name="Clear filters").click()
            await page.wait_for_selector(HITS, timeout=15_000)
            assert sorted(await hit_ids(page)) == sorted(best)
            assert "best first" in await page.locator(f"{HITS} .count").inner_text()
            assert await page.get_by_label("Sort by", exact=True).input_value() == "relevance"
            assert await page.get_by_label("From", exact=True).input_value() == ""
            assert address(page) == {"q": ["dog"]}
            assert await page.evaluate("() => document.activeElement.id") == "filter-sort"
        finally:
            await browser.close()
    # Chromium logs every 4xx answer; the refused range above was meant to be a 422.
    problems = [m for m in problems if "status of 422" not in m]
    assert not problems, f"browser console errors: {problems}"


async def test_a_voice_search_carries_the_filters(settings: Settings, tmp_path: Path) -> None:
    speech = speech_with_pause(tmp_path, "a dog running on the beach")
    problems: list[str] = []
    async with running(settings, lambda _s: ScriptedCaptioner()) as api, async_playwright() as p:
        r = await api.post("/api/transcriptions", files={"file": ("s.wav", speech.read_bytes(), "audio/wav")})
        heard = r.json()["text"]  # the tiny Whisper's words, for any audio
        old, new = await captioned_pair(api, heard)
        await set_uploaded(settings, {old: OLD, new: NEW})
        browser = await launch(p, *microphone_args(speech))
        try:
            base = str(api.base_url).rstrip("/")
            page = await open_page(browser, base, problems, SOCKET_PROBE_JS)
            # Set before speaking: here from the address, as a reload of a filtered search sets them.
            await page.goto(f"{base}/?q=x&sort=newest&from=2026-01-01&to=2026-01-31")
            await page.wait_for_selector(OPEN, timeout=15_000)
            await record(page, r"\S", stop="Escape")
            await page.wait_for_selector('#voice-panel[data-state="done"]', timeout=30_000)
            await page.locator(HITS, has_text=f"Results for “{heard}”").wait_for(timeout=30_000)
            assert await hit_ids(page) == [new]  # the old one was uploaded in 2025
            count = await page.locator(f"{HITS} .count").inner_text()
            assert "newest first" in count and "filtered by upload date" in count
            sent = [m for d, m in await page.evaluate("() => window.__wsLog") if m["type"] == "voice.start"]
            assert len(sent) == 1
            assert (sent[0]["sort"], sent[0]["uploaded_from"], sent[0]["uploaded_to"]) == (
                "newest",
                "2026-01-01",
                "2026-01-31",
            )
            assert sent[0]["tz"]  # the browser's zone
            query = address(page)
            assert (query["q"], query["sort"], query["from"], query["to"]) == (
                [heard],
                ["newest"],
                ["2026-01-01"],
                ["2026-01-31"],
            )
        finally:
            await browser.close()
    assert not [m for m in problems if "status of 422" not in m], problems


async def captioned_pair(api: httpx.AsyncClient, caption: str) -> tuple[int, int]:
    r = await api.post("/api/images?wait=true", files=files(photo_bytes(60), photo_bytes(61)))
    new, old = sorted(i["image"]["id"] for i in r.json()["items"])  # files may be taken in any order
    for image_id in (new, old):
        assert (await api.patch(f"/api/images/{image_id}", json={"caption": caption})).status_code == 200
    return old, new
