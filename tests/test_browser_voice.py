"""Voice search on the live page, in a real Chromium whose microphone plays an espeak-ng WAV.

The page records through an AudioWorklet at 16 kHz and streams 16-bit PCM frames over its socket; the
transcript appears while "speaking", the hits after the stop, and the recording plays back. CI uses the
tiny random Whisper, whose text is the same nonsense for any audio: the beach photo's caption is set to
exactly that text (read from POST /api/transcriptions first), so it must come first. With
CAPSEARCH_TEST_WHISPER_DIR pointing at a real whisper-base directory the words are checked too. What
goes wrong (a denied microphone, silence) is in test_browser_voice_errors.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from capsearch.app import CaptionerFactory
from capsearch.config import Settings
from tests.browser_js import (
    CLOCK_JS,
    FRAME_PROBE_JS,
    PARTIAL_JS,
    PLAYBACK_JS,
    SOCKET_PROBE_JS,
    UI_SEARCHES_JS,
)
from tests.browser_scenes import photo_set
from tests.browserkit import (
    ARTIFACTS,
    BROWSER,
    launch,
    microphone_args,
    open_page,
    running,
    speech_with_pause,
)

pytestmark = [*BROWSER, pytest.mark.fake_captioner]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

PHRASE = "a dog running on the beach"
REAL_WHISPER = os.environ.get("CAPSEARCH_TEST_WHISPER_DIR")
HITS = '#search-results .search-panel[data-state="hits"]'
MIC = "#voice-button"
PANEL = "#voice-panel"
TRANSCRIPT = "#voice-transcript"
PROBES = (SOCKET_PROBE_JS, FRAME_PROBE_JS)  # every JSON message and binary frame, in order


async def record(
    page: Any,
    heard: str,
    stop: str,
    *,
    seconds: float = 1.5,
    at_least_s: int = 0,
    timeout_ms: int = 30_000,
    shot: str = "",
) -> str:
    """Press the microphone; once a partial transcript matching `heard` that covers `seconds` of audio
    (1.5 s: the phrase) shows while the microphone is still on, and the page's clock says `at_least_s`,
    stop (`stop`: "click" the same button, or "Escape"). Returns that partial; `shot` names a
    screenshot of the page while recording."""
    mic = page.locator(MIC)
    await mic.click()
    await page.wait_for_selector(f'{PANEL}[data-state="recording"]', timeout=15_000)
    assert await mic.get_attribute("aria-pressed") == "true"
    await page.wait_for_function("() => document.getElementById('voice-level').value > 0.2", timeout=10_000)
    await page.wait_for_function(PARTIAL_JS, arg=[heard, seconds], timeout=timeout_ms)
    partial = (await page.locator(TRANSCRIPT).text_content() or "").strip()
    await page.wait_for_function(CLOCK_JS, arg=at_least_s, timeout=timeout_ms)
    assert await mic.get_attribute("aria-pressed") == "true", "the partial came while recording"
    if shot:
        await page.screenshot(path=str(ARTIFACTS / shot))
    await (mic.click() if stop == "click" else page.keyboard.press("Escape"))
    await page.wait_for_selector(f'{TRANSCRIPT}[data-state="final"]', timeout=timeout_ms)
    assert await mic.get_attribute("aria-pressed") == "false"
    return partial


async def assert_hits(page: Any, first_id: int, transcript: str) -> None:
    """The hits are in the text search's results panel, best first, with score bars; the final
    transcript stays visible and is what the search box holds. The panel is the server's: the page
    never searched again for it, and the address is the one a reload lands on."""
    await page.wait_for_selector(f'{PANEL}[data-state="done"]', timeout=30_000)
    # The panel for this transcript (an earlier recording's may still be on the page).
    await page.locator(HITS, has_text=f"Results for “{transcript}”").wait_for(timeout=30_000)
    first = page.locator("#search-results .card-hit").first
    assert await first.get_attribute("id") == f"hit-{first_id}"
    score = float(await first.locator("meter.score-meter").get_attribute("value") or 0)
    assert 0 < score <= 1
    assert await first.locator(".score-value").inner_text() == f"{score:.2f}"
    assert await page.locator(TRANSCRIPT).is_visible()
    assert (await page.locator(TRANSCRIPT).text_content() or "").strip() == transcript
    assert await page.locator("#search-input").input_value() == transcript
    assert f"Results for “{transcript}”" in await page.locator(HITS).inner_text()
    assert await page.evaluate(UI_SEARCHES_JS) == 0, "the page searched again for the voice hits"
    assert await page.evaluate("() => new URL(location.href).searchParams.get('q')") == transcript


async def assert_streamed_and_playable(page: Any) -> None:
    """voice.start, then 16-bit frames of about 50 ms after voice.accepted, then voice.stop; the
    recording plays back from a WAV blob exactly as long as what was sent."""
    log = await page.evaluate("() => window.__wsLog")
    kinds = [
        m["type"] for _, m in log if m["type"] in ("voice.start", "voice.accepted", "frame", "voice.stop")
    ]
    assert kinds[:2] == ["voice.start", "voice.accepted"] and kinds[-1] == "voice.stop", kinds
    frames = [m for d, m in log if d == "bin"]
    assert len(frames) >= 3 and kinds.count("frame") == len(frames)
    payloads = [f["size"] - 3 - f["n"] for f in frames]
    assert {(f["kind"], f["encoding"]) for f in frames} == {(2, 1)}
    assert all(p % 2 == 0 for p in payloads)
    assert all(p == 1600 for p in payloads[:-1]), payloads  # 800 samples: 50 ms at 16 kHz
    duration = await page.wait_for_function(PLAYBACK_JS, timeout=10_000)
    assert abs(await duration.json_value() - sum(payloads) / 2 / 16000) < 0.01


async def test_voice_search_with_a_fake_microphone(
    settings: Settings, captioner_factory: CaptionerFactory, tmp_path: Path
) -> None:
    speech = speech_with_pause(tmp_path, PHRASE)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    async with running(settings, captioner_factory) as api, async_playwright() as p:
        r = await api.post(
            "/api/transcriptions", files={"file": ("speech.wav", speech.read_bytes(), "audio/wav")}
        )
        assert r.status_code == 200, r.text
        heard = r.json()["text"]  # the tiny Whisper says this for any audio
        ids = await photo_set(api, tmp_path, heard)
        browser = await launch(p, *microphone_args(speech))
        try:
            page = await open_page(browser, str(api.base_url).rstrip("/"), problems, *PROBES)
            mic = page.get_by_role("button", name="Search by voice")
            assert await mic.get_attribute("aria-pressed") == "false"
            partial = await record(page, r"\S", stop="click", shot="browser-voice-recording.png")
            # Partials decode on a shortened window under a token cap: the tiny model's nonsense then
            # differs from the final's, but it is text (no half characters).
            assert partial and "\ufffd" not in partial
            await assert_hits(page, ids["beach.jpg"], heard)
            await assert_streamed_and_playable(page)
            assert not await page.locator("#voice-message").is_visible()
            await page.mouse.move(0, 0)
            await page.screenshot(path=str(ARTIFACTS / "browser-voice.png"), full_page=True)
            await page.emulate_media(color_scheme="dark")
            await page.wait_for_timeout(300)  # the search field's colour transition, for the picture only
            await page.screenshot(path=str(ARTIFACTS / "browser-voice-dark.png"), full_page=True)
            await page.emulate_media(color_scheme="light")

            # The same socket takes a second recording at once, stopped with Escape this time.
            await page.evaluate("() => { window.__wsLog.length = 0; }")
            await record(page, r"\S", stop="Escape")
            await assert_hits(page, ids["beach.jpg"], heard)
            await assert_streamed_and_playable(page)
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"


async def test_real_whisper_hears_the_phrase_and_finds_the_beach(
    settings: Settings, captioner_factory: CaptionerFactory, tmp_path: Path
) -> None:
    if not REAL_WHISPER or not (Path(REAL_WHISPER) / "config.json").is_file():
        pytest.skip(
            "CAPSEARCH_TEST_WHISPER_DIR does not point at a whisper-base directory "
            "(build one: ../shared/tools/whisper_base_offline.sh /tmp/whisper-base .venv/bin/python)"
        )
    settings.models.transcriber_id = REAL_WHISPER
    # A long pause after the phrase: a take of 3 s or so holds it once, as a person would say it.
    speech = speech_with_pause(tmp_path, PHRASE, pause_s=3.0)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    heard: list[str] = []
    async with running(settings, captioner_factory) as api, async_playwright() as p:
        ids = await photo_set(api, tmp_path, PHRASE)
        browser = await launch(p, *microphone_args(speech))
        try:
            page = await open_page(browser, str(api.base_url).rstrip("/"), problems, *PROBES)
            # whisper-base hears espeak's "a dog" as "not", and now and then mishears the rest of this
            # synthetic voice ("non-browning", "on the weak") from one take to the next, as the REST
            # tests never see with their single clip: up to three takes, like a person repeating it.
            # On a busy CPU Whisper passes are slow and partials rare, so any partial will do.
            for _ in range(3):
                await record(page, r"\S", stop="Escape", seconds=0, at_least_s=3, timeout_ms=90_000)
                heard.append((await page.locator(TRANSCRIPT).text_content() or "").strip())
                if "running on the beach" in re.sub(r"[^a-z ]", "", heard[-1].lower()):
                    break
            else:
                pytest.fail(f"whisper-base never heard the phrase: {heard}")
            await assert_hits(page, ids["beach.jpg"], heard[-1])
            await assert_streamed_and_playable(page)
            await page.mouse.move(0, 0)
            await page.screenshot(path=str(ARTIFACTS / "browser-voice-whisper.png"), full_page=True)
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"
