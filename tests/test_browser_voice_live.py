"""Voice search on the live page while the person speaks: settled and tentative words, live hits, and a
recording the server stops by itself (`voice.stopped`), in a real Chromium.

The recording itself is real (fake microphone, `voice.start` answered by the app's `voice.accepted`),
but its frames are held back in the page, so the server hears nothing; what the server would say is
handed to the page's message handlers instead (INJECT_JS), in a sequence a transcriber could not be
relied on to produce: tentative words, words that settle, live hits for them, an automatic stop, the
final transcript and its hits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from capsearch.app import CaptionerFactory
from capsearch.config import Settings
from tests.browser_js import FRAME_PROBE_JS, INJECT_JS, PLAYBACK_JS, SENT_JS, SOCKET_PROBE_JS, STYLE_JS
from tests.browserkit import ARTIFACTS, BROWSER, launch, microphone_args, open_page, quiet_wav, running
from tests.conftest import photo_bytes

pytestmark = [*BROWSER, pytest.mark.fake_captioner]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

MIC = "#voice-button"
PANEL = "#voice-panel"
SETTLED = "#voice-settled"
TENTATIVE = "#voice-tentative"
RESULTS = "#search-results"
CAPTION = "a dog running on the beach"
FRAMES_JS = "() => window.__wsLog.filter(([d]) => d === 'bin').length"
# INJECT_JS, answering with the frames sent so far in the same turn (no frame can slip in between).
INJECT_COUNTING_JS = """
(msg) => {
  document.dispatchEvent(new CustomEvent('capsearch:message', { detail: msg }));
  return window.__wsLog.filter(([d]) => d === 'bin').length;
}
"""


async def panel_for(api: httpx.AsyncClient, query: str) -> str:
    """The results panel the server renders for `query`: what voice.hits carries in `html`."""
    r = await api.get("/ui/search", params={"q": query})
    assert r.status_code == 200, r.text
    return r.text


def partial(text: str, settled: str | None = None, tentative: str | None = None) -> dict[str, Any]:
    split = {} if settled is None else {"settled": settled, "tentative": tentative}
    return {"type": "voice.partial", "text": text, "seconds": len(text) / 10, **split}


def hits(query: str, html: str, *, live: bool) -> dict[str, Any]:
    fields = {"transcript": query, "query": query, "hits": [], "no_match": False, "html": html}
    return {"type": "voice.hits", **fields, "partial": live}


async def start_recording(page: Any) -> str:
    """Press the microphone with the frames held back; the recording's id once the server accepted."""
    await page.evaluate("() => { window.__binaryBudget = 0; window.__wsLog.length = 0; }")
    await page.locator(MIC).click()
    await page.wait_for_selector(f'{PANEL}[data-state="recording"]', timeout=15_000)
    log = await page.evaluate("() => window.__wsLog")
    return str(next(m["id"] for d, m in log if d == "out" and m["type"] == "voice.start"))


async def text(page: Any, selector: str) -> str:
    return (await page.locator(selector).text_content() or "").strip()


async def assert_words(page: Any, settled: str, tentative: str) -> None:
    """Settled words plain, tentative ones lighter and slanted; the transcript reads as both."""
    assert (await text(page, SETTLED), await text(page, TENTATIVE)) == (settled, tentative)
    assert await text(page, "#voice-transcript") == " ".join(w for w in (settled, tentative) if w)
    assert await page.evaluate(STYLE_JS, [SETTLED, "font-style"]) == "normal"
    if tentative:
        assert await page.evaluate(STYLE_JS, [TENTATIVE, "font-style"]) == "italic"
        colours = [await page.evaluate(STYLE_JS, [s, "color"]) for s in (SETTLED, TENTATIVE)]
        assert colours[0] != colours[1]


