"""A live voice search nobody stops: in Chromium with a fake microphone, words appear while speaking
and settle, hits follow the settled words, the server ends the recording when the speaker goes quiet
(Silero VAD), and the final hits put the right photo first.

CI runs the tiny random Whisper (its words are the same nonsense for any audio; the beach photo is
captioned with exactly that text). With CAPSEARCH_TEST_WHISPER_DIR pointing at a real whisper-base
directory, the second test checks the words too, with Festival's voice when it is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capsearch.app import CaptionerFactory
from capsearch.config import Settings
from tests.browser_js import FRAME_PROBE_JS, SOCKET_PROBE_JS
from tests.browser_scenes import photo_set
from tests.browserkit import ARTIFACTS, BROWSER, launch, microphone_args, open_page, running
from tests.voicekit import make_speech_wav, read_wav, silence, wav_bytes

pytestmark = [*BROWSER, pytest.mark.fake_captioner]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

PHRASE = "a dog running on the beach"
REAL_WHISPER = os.environ.get("CAPSEARCH_TEST_WHISPER_DIR")
MIC = "#voice-button"
PANEL = "#voice-panel"
TRANSCRIPT = "#voice-transcript"
# The page's socket log: what it sent and what it got, in order (tests/browser_js.py).
SENT_STOP_JS = "() => window.__wsLog.some(([d, m]) => d === 'out' && m.type === 'voice.stop')"
STOPPED_JS = "() => window.__wsLog.filter(([d, m]) => m.type === 'voice.stopped').map(([d, m]) => m.reason)"
LIVE_HITS_JS = "() => window.__wsLog.filter(([d, m]) => m.type === 'voice.hits' && m.partial).length"
PROBES = (SOCKET_PROBE_JS, FRAME_PROBE_JS)  # every JSON message and binary frame, in order
SETTLED_JS = "() => (document.getElementById('voice-settled').textContent || '').trim().length > 0"


def speech_then_quiet(directory: Path, phrase: str, *, repeats: int = 2, quiet_s: float = 4.0) -> Path:
    """The phrase said `repeats` times with short pauses (long enough for words to settle over several
    partials), then `quiet_s` of a quiet room: the fake microphone loops the file, and the recording
    must end by itself in that quiet, before the phrase comes round again."""
    spoken = read_wav(make_speech_wav(directory, phrase).read_bytes())
    parts: list[np.ndarray] = [silence(0.3)]
    for _ in range(repeats):
        parts += [spoken, silence(0.3)]
    parts.append(silence(quiet_s))
    out = directory / "speech-then-quiet.wav"
    out.write_bytes(wav_bytes(np.concatenate(parts)))
    return out


def auto_stop(settings: Settings) -> None:
    settings.voice.vad = True  # Silero decides when the speaker is done
    settings.voice.end_silence_ms = 800
    settings.voice.live_search_interval_ms = 0


async def speak_until_the_server_stops(page: Any, timeout_ms: int) -> None:
    """Press the microphone and never stop: settled words and live hits come while speaking, then the
    server's voice.stopped ends the recording and the final hits arrive."""
    mic = page.locator(MIC)
    await mic.click()
    await page.wait_for_selector(f'{PANEL}[data-state="recording"]', timeout=15_000)
    await page.wait_for_function(SETTLED_JS, timeout=timeout_ms)
    assert await mic.get_attribute("aria-pressed") == "true", "words settled while recording"
    await page.wait_for_function(f"() => ({LIVE_HITS_JS})() > 0", timeout=timeout_ms)
    await page.wait_for_selector(f'{TRANSCRIPT}[data-state="final"]', timeout=timeout_ms)
    await page.wait_for_selector(f'{PANEL}[data-state="done"]', timeout=timeout_ms)
    assert await mic.get_attribute("aria-pressed") == "false"
    assert await page.evaluate(STOPPED_JS) == ["silence"]
    assert not await page.evaluate(SENT_STOP_JS), "the page pressed stop itself"


async def first_hit(page: Any) -> str | None:
    first = page.locator("#search-results .card-hit").first
    await first.wait_for(timeout=30_000)
    value: str | None = await first.get_attribute("id")
    return value


async def test_the_recording_ends_when_the_speaker_stops(
    settings: Settings, captioner_factory: CaptionerFactory, tmp_path: Path
) -> None:
    auto_stop(settings)
    speech = speech_then_quiet(tmp_path, PHRASE)
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
            page = await open_page(
                browser, str(api.base_url).rstrip("/"), problems, SOCKET_PROBE_JS, FRAME_PROBE_JS
            )
            await speak_until_the_server_stops(page, timeout_ms=60_000)
            assert (await page.locator(TRANSCRIPT).text_content() or "").strip() == heard
            assert await first_hit(page) == f"hit-{ids['beach.jpg']}"
            await page.mouse.move(0, 0)
            await page.screenshot(path=str(ARTIFACTS / "browser-voice-auto.png"), full_page=True)
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"


async def test_real_whisper_finds_the_beach_without_a_stop(
    settings: Settings, captioner_factory: CaptionerFactory, tmp_path: Path
) -> None:
    if not REAL_WHISPER or not (Path(REAL_WHISPER) / "config.json").is_file():
        pytest.skip(
            "CAPSEARCH_TEST_WHISPER_DIR does not point at a whisper-base directory "
            "(build one: ../shared/tools/whisper_base_offline.sh /tmp/whisper-base .venv/bin/python)"
        )
    auto_stop(settings)
    settings.models.transcriber_id = REAL_WHISPER
    speech = _festival_or_espeak(tmp_path)
    problems: list[str] = []
    async with running(settings, captioner_factory) as api, async_playwright() as p:
        ids = await photo_set(api, tmp_path, PHRASE)
        browser = await launch(p, *microphone_args(speech))
        try:
            page = await open_page(
                browser, str(api.base_url).rstrip("/"), problems, SOCKET_PROBE_JS, FRAME_PROBE_JS
            )
            await speak_until_the_server_stops(page, timeout_ms=90_000)
            said = (await page.locator(TRANSCRIPT).text_content() or "").strip()
            assert "running on the beach" in re.sub(r"[^a-z ]", "", said.lower()), said
            assert await first_hit(page) == f"hit-{ids['beach.jpg']}"
            await page.screenshot(path=str(ARTIFACTS / "browser-voice-auto-whisper.png"), full_page=True)
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"


def _festival_or_espeak(directory: Path) -> Path:
    from capsearch.bench.voice_wer import festival_missing, festival_speech

    if festival_missing() is not None:
        return speech_then_quiet(directory, PHRASE, repeats=1)
    spoken = (festival_speech(PHRASE) * 32767).astype(np.int16)
    out = directory / "festival-then-quiet.wav"
    out.write_bytes(wav_bytes(np.concatenate([silence(0.3), spoken, silence(4.0)])))
    return out
