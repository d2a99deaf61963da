"""Voice under hostile input: tiny and empty frames, many recordings from one client, NaN and absurd
sample rates in files. Each refusal names a stable code, keeps nothing and leaves the socket usable.
"""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from capsearch.batching import Batcher
from capsearch.config import BatchSettings, RateLimitSettings, Settings, VoiceSettings
from capsearch.ml.speech import Clip
from capsearch.services.search import SearchResult
from capsearch.voice.audio import AudioError, decode_audio
from capsearch.voice.stream import Partial
from capsearch.voice.streams import VoiceStreams
from capsearch.ws.frames import encode_pcm_frame
from tests.voicekit import GatedTranscriber, frames, silence, tone, wav_bytes
from tests.ws_page import Page, fake_app_client, page, signal_after, state_of

pytestmark = pytest.mark.fake_captioner

CLIENT = "testclient"  # the peer address of every TestClient socket


def start(p: Page, stream_id: str) -> None:
    p.send(type="voice.start", id=stream_id)
    p.expect("voice.accepted", id=stream_id)


def send(p: Page, stream_id: str, samples: np.ndarray) -> None:
    p.ws.send_bytes(encode_pcm_frame(stream_id, samples.astype("<i2").tobytes()))


def assert_nothing_kept(web: TestClient, p: Page) -> None:
    streams = state_of(web).voice_streams
    assert (len(streams), streams.held_by(CLIENT)) == (0, 0)
    p.ping()


# ---- frames -------------------------------------------------------------------------------------


def test_the_last_frame_before_stop_may_be_short(web: TestClient) -> None:
    """What the page does: 200 ms frames, then the worklet's flush of whatever it still held."""
    audio = tone(1.01)  # five 200 ms frames and 160 samples
    chunks = frames(audio)
    assert len(chunks[-1]) // 2 < state_of(web).settings.voice.min_frame_samples
    with page(web) as p:
        start(p, "page-like")
        for chunk in chunks:
            p.ws.send_bytes(encode_pcm_frame("page-like", chunk))
        p.send(type="voice.stop", id="page-like")
        while (message := p.next())["type"] == "voice.partial":
            pass
        assert (message["type"], message["id"]) == ("voice.final", "page-like"), message
        assert message["seconds"] == round(audio.size / 16_000, 2)
        p.expect("voice.hits", id="page-like")
        assert_nothing_kept(web, p)  # a finished recording gives its slot back


@pytest.mark.parametrize(
    ("second", "what"),
    [
        (np.zeros(1, np.int16), "two tiny frames"),
        (np.zeros(0, np.int16), "a tiny frame, then an empty one"),
        (tone(0.2), "a full frame after a short one"),
    ],
)
def test_a_short_frame_that_is_not_the_last_ends_the_recording(
    web: TestClient, second: np.ndarray, what: str
) -> None:
    with page(web) as p:
        start(p, "tiny-frames")
        send(p, "tiny-frames", tone(0.4))
        send(p, "tiny-frames", np.zeros(1, np.int16))  # could be the page's final flush: accepted
        p.ping()
        send(p, "tiny-frames", second)
        error = p.expect("voice.error", id="tiny-frames", code="frame_too_small")
        assert "at least 320 samples" in error["detail"], what
        # The flood that follows costs an `error` each and no memory.
        for _ in range(50):
            send(p, "tiny-frames", np.zeros(1, np.int16))
        for _ in range(50):
            p.expect("error", code="voice_not_started", id="tiny-frames")
        assert_nothing_kept(web, p)


class Owner:
    async def voice_partial(self, stream_id: str, partial: Partial) -> None:
        raise AssertionError("silence is never transcribed")

    async def voice_live_hits(self, stream_id: str, query: str, result: SearchResult) -> None:
        raise AssertionError("silence is never searched")

    def voice_failed(self, stream_id: str, code: str, detail: str) -> None:
        raise AssertionError(code)


