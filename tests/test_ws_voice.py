"""Voice over `/ws` (docs/protocol.md, "Voice"): PCM frames in, partials, the final transcript and hits out.

The transcriber is the tiny random Whisper (its words are nonsense: the tests check types and flow);
each refusal must give a clear message, keep nothing and leave the socket usable.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from capsearch.config import Settings
from capsearch.voice.audio import PCM_F32LE, PCM_S16LE
from capsearch.ws.frames import encode_pcm_frame
from tests.conftest import photo_bytes
from tests.voicekit import frames, make_speech_wav, read_wav, silence, tone, wav_bytes
from tests.ws_page import Page, fake_app_client, page, root_of, signal_after, state_of, stored

pytestmark = pytest.mark.fake_captioner


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return read_wav(make_speech_wav(tmp_path_factory.mktemp("speech")).read_bytes())


def start(p: Page, stream_id: str, **extra: Any) -> dict[str, Any]:
    p.send(type="voice.start", id=stream_id, **extra)
    return p.expect("voice.accepted", id=stream_id)


def send_audio(p: Page, stream_id: str, samples: np.ndarray, encoding: int = PCM_S16LE) -> None:
    for chunk in frames(samples):
        if encoding == PCM_F32LE:
            chunk = (np.frombuffer(chunk, "<i2").astype("<f4") / 32768).tobytes()
        p.ws.send_bytes(encode_pcm_frame(stream_id, chunk, encoding))


def live(message: dict[str, Any]) -> bool:
    """What comes while someone speaks: partial transcripts and the hits of their settled words."""
    return message["type"] == "voice.partial" or (message["type"] == "voice.hits" and message["partial"])


def until(p: Page, kind: str, **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The next `kind` message, and the partials (and live hits) that came before it."""
    partials = []
    while live(message := p.next()) and kind != message["type"]:
        partials.append(message)
    assert message["type"] == kind, message
    assert {k: message.get(k) for k in fields} == fields, message
    return message, partials


def assert_nothing_kept(web: TestClient, p: Page) -> None:
    assert stored(web) == (0, 0)
    assert len(state_of(web).voice_streams) == 0
    p.ping()


def test_words_appear_while_speaking_then_the_final_transcript_then_hits(
    web: TestClient, speech: np.ndarray
) -> None:
    with page(web) as p:
        accepted = start(p, "voice-0001", sample_rate=16000)
        assert (accepted["sample_rate"], accepted["max_seconds"]) == (16000, 30)
        chunks = frames(speech)
        for chunk in chunks[:4]:
            p.ws.send_bytes(encode_pcm_frame("voice-0001", chunk))
        # While the person is still "speaking", the first 0.8 s come back as text.
        partial = p.expect("voice.partial", id="voice-0001")
        assert isinstance(partial["text"], str) and partial["text"]
        assert 0 < partial["seconds"] <= 0.8
        for chunk in chunks[4:]:
            p.ws.send_bytes(encode_pcm_frame("voice-0001", chunk))
        p.send(type="voice.stop", id="voice-0001")
        final, _ = until(p, "voice.final", id="voice-0001")
        assert isinstance(final["text"], str) and final["text"]
        assert final["seconds"] == round(speech.size / 16000, 2)
        hits = p.expect("voice.hits", id="voice-0001", transcript=final["text"])
        assert isinstance(hits["hits"], list)
        assert hits["no_match"] is (hits["hits"] == [])
        # Frames after the stop belong to no recording.
        p.ws.send_bytes(encode_pcm_frame("voice-0001", frames(speech)[0]))
        p.expect("error", code="voice_not_started", id="voice-0001")
        assert_nothing_kept(web, p)


