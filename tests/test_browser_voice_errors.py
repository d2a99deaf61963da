"""Voice search on the live page when it cannot work: a microphone the browser refuses, and a silent
room. Each gets a clear message in the voice panel and a toast, and the page can record again at once.
A real Chromium whose fake microphone plays a quiet WAV; the app runs with the fake captioner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capsearch.app import CaptionerFactory
from capsearch.config import Settings
from tests.browser_js import PLAYBACK_JS, SOCKET_PROBE_JS
from tests.browserkit import ARTIFACTS, BROWSER, launch, microphone_args, open_page, quiet_wav, running

pytestmark = [*BROWSER, pytest.mark.fake_captioner]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

HITS = '#search-results .search-panel[data-state="hits"]'
MIC = "#voice-button"
PANEL = "#voice-panel"


async def test_a_denied_microphone_and_silence_get_clear_messages(
    settings: Settings, captioner_factory: CaptionerFactory, tmp_path: Path
) -> None:
    quiet = quiet_wav(tmp_path)
    problems: list[str] = []
    async with running(settings, captioner_factory) as api, async_playwright() as p:
        base = str(api.base_url).rstrip("/")
        # No permission: headless Chromium answers the microphone prompt with a denial.
        browser = await launch(p, *microphone_args(quiet, grant=False))
        try:
            page = await open_page(browser, base, problems, SOCKET_PROBE_JS)
            await page.locator(MIC).click()
            message = page.locator('#voice-message[data-code="permission_denied"]')
            await message.wait_for(timeout=15_000)
            assert "Microphone blocked" in await message.inner_text()
            assert "Allow it for this site" in await message.inner_text()
            assert await page.locator("#toasts .toast-error", has_text="Microphone blocked").count() == 1
            assert await page.locator(MIC).get_attribute("aria-pressed") == "false"
            assert await page.locator(f'{PANEL}[data-state="failed"]').count() == 1
            await page.locator(PANEL).screenshot(path=str(ARTIFACTS / "browser-voice-denied.png"))
        finally:
            await browser.close()

        # A silent room: the server answers no_speech; the page says so and can record again.
        browser = await launch(p, *microphone_args(quiet))
        try:
            page = await open_page(browser, base, problems, SOCKET_PROBE_JS)
            for stop in ("click", "Escape"):
                await page.locator(MIC).click()
                await page.wait_for_selector(f'{PANEL}[data-state="recording"]', timeout=15_000)
                await page.wait_for_function(
                    "() => document.getElementById('voice-time').textContent.startsWith('0:01')",
                    timeout=10_000,
                )
                await (page.locator(MIC).click() if stop == "click" else page.keyboard.press("Escape"))
                message = page.locator('#voice-message[data-code="no_speech"]')
                await message.wait_for(timeout=15_000)
                assert "No speech heard" in await message.inner_text()
                assert await page.locator(HITS).count() == 0
                await page.wait_for_function(PLAYBACK_JS, timeout=10_000)
            await page.locator(PANEL).screenshot(path=str(ARTIFACTS / "browser-voice-no-speech.png"))
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"