async def test_a_recording_is_one_growing_buffer() -> None:
    model = GatedTranscriber()
    batcher: Batcher[Clip, str] = Batcher(model, BatchSettings(max_batch_size=1, max_wait_ms=0))
    await batcher.start()
    streams = VoiceStreams(VoiceSettings(max_seconds=30), batcher)
    try:
        stream = streams.open("one-buffer", Owner(), client=CLIENT)
        frame = 320  # the smallest frame allowed: the most frames a recording can be cut into
        sent = [(silence(frame / 16_000, seed=i).astype(np.float32) / 32768) for i in range(1500)]
        buffers: list[np.ndarray] = []
        for i, samples in enumerate(sent):
            assert await streams.feed(stream, samples) == ("max_seconds" if i == len(sent) - 1 else None)
            if not buffers or buffers[-1] is not stream.buffer:
                buffers.append(stream.buffer)
        # 1,500 frames (30 s): one float32 array, grown by doubling a handful of times, never per frame.
        assert isinstance(stream.buffer, np.ndarray) and stream.buffer.dtype == np.float32
        assert stream.samples == 1500 * frame == 30 * 16_000
        assert stream.buffer.size == stream.samples  # capped at max_seconds, no slack past the cap
        assert [b.size for b in buffers] == [32_000, 64_000, 128_000, 256_000, 480_000]
        assert np.array_equal(stream.audio(), np.concatenate(sent))
        assert stream.audio().base is stream.buffer  # a view, not a copy per pass
        # Full: nothing more is kept, and the recording is told to end (the socket then stops it).
        assert await streams.feed(stream, sent[0]) == "max_seconds"
        assert stream.samples == 30 * 16_000
        streams.discard(stream)
        assert stream.buffer.size == 0 and streams.held_by(CLIENT) == 0
    finally:
        await streams.stop()
        model.release(100)
        await batcher.stop(5)


# ---- empty frames keep nothing alive ------------------------------------------------------------


def test_empty_frames_do_not_keep_a_recording_alive(web: TestClient) -> None:
    streams = state_of(web).voice_streams
    assert web.portal is not None
    with page(web) as p:
        start(p, "kept-alive")
        send(p, "kept-alive", silence(0.4))
        p.ping()
        stream = streams.get("kept-alive")
        assert stream is not None
        last_audio = stream.touched
        send(p, "kept-alive", np.zeros(0, np.int16))
        p.ping()  # the empty frame has been handled, without an answer
        assert stream.touched == last_audio and streams.get("kept-alive") is stream
        timeout = streams.settings.stream_timeout_s
        assert web.portal.call(streams.sweep, last_audio + timeout + 1) == 1
        error = p.expect("voice.error", id="kept-alive", code="stream_timeout")
        assert "never stopped" in error["detail"]
        assert_nothing_kept(web, p)


# ---- per-client caps ----------------------------------------------------------------------------


def test_one_client_holds_at_most_max_streams_per_client_across_sockets(settings: Settings) -> None:
    settings.voice.max_streams_per_client = 3
    with fake_app_client(settings) as web:
        streams = state_of(web).voice_streams
        closed, _ = signal_after(streams, "discard_owner")
        with page(web) as first, page(web) as second:
            start(first, "first-rec-0")
            start(first, "first-rec-1")
            start(second, "second-rec-0")
            second.send(type="voice.start", id="second-rec-1")
            error = second.expect("voice.error", id="second-rec-1", code="too_many_streams")
            assert "At most 3 recordings from one address" in error["detail"]
            assert streams.held_by(CLIENT) == 3
            first.send(type="voice.cancel", id="first-rec-0")
            first.ping()
            start(second, "second-rec-1")
            with page(web) as third:
                third.send(type="voice.start", id="third-rec-0")
                third.expect("voice.error", id="third-rec-0", code="too_many_streams")
                first.ws.close(1000)
                assert closed.wait(10)
                start(third, "third-rec-0")
                assert streams.held_by(CLIENT) == 3  # refused starts took no slot
                # A recording that ends in an error gives its slot back too.
                send(third, "third-rec-0", silence(0.4))
                third.send(type="voice.stop", id="third-rec-0")
                third.expect("voice.error", id="third-rec-0", code="no_speech")
                assert streams.held_by(CLIENT) == 2


