"""The live page in a real Chromium: drop photos, watch them upload and get captioned, reload.

Needs Debian's /usr/bin/chromium and the `playwright` Python package (no Playwright browser
download). The app runs in a real uvicorn server on a free port with the tiny models. Screenshots go
to test-artifacts/.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from capsearch.config import UploadSettings
from tests.browser_js import ALL_DONE_JS, MAX_IN_PROGRESS_JS, RECEIVED_JS, SOCKET_PROBE_JS
from tests.browserkit import ARTIFACTS, BROWSER, CHROMIUM, CHROMIUM_ARGS, drop_file, noise_jpeg, real_photos

pytestmark = BROWSER
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright


async def test_drop_photos_watch_captions_and_reload(server: str, tmp_path: Path) -> None:
    photos = real_photos()
    oversize = noise_jpeg(tmp_path / "too-big.jpg", 5 * 1024 * 1024 + 1)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            await page.add_init_script(SOCKET_PROBE_JS)
            await page.goto(server + "/")
            await page.wait_for_selector('#connection[data-state="open"]', timeout=15_000)

            # Three through the file picker (the keyboard-usable path), one by real drag-and-drop.
            await page.set_input_files("#file-input", [str(p) for p in photos[:3]])
            await drop_file(page, photos[3].name, photos[3].read_bytes())
            await page.wait_for_function(ALL_DONE_JS, arg=4, timeout=60_000)
            names = await page.locator("#uploads .upload-name").all_inner_texts()
            assert sorted(names) == sorted(p.name for p in photos)
            assert await page.locator("#collection .card[data-stage=done]").count() == 4
            # Cards that came over the socket show their upload date in the page's own zone too.
            await page.wait_for_function(
                "() => document.querySelectorAll('#collection .card time.card-date[data-local]').length == 4",
                timeout=15_000,
            )
            assert 1 <= await page.evaluate(MAX_IN_PROGRESS_JS) <= 3
            # Stage changes are read out by screen readers through the aria-live announcer.
            await page.wait_for_function(
                "() => document.getElementById('announcer').textContent.includes(': Done.')", timeout=5_000
            )
            await page.screenshot(path=str(ARTIFACTS / "browser-uploads.png"), full_page=True)

            # A reload loses nothing: the collection is rendered by the server.
            await page.reload()
            await page.wait_for_selector('#connection[data-state="open"]', timeout=15_000)
            cards = page.locator("#collection .card")
            assert await cards.count() == 4
            assert await page.locator("#collection .card[data-stage=done] .caption").count() == 4
            assert await page.locator("#uploads .upload").count() == 0
            alts = await page.locator("#collection .card img").evaluate_all("els => els.map(e => e.alt)")
            captions = await page.locator("#collection .card .caption").evaluate_all(
                "els => els.map(e => e.textContent)"
            )
            assert [a.strip() for a in alts] == [c.strip() for c in captions]
            loaded = await page.locator("#collection .card img").evaluate_all(
                "els => els.every(e => e.complete && e.naturalWidth > 0)"
            )
            assert loaded, "every thumbnail loads"

            # Too big: refused in the page, before a byte is sent, with a clear message.
            await page.set_input_files("#file-input", str(oversize))
            failed = page.locator('#uploads .upload[data-stage="failed"]')
            await failed.wait_for(timeout=5_000)
            detail = await failed.locator(".error-detail").inner_text()
            assert "too-big.jpg" in detail and "5 MB" in detail
            assert await page.locator("#toasts .toast-error", has_text="too-big.jpg").count() == 1
            assert await page.locator("#collection .card").count() == 4

            await page.screenshot(path=str(ARTIFACTS / "browser-final.png"), full_page=True)
            # Keyboard: skip link, home link, the search box, its microphone, then the file picker, with a
            # visible focus ring.
            await page.locator("body").focus()
            for _ in range(3):
                await page.keyboard.press("Tab")
            assert await page.evaluate("() => document.activeElement.id") == "search-input"
            await page.keyboard.press("Tab")
            assert await page.evaluate("() => document.activeElement.id") == "voice-button"
            await page.keyboard.press("Tab")
            assert await page.evaluate("() => document.activeElement.id") == "file-input"
            await page.locator("#dropzone").screenshot(path=str(ARTIFACTS / "browser-focus.png"))
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(ARTIFACTS / "browser-mobile.png"), full_page=True)
            await page.emulate_media(color_scheme="dark")
            await page.screenshot(path=str(ARTIFACTS / "browser-dark.png"), full_page=True)
        finally:
            await browser.close()

    assert not problems, f"browser console errors: {problems}"


async def test_upload_resumes_after_the_connection_drops(server: str, tmp_path: Path) -> None:
    files = []
    for i in range(4):  # about 2.7 MB each: eleven 256 KiB chunks, more than one window
        img = PILImage.frombytes("RGB", (1500, 1500), random.Random(100 + i).randbytes(1500 * 1500 * 3))
        img.save(tmp_path / f"noise-{i}.jpg", "JPEG", quality=95)
        files.append(str(tmp_path / f"noise-{i}.jpg"))

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.add_init_script(SOCKET_PROBE_JS)
            await page.goto(server + "/")
            await page.wait_for_selector('#connection[data-state="open"]', timeout=15_000)

            # Only 6 binary frames get through; the rest vanish as on a dying network.
            await page.evaluate("() => { window.__binaryBudget = 6; }")
            await page.set_input_files("#file-input", files)
            await page.wait_for_function(RECEIVED_JS, arg=["upload.ack", 6], timeout=15_000)
            # Each file is hashed and looked up before its upload starts: the third may start after
            # the first has used up the frames that get through.
            await page.wait_for_function(RECEIVED_JS, arg=["upload.accepted", 3], timeout=15_000)
            # Three uploads in progress at most; the fourth waits in the page.
            assert await page.locator('#uploads .card-status[data-stage="uploading"]').count() == 3
            assert await page.locator('#uploads .card-status[data-stage="waiting"]').count() == 1
            acked = await page.evaluate(
                "() => Math.max(...window.__wsLog.filter(([d, m]) => d === 'in' && m.type === 'upload.ack')"
                ".map(([, m]) => m.offset))"
            )
            assert acked == 6 * UploadSettings().chunk_size

            await page.evaluate("() => { window.__binaryBudget = Infinity; window.__dropSocket(); }")
            await page.wait_for_function(ALL_DONE_JS, arg=4, timeout=60_000)

            log = await page.evaluate("() => window.__wsLog")
            resumed = [m["id"] for d, m in log if d == "out" and m["type"] == "upload.resume"]
            assert len(resumed) == 3
            after = log[next(i for i, (d, m) in enumerate(log) if m["type"] == "upload.resume") :]
            offsets = [m["offset"] for d, m in after if d == "in" and m["type"] == "upload.accepted"]
            assert acked in offsets, f"the server kept the acknowledged bytes: {offsets}"
            assert not [m for d, m in log if d == "in" and m["type"] in ("upload.rejected", "error")]
        finally:
            await browser.close()
