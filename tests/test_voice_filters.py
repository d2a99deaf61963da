"""Voice search takes the same sort and upload-date range as typed search: query parameters of
POST /api/search/voice, fields of the socket's `voice.start` (docs/protocol.md), with the same 422
codes. The tiny random Whisper's words are nonsense but deterministic: images are captioned with them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.apikit import files
from tests.conftest import photo_bytes
from tests.search_helpers import set_uploaded
from tests.test_ws_voice import send_audio, until
from tests.voicekit import make_speech_wav, read_wav, wav_bytes
from tests.ws_page import page, state_of, stored

pytestmark = pytest.mark.fake_captioner

OLD, NEW = datetime(2025, 6, 1, tzinfo=UTC), datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return read_wav(make_speech_wav(tmp_path_factory.mktemp("speech")).read_bytes())


def ids_of(body: dict[str, Any]) -> list[int]:
    return [h["image"]["id"] for h in body["hits"]]


# ---- REST ---------------------------------------------------------------------------------------


async def captioned_pair(client: httpx.AsyncClient, app: FastAPI, caption: str) -> tuple[int, int]:
    """Two images captioned `caption`: (uploaded OLD, uploaded NEW); the old one has the later id."""
    r = await client.post("/api/images?wait=true", files=files(photo_bytes(40), photo_bytes(41)))
    new, old = sorted(i["image"]["id"] for i in r.json()["items"])  # files may be taken in any order
    for image_id in (new, old):
        assert (await client.patch(f"/api/images/{image_id}", json={"caption": caption})).status_code == 200
    await set_uploaded(app, {old: OLD, new: NEW})
    return old, new


async def test_rest_voice_search_sorts_and_filters(
    client: httpx.AsyncClient, app: FastAPI, speech: np.ndarray
) -> None:
    audio = {"file": ("s.wav", wav_bytes(speech), "audio/wav")}
    said = (await client.post("/api/transcriptions", files=audio)).json()
    old, new = await captioned_pair(client, app, said["text"])

    async def voice(**params: str) -> httpx.Response:
        return await client.post("/api/search/voice", files=audio, params=params)

    # Equal captions tie on relevance (the later id first); newest first puts the new one first.
    assert ids_of((await voice()).json()) == [old, new]
    newest = (await voice(sort="newest")).json()
    assert ids_of(newest) == [new, old] and newest["sort"] == "newest"
    assert newest["transcript"] == newest["query"] == said["text"]
    recent = (await voice(uploaded_from="2026-01-01", uploaded_to="2026-01-10")).json()
    assert ids_of(recent) == [new] and recent["in_range"] == 1
    assert recent["uploaded_to"] == "2026-01-10T23:59:59.999999Z"
    r = await voice(uploaded_from="2026-02-01", uploaded_to="2026-01-01")
    assert (r.status_code, r.json()["code"]) == (422, "bad_date_range")
    r = await voice(sort="loudest")
    assert (r.status_code, r.json()["code"]) == (422, "bad_sort")


# ---- the socket ---------------------------------------------------------------------------------


def caption_pair(web: TestClient, caption: str) -> tuple[int, int]:
    r = web.post("/api/images?wait=true", files=files(photo_bytes(50), photo_bytes(51)))
    new, old = sorted(i["image"]["id"] for i in r.json()["items"])  # files may be taken in any order
    for image_id in (new, old):
        assert web.patch(f"/api/images/{image_id}", json={"caption": caption}).status_code == 200
    assert web.portal is not None
    web.portal.call(set_uploaded, web.app, {old: OLD, new: NEW})
    return old, new


def spoken_hits(web: TestClient, speech: np.ndarray, stream_id: str, **options: str) -> dict[str, Any]:
    with page(web) as p:
        p.send(type="voice.start", id=stream_id, **options)
        p.expect("voice.accepted", id=stream_id)
        send_audio(p, stream_id, speech)
        p.send(type="voice.stop", id=stream_id)
        final, _ = until(p, "voice.final", id=stream_id)
        hits, _ = until(p, "voice.hits", id=stream_id, partial=False)
    assert hits["transcript"] == final["text"]
    return hits


def test_socket_voice_search_sorts_and_filters(web: TestClient, speech: np.ndarray) -> None:
    transcript = web.post("/api/transcriptions", files={"file": ("s.wav", wav_bytes(speech), "audio/wav")})
    old, new = caption_pair(web, transcript.json()["text"])
    assert ids_of(spoken_hits(web, speech, "voice-sort-1")) == [old, new]
    newest = spoken_hits(web, speech, "voice-sort-2", sort="newest")
    assert ids_of(newest) == [new, old] and newest["sort"] == "newest"
    assert 'data-sort="newest"' in newest["html"] and "newest first" in newest["html"]
    dated = spoken_hits(
        web, speech, "voice-sort-3", uploaded_from="2026-01-10", uploaded_to="2026-01-10", tz="UTC"
    )
    assert ids_of(dated) == [new] and dated["in_range"] == 1
    assert "filtered by upload date" in dated["html"]
    nothing = spoken_hits(web, speech, "voice-sort-4", uploaded_from="2024-01-01", uploaded_to="2024-12-31")
    assert (nothing["hits"], nothing["no_match"], nothing["in_range"]) == ([], True, 0)
    assert 'data-reason="empty-range"' in nothing["html"]


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"uploaded_from": "2026-02-01", "uploaded_to": "2026-01-01"}, "bad_date_range"),
        ({"uploaded_to": "someday"}, "bad_date"),
        ({"sort": "oldest"}, "bad_sort"),
        ({"uploaded_from": "2026-01-01", "tz": "Atlantis/Capital"}, "bad_time_zone"),
    ],
)
def test_a_bad_option_refuses_the_recording_before_it_starts(
    web: TestClient, options: dict[str, str], code: str
) -> None:
    with page(web) as p:
        p.send(type="voice.start", id="voice-bad-1", **options)
        error = p.expect("voice.error", id="voice-bad-1", code=code)
        assert error["detail"].endswith(".")
        assert len(state_of(web).voice_streams) == 0 and stored(web) == (0, 0)
        # The socket stays usable: a good start right after is accepted.
        p.send(type="voice.start", id="voice-bad-2", sort="newest")
        p.expect("voice.accepted", id="voice-bad-2")
        p.send(type="voice.cancel", id="voice-bad-2")
        p.ping()