def test_voice_starts_are_rate_limited_per_client(settings: Settings) -> None:
    settings.rate_limits = RateLimitSettings(voice_burst=2, voice_per_minute=1)
    with fake_app_client(settings) as web, page(web) as first, page(web) as second:
        start(first, "allowed-rec-1")
        first.send(type="voice.cancel", id="allowed-rec-1")
        start(second, "allowed-rec-2")
        first.send(type="voice.start", id="limited-rec")
        error = first.expect("voice.error", id="limited-rec", code="rate_limited")
        assert isinstance(error["retry_after"], int) and 1 <= error["retry_after"] <= 60
        assert f"try again in {error['retry_after']} s" in error["detail"]
        assert state_of(web).voice_streams.get("limited-rec") is None
        first.ping()
        # The recording already under way goes on.
        send(second, "allowed-rec-2", silence(0.2))
        second.ping()
        assert state_of(web).voice_streams.get("allowed-rec-2") is not None


# ---- REST audio files ---------------------------------------------------------------------------


def float_wav(samples: np.ndarray, rate: int = 16_000) -> bytes:
    """IEEE-float WAV (format 3), which the standard library cannot read: it goes through PyAV."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4 % 2**32, 4, 32)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def int_wav(samples: np.ndarray, rate: int) -> bytes:
    """16-bit WAV whose header says `rate`, whatever it is (the wave module refuses to write some)."""
    good = wav_bytes(samples)
    return good[:24] + struct.pack("<II", rate, rate * 2 % 2**32) + good[32:]


def loud(seconds: float) -> np.ndarray:
    return tone(seconds).astype(np.float32) / 32768


def with_at(samples: np.ndarray, where: int, value: float) -> np.ndarray:
    out = samples.copy()
    out[where] = value
    return out


@pytest.mark.parametrize("path", ["/api/transcriptions", "/api/search/voice"])
@pytest.mark.parametrize(
    "data",
    [
        float_wav(with_at(loud(1.0), 8_000, np.nan)),
        float_wav(with_at(loud(1.0), 0, np.inf)),
        float_wav(with_at(loud(1.0), 15_999, -np.inf), rate=44_100),
    ],
    ids=["nan", "inf", "-inf-resampled"],
)
async def test_nan_or_infinite_samples_in_a_file_are_refused(
    client: httpx.AsyncClient, path: str, data: bytes
) -> None:
    r = await client.post(path, files={"file": ("speech.wav", data, "audio/wav")})
    assert (r.status_code, r.json()["code"]) == (422, "bad_audio"), r.text
    assert r.json()["detail"] == "This recording contains NaN or infinite samples."


async def test_a_clean_float_wav_is_still_transcribed(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/transcriptions", files={"file": ("speech.wav", float_wav(loud(1.0)), "audio/wav")}
    )
    assert r.status_code == 200, r.text
    assert r.json()["seconds"] == 1.0


@pytest.mark.parametrize("rate", [0, 1, 999, 384_001, 2**31, 4_000_000_000, 2**32 - 1])
@pytest.mark.parametrize("kind", ["int16", "float32"])
async def test_an_absurd_sample_rate_is_a_clear_4xx(client: httpx.AsyncClient, rate: int, kind: str) -> None:
    samples = tone(0.5)
    data = int_wav(samples, rate) if kind == "int16" else float_wav(samples.astype(np.float32) / 32768, rate)
    for path in ("/api/transcriptions", "/api/search/voice"):
        r = await client.post(path, files={"file": ("speech.wav", data, "audio/wav")})
        assert r.headers["content-type"].startswith("application/json"), r.text
        body = r.json()
        assert (r.status_code, body["code"]) in {(415, "unsupported_audio"), (422, "corrupt_audio")}, r.text
        assert body["detail"].endswith(".")


@pytest.mark.parametrize("rate", [1_000, 8_000, 44_100, 384_000])
def test_sample_rates_in_the_supported_range_still_decode(rate: int) -> None:
    samples = decode_audio(int_wav(tone(0.5), rate), max_seconds=30)
    assert samples.dtype == np.float32 and np.isfinite(samples).all()
    # 8,000 samples declared at `rate` last 8,000 / rate seconds: that much audio at 16 kHz.
    assert abs(samples.size - 8_000 * 16_000 / rate) <= 64


def test_a_wav_declaring_4_billion_hz_is_unsupported_not_a_crash() -> None:
    with pytest.raises(AudioError) as caught:
        decode_audio(int_wav(tone(0.5), 4_000_000_000), max_seconds=30)
    assert caught.value.code == "unsupported_audio"
    assert "4,000,000,000 Hz" in caught.value.message
