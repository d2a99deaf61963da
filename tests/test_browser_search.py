"""Search, caption edits and deletes on the live page, in a real Chromium (see tests/test_browser.py).

Photos: the scikit-image samples and two drawn beach scenes, captioned by a model that knows each
picture; some captions are then set through the API (PATCH), so the right answers are known. Two
tabs are open, so every change is also checked on a page that did not make it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from capsearch.app import CaptionerFactory
from tests.browser_scenes import PhotoCaptioner, beach
from tests.browserkit import ARTIFACTS, BROWSER, CHROMIUM, CHROMIUM_ARGS, real_photos

pytestmark = BROWSER
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

MODEL_CAPTIONS = {
    "beach.jpg": "a brown dog on the sand by the sea",
    "chelsea.png": "a tabby cat looking up",
    "coffee.png": "a cup of coffee on a saucer",
    "rocket.jpg": "a space rocket standing on a launch pad",
    "astronaut.png": "a woman in a white suit in front of a flag",
    "two-dogs.jpg": "two dogs playing on a sandy beach",  # arrives while a search is open
}
EDITS = {  # set through PATCH, as a person would
    "beach.jpg": "a dog running on the beach",
    "rocket.jpg": "a red rocket on the launch pad",
    "astronaut.png": "an astronaut in a white space suit",
}
OPEN = '#connection[data-state="open"]'
HITS = '#search-results .search-panel[data-state="hits"]'


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    photos = {p.name: p for p in real_photos()}
    photos["beach.jpg"] = beach(tmp_path / "beach.jpg", (640, 420), dogs=1)
    photos["two-dogs.jpg"] = beach(tmp_path / "two-dogs.jpg", (630, 420), dogs=2)
    return photos


@pytest.fixture
def captioner_factory(scene: dict[str, Path]) -> CaptionerFactory:
    by_size = {}
    for name, path in scene.items():
        with PILImage.open(path) as im:
            by_size[im.size] = MODEL_CAPTIONS.get(name, "a photo")
    return lambda _settings: PhotoCaptioner(by_size)


@pytest.fixture
async def api(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=60) as client:
        yield client


async def upload(api: httpx.AsyncClient, *paths: Path) -> dict[str, int]:
    """file name → image id, once captioned and searchable (wait=true)."""
    files = [
        ("files", (p.name, p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg"))
        for p in paths
    ]
    r = await api.post("/api/images?wait=true", files=files)
    assert r.status_code == 201, r.text
    return {i["filename"]: i["image"]["id"] for i in r.json()["items"]}


async def caption_of(page: Any, selector: str) -> str:
    # textContent: inner_text would include the stylesheet's capital first letter.
    return str(await page.locator(f"{selector} .caption").text_content()).strip()


async def test_search_edit_and_delete(server: str, api: httpx.AsyncClient, scene: dict[str, Path]) -> None:
    ids = await upload(api, *(p for n, p in scene.items() if n != "two-dogs.jpg"))
    for name, text in EDITS.items():
        assert (await api.patch(f"/api/images/{ids[name]}", json={"caption": text})).status_code == 200
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    searches: list[str] = []

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page, other = await context.new_page(), await context.new_page()
            for tab in (page, other):
                tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                tab.on("pageerror", lambda e: problems.append(str(e)))
                await tab.goto(server + "/")
                await tab.wait_for_selector(OPEN, timeout=15_000)
            page.on("request", lambda r: searches.append(r.url) if "/ui/search" in r.url else None)

            # "/" jumps to the search box; typing searches once the typing pauses, not per letter.
            await page.locator("body").focus()
            await page.keyboard.press("/")
            assert await page.evaluate("() => document.activeElement.id") == "search-input"
            await page.keyboard.type("dog on a beach", delay=40)
            await page.wait_for_selector(HITS, timeout=15_000)
            assert 1 <= len(searches) <= 2, searches
            first = page.locator("#search-results .card-hit").first
            assert await first.get_attribute("id") == f"hit-{ids['beach.jpg']}"
            assert await caption_of(page, f"#hit-{ids['beach.jpg']}") == "a dog running on the beach"
            meter = first.locator("meter.score-meter")
            score = float(await meter.get_attribute("value") or 0)
            assert 0.35 <= score <= 1
            assert await first.locator(".score-value").inner_text() == f"{score:.2f}"
            # The label says what the score means, as the API labels the same hit.
            answer = (await api.get("/api/search", params={"q": "dog on a beach"})).json()
            label = answer["hits"][0]["label"]
            chip = first.locator(".match")
            assert await chip.get_attribute("data-label") == label
            assert await chip.inner_text() == ("Strong match" if label == "strong" else "Possible match")
            assert await chip.is_visible()
            bar = await meter.bounding_box()
            assert bar is not None and bar["width"] > 80 and bar["height"] >= 6, bar
            assert not await page.locator("#dropzone").is_visible()
            assert not await page.locator("#collection").is_visible()
            assert page.url.endswith("/?q=dog+on+a+beach")

            # A new image lands while the search is open: the results follow.
            two = (await upload(api, scene["two-dogs.jpg"]))["two-dogs.jpg"]
            await page.wait_for_selector(f"#search-results #hit-{two}", timeout=15_000)
            assert await first.get_attribute("id") == f"hit-{ids['beach.jpg']}"
            await page.evaluate("() => document.getElementById('search-input').blur()")
            await page.wait_for_function("() => !document.querySelector('#search-form.htmx-request')")
            await page.screenshot(path=str(ARTIFACTS / "browser-search.png"), full_page=True)
            await page.emulate_media(color_scheme="dark")
            await page.screenshot(path=str(ARTIFACTS / "browser-search-dark.png"), full_page=True)
            await page.emulate_media(color_scheme="light")

            box = page.locator("#search-input")
            await box.fill("quantum chromodynamics lecture")
            empty = page.locator('#search-results [data-state="no-match"]')
            await empty.wait_for(timeout=15_000)
            assert "No match for “quantum chromodynamics lecture”" in await empty.inner_text()
            await empty.screenshot(path=str(ARTIFACTS / "browser-search-no-match.png"))
            await box.fill("x" * 201)
            refused = page.locator('#search-results [data-state="error"]')
            await refused.wait_for(timeout=15_000)
            assert "at most 200" in await refused.inner_text()
            await box.fill("")
            await page.locator("#collection").wait_for(state="visible", timeout=15_000)
            assert await page.locator("#search-results .search-panel").count() == 0

            # Edit a caption on its card: a refusal is shown in place; Escape cancels; Save saves.
            coffee = ids["coffee.png"]
            card = page.locator(f"#image-{coffee}")
            before = await caption_of(page, f"#image-{coffee}")
            await card.locator('[data-action="edit-caption"]').click()
            field = card.locator(".caption-input")
            assert await field.evaluate("el => el === document.activeElement")
            await field.fill("   ")
            await field.press("Enter")
            await card.locator(".field-error").wait_for(timeout=15_000)
            assert "Write a caption" in await card.locator(".field-error").inner_text()
            await card.screenshot(path=str(ARTIFACTS / "browser-search-refused-caption.png"))
            await page.keyboard.press("Escape")
            assert not await card.locator(".caption-form").is_visible()
            assert await caption_of(page, f"#image-{coffee}") == before
            await card.locator('[data-action="edit-caption"]').click()
            await card.locator(".caption-input").fill("a mug of espresso on a wooden table")
            await card.get_by_role("button", name="Save").click()
            await page.wait_for_function(
                "([id, text]) => document.querySelector(`#image-${id} .caption`)?.textContent === text",
                arg=[coffee, "a mug of espresso on a wooden table"],
                timeout=15_000,
            )
            model = (await api.get(f"/api/images/{coffee}")).json()["model_caption"]
            assert f"model: {model}" in await card.locator(".caption-origin").inner_text()
            await other.wait_for_function(  # the other tab, through the live feed
                "([id, text]) => document.querySelector(`#image-${id} .caption`)?.textContent === text",
                arg=[coffee, "a mug of espresso on a wooden table"],
                timeout=15_000,
            )
            await card.screenshot(path=str(ARTIFACTS / "browser-search-edited-card.png"))

            # Delete needs a yes: a "no" keeps the card, a "yes" removes it from every tab.
            cat = ids["chelsea.png"]
            deletes: list[str] = []
            page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
            prompts: list[str] = []

            async def answer(dialog: Any, accept: bool) -> None:
                prompts.append(dialog.message)
                await (dialog.accept() if accept else dialog.dismiss())

            page.once("dialog", lambda d: answer(d, False))
            await page.locator(f"#image-{cat} [hx-delete]").click()
            assert prompts and prompts[-1].startswith("Delete “") and not deletes
            page.once("dialog", lambda d: answer(d, True))
            await page.locator(f"#image-{cat} [hx-delete]").click()
            for tab in (page, other):
                await tab.locator(f"#image-{cat}").wait_for(state="detached", timeout=15_000)
                await tab.wait_for_function(
                    "() => document.getElementById('collection-count').textContent.trim() === '5 images'",
                    timeout=15_000,
                )
            assert (await api.get(f"/api/images/{cat}")).status_code == 404

            # Delete straight from the search results: the hit goes, and the collection card with it.
            rocket = ids["rocket.jpg"]
            await box.fill("red rocket")
            await page.wait_for_selector(f"#hit-{rocket}", timeout=15_000)
            page.once("dialog", lambda d: answer(d, True))
            await page.locator(f"#hit-{rocket} [hx-delete]").click()
            await page.locator(f"#hit-{rocket}").wait_for(state="detached", timeout=15_000)
            await other.locator(f"#image-{rocket}").wait_for(state="detached", timeout=15_000)
            assert await page.locator(f"#image-{rocket}").count() == 0
            await page.locator('#search-results [data-action="clear-search"]').click()
            await page.locator("#collection").wait_for(state="visible", timeout=15_000)
            assert await page.evaluate("() => document.activeElement.id") == "search-input"
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(ARTIFACTS / "browser-search-mobile.png"), full_page=True)
            assert re.fullmatch(r"4 images", (await page.locator("#collection-count").inner_text()).strip())
        finally:
            await browser.close()

    # Chromium logs every 4xx answer; the refused query and caption above were meant to be 422s.
    problems = [m for m in problems if "status of 422" not in m]
    assert not problems, f"browser console errors: {problems}"