async def test_settled_words_live_hits_and_a_stop_by_the_server(
    settings: Settings, captioner_factory: CaptionerFactory, tmp_path: Path
) -> None:
    settings.voice.stream_timeout_s = 300  # the server hears no audio from these recordings
    problems: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    async with running(settings, captioner_factory) as api, async_playwright() as p:
        r = await api.post(
            "/api/images?wait=true", files=[("files", ("beach.jpg", photo_bytes(3), "image/jpeg"))]
        )
        assert r.status_code == 201, r.text
        image_id = r.json()["items"][0]["image"]["id"]
        assert (await api.patch(f"/api/images/{image_id}", json={"caption": CAPTION})).status_code == 200
        browser = await launch(p, *microphone_args(quiet_wav(tmp_path)))
        try:
            page = await open_page(
                browser, str(api.base_url).rstrip("/"), problems, SOCKET_PROBE_JS, FRAME_PROBE_JS
            )
            stream = await start_recording(page)

            async def say(msg: dict[str, Any]) -> None:
                await page.evaluate(INJECT_JS, {"id": stream, **msg})

            # The first partial is all tentative; then words settle and stay plain.
            await say(partial("a dog", "", "a dog"))
            await assert_words(page, "", "a dog")
            assert await page.locator("#voice-transcript").get_attribute("data-state") == "partial"
            await say(partial("a dog running", "a dog", "running"))
            await assert_words(page, "a dog", "running")
            await say(partial("a dog running on", "a dog running", "on"))
            await assert_words(page, "a dog running", "on")
            # Only the settled words are a live region, and new ones are added as a node of their own
            # (a screen reader reads just them).
            assert await page.locator(f'{SETTLED}[aria-live="polite"]').count() == 1
            assert await page.locator("#voice-transcript [aria-live]").count() == 1
            assert await page.locator("#voice-transcript[aria-live]").count() == 0
            assert await page.evaluate("(s) => document.querySelector(s).childNodes.length", SETTLED) == 2

            # Live hits for the settled words: shown, marked provisional, the box and address untouched.
            await say(hits("a dog running", await panel_for(api, "a dog running"), live=True))
            live = page.locator(f'{RESULTS}[data-live="true"][aria-busy="true"] .search-panel')
            await live.wait_for(timeout=5_000)
            assert "“a dog running”" in await live.locator("h2").inner_text()
            assert await page.locator(f"{RESULTS} h2 .voice-live-badge").inner_text() == "listening…"
            assert await page.locator(f"#hit-{image_id}").count() == 1
            assert await page.locator("#search-input").input_value() == ""
            assert await page.evaluate("() => location.search") == ""
            await page.screenshot(path=str(ARTIFACTS / "browser-voice-live.png"), full_page=True)

            # The server stops the recording: the microphone stops as with Stop, but no voice.stop goes out.
            frames = await page.evaluate(
                INJECT_COUNTING_JS, {"id": stream, "type": "voice.stopped", "reason": "silence"}
            )
            await page.wait_for_selector(
                f'{PANEL}[data-state="transcribing"][data-stopped="silence"]', timeout=5_000
            )
            assert await page.locator(MIC).get_attribute("aria-pressed") == "false"
            assert await page.locator(f'{PANEL} [data-action="voice-stop"]').is_hidden()
            assert (await text(page, "#voice-status")).startswith("Stopped: you went quiet")
            await page.wait_for_function(PLAYBACK_JS, timeout=10_000)  # the worklet flushed, the mic is off
            assert await page.evaluate(SENT_JS, "voice.stop") == 0
            assert await page.evaluate(FRAMES_JS) == frames, "frames went out after voice.stopped"
            # A voice.stop that crossed voice.stopped would be answered like this: nothing changes.
            await say({"type": "error", "code": "voice_not_started", "detail": "No recording."})
            assert await page.locator(f'{PANEL}[data-state="transcribing"]').count() == 1
            assert await page.locator("#toasts .toast").count() == 0

            # The final transcript replaces the words; its hits replace the live ones.
            await say({"type": "voice.final", "text": CAPTION, "seconds": 2.4})
            assert await page.locator("#voice-transcript").get_attribute("data-state") == "final"
            assert (await text(page, SETTLED), await text(page, TENTATIVE)) == (CAPTION, "")
            await say(hits(CAPTION, await panel_for(api, CAPTION), live=False))
            await page.wait_for_selector(f'{PANEL}[data-state="done"]', timeout=5_000)
            assert f"“{CAPTION}”" in await page.locator(f"{RESULTS} .search-panel h2").inner_text()
            assert (
                await page.locator(f"{RESULTS}[data-live], {RESULTS}[aria-busy], .voice-live-badge").count()
                == 0
            )
            assert await page.locator("#search-input").input_value() == CAPTION
            assert await page.evaluate("() => new URL(location.href).searchParams.get('q')") == CAPTION
            assert (await text(page, "#voice-status")).startswith("Stopped: you went quiet")
            await page.screenshot(path=str(ARTIFACTS / "browser-voice-stopped.png"), full_page=True)

            # The cap, the other reason; a recording that then fails takes its live hits with it.
            stream = await start_recording(page)
            assert await page.locator(f"{PANEL}[data-stopped='']").count() == 1, "a new recording, no note"
            # A server that does not split its partials yet: the whole hypothesis may change.
            await say(partial("a dog"))
            await assert_words(page, "", "a dog")
            await say(hits("a dog", await panel_for(api, "a dog"), live=True))
            await page.locator(f'{RESULTS}[data-live="true"] .voice-live-badge').wait_for(timeout=5_000)
            await say({"type": "voice.stopped", "reason": "max_seconds"})
            await page.wait_for_selector(f'{PANEL}[data-stopped="max_seconds"]', timeout=5_000)
            assert "reached the 30 s cap" in await text(page, "#voice-status")
            assert await page.locator(MIC).get_attribute("aria-pressed") == "false"
            await say({"type": "voice.error", "code": "no_speech", "detail": "No speech heard."})
            await page.wait_for_selector(f'{PANEL}[data-state="failed"]', timeout=5_000)
            assert await page.locator(f"{RESULTS} .search-panel, {RESULTS}[data-live]").count() == 0
            assert await page.evaluate(SENT_JS, "voice.stop") == 0
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"
