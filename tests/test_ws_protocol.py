"""`/ws` protocol edges: malformed messages, refused declarations, broken uploads, limits, Origin.

Each refusal must give a clear message, keep nothing (no row, no file, no partial) and leave the
socket usable. The captioner is a fake: none of this is about captions.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from capsearch.app import create_app
from capsearch.config import BatchSettings, Settings
from capsearch.ws.frames import encode_chunk
from tests import imagefactory as make
from tests.conftest import photo_bytes
from tests.fakes import FakeCaptioner
from tests.ws_page import Page, fake_app_client, page, partials, state_of, stored, sweep

pytestmark = pytest.mark.fake_captioner


def assert_nothing_kept(web: TestClient, p: Page) -> None:
    assert stored(web) == (0, 0)
    assert partials(web) == []
    p.ping()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ('{"type": "upload.teleport"}', "unknown_type"),
        ('{"type": "upload.start", "id": "abcdefgh"}', "invalid_message"),
        (
            '{"type": "upload.start", "id": "no spaces!", "name": "a", "size": 1, "mime": "image/png"}',
            "invalid_message",
        ),
        ('{"type": "upload.end", "id": "abcdefgh", "sha256": "xyz"}', "invalid_message"),
        ("[1, 2]", "invalid_message"),
        ('{"id": "abcdefgh"}', "invalid_message"),
    ],
)
def test_bad_text_messages_get_an_error_and_the_socket_stays_open(
    web: TestClient, text: str, code: str
) -> None:
    with page(web) as p:
        p.ws.send_text(text)
        error = p.expect("error", code=code)
        assert error["detail"]
        assert_nothing_kept(web, p)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (encode_chunk("never-started", 0, b"bytes"), "binary_without_upload"),
        (b"\x03\x08abcdefgh" + bytes(8) + b"x", "invalid_message"),  # unknown kind
        (b"\x01\x08abcd", "invalid_message"),  # shorter than its header
        (b"\x01\x03abc" + bytes(8), "invalid_message"),  # id too short to be one
        (b"", "invalid_message"),
    ],
)
def test_bad_binary_frames_get_an_error(web: TestClient, frame: bytes, code: str) -> None:
    with page(web) as p:
        p.ws.send_bytes(frame)
        p.expect("error", code=code)
        assert_nothing_kept(web, p)


def test_binary_before_start_names_the_upload(web: TestClient) -> None:
    with page(web) as p:
        p.chunk("upload-1234", 0, b"\xff\xd8")
        p.expect("error", code="binary_without_upload", id="upload-1234")
        assert_nothing_kept(web, p)


@pytest.mark.parametrize(
    ("size", "mime", "code", "words"),
    [
        (6 * 1024 * 1024, "image/jpeg", "too_large", "the limit is 5 MB"),
        (1000, "text/plain", "unsupported_type", "only JPEG, PNG, WebP, GIF images"),
        (1000, "image/tiff", "unsupported_type", "image/tiff"),
        (1000, "", "unsupported_type", "unknown type"),
        (0, "image/png", "empty_file", "empty"),
    ],
)
def test_declarations_are_refused_before_any_byte_moves(
    web: TestClient, size: int, mime: str, code: str, words: str
) -> None:
    with page(web) as p:
        p.send(type="upload.start", id="declared-1", name="x", size=size, mime=mime)
        assert words in p.rejected("declared-1", code)["detail"]
        # The upload never began, so its bytes have nowhere to go.
        p.chunk("declared-1", 0, b"\xff\xd8\xff")
        p.expect("error", code="binary_without_upload")
        assert_nothing_kept(web, p)


def test_chunk_past_the_declared_size_fails_the_upload(web: TestClient) -> None:
    with page(web) as p:
        p.send(type="upload.start", id="past-size", name="x.jpg", size=10, mime="image/jpeg")
        p.expect("upload.accepted", id="past-size")
        p.chunk("past-size", 0, b"0123456")
        p.expect("upload.ack", id="past-size", offset=7)
        p.chunk("past-size", 7, b"789abc")
        assert "declared size of 10 bytes" in p.rejected("past-size", "past_declared_size")["detail"]
        p.chunk("past-size", 13, b"more")
        p.expect("error", code="binary_without_upload")
        assert_nothing_kept(web, p)


def test_a_chunk_at_the_wrong_offset_is_refused_but_the_upload_goes_on(web: TestClient) -> None:
    data = photo_bytes(1)
    with page(web) as p:
        p.start("wrong-offset", data)
        p.expect("upload.accepted")
        p.chunk("wrong-offset", 100, data[100:200])
        p.expect("upload.rejected", id="wrong-offset", code="bad_offset", offset=0)
        p.chunk("wrong-offset", 0, data)
        p.expect("upload.ack", offset=len(data))
        p.end("wrong-offset", data)
        p.expect("upload.done", id="wrong-offset", duplicate=False)
        assert stored(web)[0] == 1


def test_a_chunk_larger_than_chunk_size_fails_the_upload(web: TestClient) -> None:
    with page(web) as p:
        p.send(type="upload.start", id="big-chunk", name="x.jpg", size=200_000, mime="image/jpeg")
        chunk_size = p.expect("upload.accepted")["chunk_size"]
        p.chunk("big-chunk", 0, bytes(chunk_size + 1))
        p.rejected("big-chunk", "invalid_message")
        assert_nothing_kept(web, p)


def test_wrong_sha256_stores_nothing(web: TestClient) -> None:
    data = photo_bytes(2)
    with page(web) as p:
        p.start("bad-hash", data)
        p.expect("upload.accepted")
        p.chunk("bad-hash", 0, data)
        p.expect("upload.ack", offset=len(data))
        p.end("bad-hash", data, sha256="0" * 64)
        assert "damaged" in p.rejected("bad-hash", "sha256_mismatch")["detail"]
        assert_nothing_kept(web, p)


def test_ending_before_every_byte_arrived_stores_nothing(web: TestClient) -> None:
    data = photo_bytes(3)
    with page(web) as p:
        p.start("too-short", data)
        p.expect("upload.accepted")
        p.chunk("too-short", 0, data[:1000])
        p.expect("upload.ack", offset=1000)
        p.end("too-short", data)
        assert (
            f"after 1,000 of the {len(data):,} bytes" in p.rejected("too-short", "length_mismatch")["detail"]
        )
        assert_nothing_kept(web, p)


@pytest.mark.parametrize(
    ("data", "mime", "code"),
    [
        (b"just some text, not an image at all", "image/png", "unsupported_type"),
        (photo_bytes(4)[: len(photo_bytes(4)) // 2], "image/jpeg", "corrupt_image"),
        (make.png_bomb(8_000, 8_000), "image/png", "too_many_pixels"),
        (make.jpeg_magic_photocd(), "image/jpeg", "type_mismatch"),
    ],
)
def test_intake_refusals_arrive_as_rejections(web: TestClient, data: bytes, mime: str, code: str) -> None:
    with page(web) as p:
        p.upload("intake-refusal", data, mime=mime)
        p.rejected("intake-refusal", code)
        assert_nothing_kept(web, p)


def test_a_full_caption_queue_answers_busy(settings: Settings) -> None:
    settings.caption_batch = BatchSettings(max_batch_size=1, max_wait_ms=0, queue_limit=2)
    fake = FakeCaptioner()
    fake.gate.clear()
    with TestClient(create_app(settings, captioner_factory=lambda _s: fake)) as web, page(web) as p:
        for i in range(3):  # one in the model, two waiting
            p.upload(f"queued-{i:03}", photo_bytes(10 + i))
            p.expect("upload.done", id=f"queued-{i:03}")
            if i == 0:
                assert fake.entered.wait(10)
        p.upload("one-too-many", photo_bytes(20))
        p.rejected("one-too-many", "busy")
        assert stored(web) == (3, 6)
        assert partials(web) == []
        fake.gate.set()
        p.ping()


def test_too_many_parallel_uploads_and_duplicate_ids(web: TestClient) -> None:
    with page(web) as p:
        for i in range(3):
            p.send(type="upload.start", id=f"parallel-{i}", name="p.jpg", size=100, mime="image/jpeg")
            p.expect("upload.accepted", id=f"parallel-{i}")
        p.send(type="upload.start", id="parallel-0", name="p.jpg", size=100, mime="image/jpeg")
        p.expect("upload.rejected", id="parallel-0", code="duplicate_upload_id")
        p.send(type="upload.start", id="parallel-3", name="p.jpg", size=100, mime="image/jpeg")
        p.rejected("parallel-3", "too_many_uploads")
        # The duplicate did not disturb the upload that owns the id, and a cancel frees a slot.
        p.chunk("parallel-0", 0, b"x" * 10)
        p.expect("upload.ack", id="parallel-0", offset=10)
        p.send(type="upload.cancel", id="parallel-1")
        p.send(type="upload.start", id="parallel-3", name="p.jpg", size=100, mime="image/jpeg")
        p.expect("upload.accepted", id="parallel-3")
        assert [f.name for f in partials(web)] == ["parallel-0.part", "parallel-2.part", "parallel-3.part"]


def test_a_stalled_upload_is_failed_by_the_sweeper(web: TestClient) -> None:
    registry = state_of(web).uploads
    with page(web) as p:
        p.send(type="upload.start", id="stalling", name="s.jpg", size=100, mime="image/jpeg")
        p.expect("upload.accepted")
        p.chunk("stalling", 0, b"x" * 10)
        p.expect("upload.ack", offset=10)
        # Not yet stalled now; well past the timeout it is (the sweeper's clock is a parameter).
        assert sweep(web, time.monotonic()).stalled == 0
        later = time.monotonic() + registry.settings.stall_timeout_s + 1
        assert sweep(web, later).stalled == 1
        assert "No data arrived" in p.rejected("stalling", "stalled")["detail"]
        p.chunk("stalling", 10, b"x")
        p.expect("error", code="binary_without_upload")
        assert_nothing_kept(web, p)


def test_a_message_over_the_limit_closes_with_1009(web: TestClient) -> None:
    limit = state_of(web).settings.uploads.max_message_bytes
    with page(web) as p:
        p.ws.send_bytes(encode_chunk("oversized", 0, bytes(limit)))
        with pytest.raises(WebSocketDisconnect) as closed:
            p.ping()
        assert closed.value.code == 1009
    with page(web) as p:
        p.ws.send_text('{"type": "ping", "pad": "' + "x" * limit + '"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            p.ping()
        assert closed.value.code == 1009


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "http://testserver", "sec-fetch-site": "cross-site"},
        # DNS rebinding: Origin and Host agree, but the name is not one of ours.
        {"origin": "http://attacker.example", "host": "attacker.example"},
    ],
)
def test_a_foreign_origin_is_refused(web: TestClient, headers: dict[str, str]) -> None:
    # Refused before accepting, which a real server answers with HTTP 403 (tests/test_security.py).
    with pytest.raises(WebSocketDisconnect) as refused, page(web, **headers):
        pass
    assert refused.value.code == 1008


def test_our_own_origins_are_allowed(web: TestClient) -> None:
    # Any port and scheme of an allowed host name (the configured ones and loopback).
    for origin in (
        "http://testserver",
        "http://TestServer:80",
        "https://testserver:8443",
        "http://localhost:5173",
    ):
        with page(web, origin=origin) as p:
            p.ping()


def test_configured_origins_are_allowed(settings: Settings) -> None:
    settings.server.allowed_origins = ["https://photos.example.org/"]
    with fake_app_client(settings) as web:
        with page(web, origin="https://photos.example.org") as p:
            p.ping()
        with pytest.raises(WebSocketDisconnect), page(web, origin="https://photos.example.org.evil"):
            pass