def test_hits_are_shaped_like_text_search_and_find_the_spoken_caption(
    web: TestClient, speech: np.ndarray
) -> None:
    # The tiny Whisper's words are nonsense but deterministic: caption an image with them.
    said = web.post("/api/transcriptions", files={"file": ("s.wav", wav_bytes(speech), "audio/wav")})
    transcript = said.json()["text"]
    image = web.post("/api/images?wait=true", files={"files": ("p.jpg", photo_bytes(1), "image/jpeg")})
    image_id = image.json()["items"][0]["image"]["id"]
    assert web.patch(f"/api/images/{image_id}", json={"caption": transcript}).status_code == 200
    typed = web.get("/api/search", params={"q": transcript}).json()
    with page(web) as p:
        start(p, "voice-0002")
        send_audio(p, "voice-0002", speech, PCM_F32LE)  # the float32 variant of the frames
        p.send(type="voice.stop", id="voice-0002")
        until(p, "voice.final", id="voice-0002", text=transcript)
        hits = p.expect("voice.hits", id="voice-0002", query=transcript, no_match=False)
    assert hits["hits"][0]["image"]["id"] == image_id
    assert hits["hits"] == typed["hits"]
    # The page shows the server's own rendering: the same panel the search box gets for this query.
    panel = web.get("/ui/search", params={"q": transcript})
    assert hits["html"] == panel.text
    assert root_of(hits["html"])["data-state"] == "hits"
    assert f'id="hit-{image_id}"' in hits["html"]


def test_the_recording_ends_itself_when_the_speaker_goes_quiet(settings: Settings) -> None:
    settings.voice.end_silence_ms = 800
    with fake_app_client(settings) as web, page(web) as p:
        start(p, "auto-stop-1")
        send_audio(p, "auto-stop-1", np.concatenate([tone(0.8), silence(2.0)]))
        # All frames arrive at once here: whether a partial finishes before the stop is up to timing.
        until(p, "voice.stopped", id="auto-stop-1", reason="silence")
        final, _ = until(p, "voice.final", id="auto-stop-1")
        assert final["seconds"] <= 0.8 + 0.8 + 0.2  # ended in the quiet, not at the end of the audio
        hits = p.expect("voice.hits", id="auto-stop-1", transcript=final["text"])
        assert hits["partial"] is False
        p.send(type="voice.stop", id="auto-stop-1")  # crossed voice.stopped: dropped, no error
        assert_nothing_kept(web, p)


def test_search_can_be_left_out(web: TestClient) -> None:
    with page(web) as p:
        start(p, "no-search-1", search=False)
        send_audio(p, "no-search-1", tone(1.0))
        p.send(type="voice.stop", id="no-search-1")
        until(p, "voice.final", id="no-search-1")
        p.ping()  # and no voice.hits before the pong


def test_silence_is_no_speech_and_searches_nothing(web: TestClient) -> None:
    with page(web) as p:
        start(p, "silent-01")
        send_audio(p, "silent-01", silence(2.0))
        p.send(type="voice.stop", id="silent-01")
        error = p.expect("voice.error", id="silent-01", code="no_speech")
        assert "No speech heard" in error["detail"]
        assert_nothing_kept(web, p)


@pytest.mark.parametrize(
    ("payload", "encoding", "words"),
    [
        (b"\x01\x02\x03", PCM_S16LE, "even number"),
        (np.array([0.5, np.nan], "<f4").tobytes(), PCM_F32LE, "NaN"),
        (np.array([np.inf, 0], "<f4").tobytes(), PCM_F32LE, "infinite"),
        (b"\x00" * 6, PCM_F32LE, "multiple of 4"),
    ],
)
def test_bad_pcm_ends_the_recording_and_keeps_nothing(
    web: TestClient, payload: bytes, encoding: int, words: str
) -> None:
    with page(web) as p:
        start(p, "bad-pcm-1")
        send_audio(p, "bad-pcm-1", tone(0.4))
        p.ws.send_bytes(encode_pcm_frame("bad-pcm-1", payload, encoding))
        error, _ = until(p, "voice.error", id="bad-pcm-1", code="bad_pcm")
        assert words in error["detail"]
        p.ws.send_bytes(encode_pcm_frame("bad-pcm-1", b"\x00\x00"))
        until(p, "error", code="voice_not_started", id="bad-pcm-1")
        assert_nothing_kept(web, p)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_pcm_frame("never-started", b"\x00\x00"), "voice_not_started"),
        (b"\x02\x01\x20abc", "invalid_message"),  # shorter than its header
        (b"\x02\x01\x03abc\x00\x00", "invalid_message"),  # id too short to be one
        (b"\x02", "invalid_message"),
    ],
)
def test_frames_without_a_started_stream(web: TestClient, frame: bytes, code: str) -> None:
    with page(web) as p:
        p.ws.send_bytes(frame)
        error = p.expect("error", code=code)
        assert error["detail"]
        assert_nothing_kept(web, p)


