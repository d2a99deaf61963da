"""Distributed mode, spoken to: a page of a web replica records through Chromium's fake microphone;
the replica loads no model, so every partial and the final pass run on a transcriber worker over
Redis (the tiny random Whisper, built offline), the query is embedded by a worker too, and the
replica's own index (fed by the change feed) answers with the photo captioned with what was heard.
Needs PostgreSQL, Redis and Chromium; marked `faults` and `browser` (slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apikit import until
from tests.browser_js import FRAME_PROBE_JS, SOCKET_PROBE_JS
from tests.browser_scenes import photo_set
from tests.browserkit import BROWSER, launch, microphone_args, open_page, speech_with_pause
from tests.distkit import Topology
from tests.test_browser_voice import assert_hits, record
from tests.test_distributed import db_url, topology
from tests.test_distributed import pytestmark as distributed

__all__ = ["db_url", "topology"]  # fixtures, used by name

pytestmark = [*distributed, *BROWSER]
async_playwright: Any = pytest.importorskip(
    "playwright.async_api", reason="needs the playwright package: pip install playwright"
).async_playwright

TINY = {"CAPSEARCH_MODELS__PROFILE": "tiny"}


async def test_a_voice_search_on_a_replica_runs_on_the_workers(topology: Topology, tmp_path: Path) -> None:
    await topology.worker("voice", "transcriber,embedder", fake=False, **TINY)
    await topology.worker("captions", "captioner")  # a stand-in: the photos are captioned by hand below
    # The page stops the recording itself (as the single-process browser voice tests do).
    web = await topology.web("web", CAPSEARCH_VOICE__END_SILENCE_MS="0")
    speech = speech_with_pause(tmp_path, "a dog running on the beach")
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=web.url, timeout=60) as api, async_playwright() as p:
        r = await api.post("/api/transcriptions", files={"file": ("s.wav", speech.read_bytes(), "audio/wav")})
        assert r.status_code == 200, r.text
        heard = r.json()["text"]  # the tiny Whisper says this for any audio
        ids = await photo_set(api, tmp_path, heard)
        ready = (await api.get("/readyz")).json()["checks"]
        assert ready["transcriber"] == ready["embedder"] == "ok (1 worker)"  # none in the replica

        async def indexed() -> bool:  # the replica's index follows the change feed
            found = (await api.get("/api/search", params={"q": heard})).json()["hits"]
            return bool(found) and found[0]["image"]["id"] == ids["beach.jpg"]

        await until(indexed, "the captions to reach the replica's index", 30)
        browser = await launch(p, *microphone_args(speech))
        try:
            page = await open_page(browser, web.url, problems, SOCKET_PROBE_JS, FRAME_PROBE_JS)
            partial = await record(page, r"\S", stop="click")
            assert partial and "\ufffd" not in partial  # partials came from the worker while speaking
            await assert_hits(page, ids["beach.jpg"], heard)
        finally:
            await browser.close()
    assert not problems, f"browser console errors: {problems}"
