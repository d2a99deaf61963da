"""The idle gallery in a real Chromium (see tests/test_browser.py): leave the page alone and example
photos appear as skeleton cards, then fill in with captions; come back and the pending ones stop.

The idle delay is 1.5 s here. The captioner knows each bundled example (web/static/examples/) and the
drawn beach scene by its size (and colour), and it has a gate, so a test can hold examples pending.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage
from PIL import ImageChops

from capsearch.app import CaptionerFactory
from capsearch.config import Settings
from capsearch.state import AppState
from capsearch.templating import web_dir
from tests.browser_js import SOCKET_PROBE_JS
from tests.browser_scenes import beach
from tests.browserkit import ARTIFACTS, BROWSER, CHROMIUM, CHROMIUM_ARGS

pytestmark = BROWSER
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

IDLE_SECONDS = 1.5
OPEN = '#connection[data-state="open"]'
CARDS = "#gallery .card-example"
EXAMPLE_CAPTIONS = {  # bundled file → what the "model" says about it
    "astronaut.jpg": "an astronaut in a white suit in front of a flag",
    "cameraman.jpg": "a man with a camera on a tripod in a field",
    "cat.jpg": "a tabby cat looking up",
    "coffee.jpg": "a cup of coffee on a saucer",
    "hubble-deep-field.jpg": "a dark sky full of distant galaxies",
    "rocket.jpg": "a rocket lifting off from its launch pad",
}
BEACH_CAPTION = "a brown dog running on the sand by the sea"
SENT = "(t) => window.__wsLog.filter(([d, m]) => d === 'out' && m.type === t).length"


def fingerprint(im: PILImage.Image) -> tuple[int, int, bool]:
    """Size and whether it is grey: enough to tell the examples apart (two of them are 512 × 512)."""
    r, g, _ = im.convert("RGB").split()
    return (*im.size, ImageChops.difference(r, g).getbbox() is None)


class ExampleCaptioner:
    """`Model[PIL.Image, str]` that knows the pictures of this test; `gate` holds it like FakeCaptioner."""

    name = "captioner"
    model_id = "example-captioner"

    def __init__(self, known: dict[tuple[int, int, bool], str]) -> None:
        self.known = known
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def load(self) -> None:
        pass

    def predict(self, batch: list[PILImage.Image]) -> list[str]:
        self.entered.set()
        if not self.gate.wait(30):
            raise TimeoutError("test gate never opened")
        self.batches.append(len(batch))
        return [self.known.get(fingerprint(im), "a photo") for im in batch]

    def close(self) -> None:
        pass


@pytest.fixture
def beach_photo(tmp_path: Path) -> Path:
    return beach(tmp_path / "beach.jpg", (640, 420), dogs=1)


@pytest.fixture
def captioner(beach_photo: Path) -> ExampleCaptioner:
    known = {}
    for path in [beach_photo, *(web_dir() / "static" / "examples" / n for n in EXAMPLE_CAPTIONS)]:
        with PILImage.open(path) as im:
            known[fingerprint(im)] = EXAMPLE_CAPTIONS.get(path.name, BEACH_CAPTION)
    assert len(known) == len(EXAMPLE_CAPTIONS) + 1, "every picture must be told apart"
    return ExampleCaptioner(known)


@pytest.fixture
def captioner_factory(captioner: ExampleCaptioner) -> CaptionerFactory:
    return lambda _settings: captioner


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.gallery.idle_seconds = IDLE_SECONDS
    settings.gallery.count = 4
    settings.caption_batch.max_batch_size = 1  # one example at a time, so a cancel finds some queued
    return settings


@pytest.fixture
async def browser_page(server: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A 1280 × 900 page on the app with the socket probe, and the console errors it logs."""
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.add_init_script(SOCKET_PROBE_JS)
            yield page, problems
        finally:
            await browser.close()