def test_stop_without_start_and_refused_starts(web: TestClient) -> None:
    with page(web) as p:
        p.send(type="voice.stop", id="never-started")
        p.expect("error", code="voice_not_started", id="never-started")
        p.send(type="voice.start", id="rate-4410", sample_rate=44100)
        assert "16000 Hz" in p.expect("voice.error", id="rate-4410", code="unsupported_sample_rate")["detail"]
        p.send(type="voice.start", id="bad id!")
        p.expect("error", code="invalid_message")
        start(p, "stream-one")
        p.send(type="voice.start", id="stream-one")
        p.expect("voice.error", id="stream-one", code="duplicate_stream_id")
        start(p, "stream-two")
        p.send(type="voice.start", id="stream-three")
        p.expect("voice.error", id="stream-three", code="too_many_streams")
        # A cancel frees a slot at once and its frames are refused from then on.
        p.send(type="voice.cancel", id="stream-one")
        p.ws.send_bytes(encode_pcm_frame("stream-one", b"\x00\x00"))
        p.expect("error", code="voice_not_started", id="stream-one")
        start(p, "stream-three")


def test_the_cap_ends_a_recording_and_keeps_what_fits(settings: Settings) -> None:
    settings.voice.max_seconds = 1
    with (
        fake_app_client(settings) as web,
        page(web) as p,
    ):
        start(p, "too-long-1")
        send_audio(p, "too-long-1", silence(1.4))  # the fifth 200 ms frame reaches 1 s
        until(p, "voice.stopped", id="too-long-1", reason="max_seconds")
        # The recording ends as a stop would end it (here: silence), and the sixth frame, sent
        # before the page could hear of the stop, was dropped without an error.
        until(p, "voice.error", id="too-long-1", code="no_speech")
        # Later frames for it are dropped without a word too: the page may still have some on the way.
        p.ws.send_bytes(encode_pcm_frame("too-long-1", b"\x00\x00"))
        p.send(type="voice.stop", id="too-long-1")
        assert_nothing_kept(web, p)  # ends with a ping: nothing else came back before the pong


def test_a_recording_never_stopped_times_out(web: TestClient) -> None:
    streams = state_of(web).voice_streams
    assert web.portal is not None
    with page(web) as p:
        start(p, "forgotten-1")
        send_audio(p, "forgotten-1", silence(0.4))
        p.ping()  # the frames have been handled
        assert web.portal.call(streams.sweep, time.monotonic()) == 0
        later = time.monotonic() + streams.settings.stream_timeout_s + 1
        assert web.portal.call(streams.sweep, later) == 1
        error = p.expect("voice.error", id="forgotten-1", code="stream_timeout")
        assert "never stopped" in error["detail"]
        p.ws.send_bytes(encode_pcm_frame("forgotten-1", b"\x00\x00"))
        p.expect("error", code="voice_not_started")
        assert_nothing_kept(web, p)


def test_closing_the_page_ends_its_recordings(web: TestClient) -> None:
    streams = state_of(web).voice_streams
    # The server cleans up after the client has gone: wait for that call rather than for time.
    cleaned, dropped = signal_after(streams, "discard_owner")
    with page(web) as p:
        start(p, "left-open")
        send_audio(p, "left-open", tone(0.6))
        p.ping()
        assert len(streams) == 1
    assert cleaned.wait(30)
    assert dropped == [1]
    assert len(streams) == 0