async def until(check: Any, what: str, within_s: float = 10.0) -> None:
    for _ in range(int(within_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_an_idle_page_shows_captioned_examples(
    server: str,
    app: FastAPI,
    browser_page: tuple[Any, list[str]],
    captioner: ExampleCaptioner,
    beach_photo: Path,
) -> None:
    page, problems = browser_page
    async with httpx.AsyncClient(base_url=server, timeout=60) as api:
        data = await asyncio.to_thread(beach_photo.read_bytes)
        files = [("files", (beach_photo.name, data, "image/jpeg"))]
        assert (await api.post("/api/images?wait=true", files=files)).status_code == 201
    captioner.gate.clear()  # the skeletons stay until the test has seen them

    await page.goto(server + "/")
    await page.wait_for_selector(OPEN, timeout=15_000)
    assert await page.locator("#gallery").get_attribute("data-idle-seconds") == str(IDLE_SECONDS)
    assert await page.locator("#gallery").is_hidden()
    started = asyncio.get_running_loop().time()
    # Nobody touches the page: after the idle delay it asks once, and skeleton cards appear at once.
    await page.wait_for_selector(f'{CARDS}[data-stage="captioning"] .caption-skeleton', timeout=10_000)
    assert asyncio.get_running_loop().time() - started >= IDLE_SECONDS - 0.5
    assert await page.locator(f'{CARDS}[data-stage="captioning"]').count() == 4
    assert await page.evaluate(SENT, "gallery.request") == 1
    await page.screenshot(path=str(ARTIFACTS / "browser-gallery-skeleton.png"))

    captioner.gate.set()
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery .card-example')].map(c => c.dataset.stage).join()"
        " === 'done,done,done,done'",
        timeout=15_000,
    )
    captions = await page.locator(f"{CARDS} .caption").all_inner_texts()
    expected = {*EXAMPLE_CAPTIONS.values(), BEACH_CAPTION}
    assert len(captions) == 4 and all(c.strip().lower() in expected for c in captions), captions
    assert BEACH_CAPTION in [c.strip().lower() for c in captions], "one example comes from the collection"
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery .card-example img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=10_000,
    )
    alts = await page.locator(f"{CARDS} img").evaluate_all("els => els.map(e => e.alt)")
    assert [a.strip().lower() for a in alts] == [c.strip().lower() for c in captions]
    assert "example photo" in (await page.locator("#announcer").inner_text()).lower()
    # Shown, not stored: the collection still holds the one uploaded photo.
    assert await page.locator("#collection .card").count() == 1
    assert (await page.locator("#collection-count").inner_text()).strip() == "1 image"
    state: AppState = app.state.capsearch
    async with httpx.AsyncClient(base_url=server) as api:
        assert (await api.get("/api/images")).json()["total"] == 1
    # Once per idle period: staying idle does not ask again.
    await asyncio.sleep(IDLE_SECONDS * 2)
    assert await page.evaluate(SENT, "gallery.request") == 1
    assert state.caption_batcher.depth == 0

    await page.mouse.move(640, 80)  # park the pointer on the top bar, out of the cards' hover
    await page.screenshot(path=str(ARTIFACTS / "browser-gallery.png"), full_page=True)
    await page.emulate_media(color_scheme="dark")
    await asyncio.sleep(0.4)  # let the colour transitions finish
    await page.screenshot(path=str(ARTIFACTS / "browser-gallery-dark.png"), full_page=True)
    assert not problems, f"browser console errors: {problems}"


async def test_activity_stops_pending_examples_and_a_later_idle_brings_new_ones(
    server: str,
    app: FastAPI,
    browser_page: tuple[Any, list[str]],
    captioner: ExampleCaptioner,
) -> None:
    page, problems = browser_page
    batcher = app.state.capsearch.caption_batcher
    captioner.gate.clear()
    await page.goto(server + "/")
    await page.wait_for_selector(OPEN, timeout=15_000)
    await page.wait_for_selector(f'{CARDS}[data-stage="captioning"]', timeout=10_000)
    first = await page.locator("#gallery").get_attribute("data-gallery-id")
    assert await asyncio.to_thread(captioner.entered.wait, 10)  # one example is on the (held) model
    await until(lambda: batcher.depth == 3, "three examples queued behind it")

    # The skeleton shimmers, unless the person asked for less motion.
    shimmer = "() => getComputedStyle(document.querySelector('.caption-skeleton span')).animationName"
    assert await page.evaluate(shimmer) == "shimmer"
    await page.emulate_media(reduced_motion="reduce")
    assert await page.evaluate(shimmer) == "none"
    await page.emulate_media(reduced_motion="no-preference")

    # The person is back: one cancel, the queued examples leave the model's queue, the cards say so.
    await page.mouse.move(300, 200)
    await page.mouse.move(340, 230)
    await page.wait_for_function(f"() => ({SENT})('gallery.cancel') === 1", timeout=5_000)
    await until(lambda: batcher.depth == 0, "the cancelled examples to leave the queue")
    stopped = page.locator(f'{CARDS}[data-stage="stopped"]')
    assert await stopped.count() == 4
    assert set(await stopped.locator(".stage-badge").all_inner_texts()) == {"Stopped — you're back"}
    assert await page.locator(f"{CARDS} .caption-skeleton").count() == 0

    # The example that was on the model finishes, but its caption is no longer wanted.
    captioner.gate.set()
    await until(lambda: len(captioner.batches) >= 1, "the held example to finish")
    for i in range(6):  # still active: no new idle period starts meanwhile
        await page.mouse.move(360 + i * 10, 240)
        await asyncio.sleep(0.2)
    assert await page.locator("#gallery").get_attribute("data-gallery-id") == first
    assert await page.locator(f'{CARDS}[data-stage="done"]').count() == 0
    assert await stopped.count() == 4
    assert len(captioner.batches) == 1
    await page.mouse.move(640, 80)
    await page.screenshot(path=str(ARTIFACTS / "browser-gallery-stopped.png"))

    # Left alone again: a fresh gallery replaces the old one and is captioned in full.
    await page.wait_for_function(
        "(first) => { const g = document.getElementById('gallery');"
        " return g.dataset.galleryId !== first &&"
        " g.querySelectorAll('.card-example[data-stage=\"done\"]').length === 4; }",
        arg=first,
        timeout=15_000,
    )
    assert await page.evaluate(SENT, "gallery.request") == 2
    assert await page.evaluate(SENT, "gallery.cancel") == 1
    assert await page.locator(f'{CARDS}[data-stage="stopped"]').count() == 0
    assert not problems, f"browser console errors: {problems}"
