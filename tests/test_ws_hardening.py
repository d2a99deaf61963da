"""`/ws` under hostile input: no message kills the socket, and one client cannot hold every upload.

Each refusal must name a stable code, keep nothing it should not (no partial, no slot, no reserved
byte) and leave the socket answering `ping`. The captioner is a fake: none of this is about captions.
"""

from __future__ import annotations

import hashlib
import logging
import time

import pytest
from fastapi.testclient import TestClient

from capsearch.config import RateLimitSettings, Settings
from capsearch.ws.messages import MAX_SAFE_INTEGER, MAX_TEXT_CHARS
from capsearch.ws.upload_handler import UploadHandler
from tests.conftest import photo_bytes
from tests.ws_page import (
    Page,
    fake_app_client,
    page,
    partials,
    signal_after,
    state_of,
    stored,
    sweep,
)

pytestmark = pytest.mark.fake_captioner

# Starlette's TestClient connects every socket from this peer: one client for the per-client limits.
CLIENT = "testclient"


def start(p: Page, upload_id: str, size: int = 100) -> None:
    p.send(type="upload.start", id=upload_id, name="p.jpg", size=size, mime="image/jpeg")


def start_text(size_digits: str) -> str:
    """An upload.start whose size is written out digit by digit (json.dumps cannot make one too long)."""
    head = '{"type": "upload.start", "id": "huge-size", "name": "a.jpg", "mime": "image/jpeg", "size": '
    return head + size_digits + "}"


def assert_holds(web: TestClient, uploads: int, reserved: int) -> None:
    registry = state_of(web).uploads
    assert (registry.held_by(CLIENT), registry.reserved_bytes, len(registry)) == (uploads, reserved, uploads)


# ---- one message never kills the socket ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("[" * 10_000, "bad_json", "nested too deeply"),
        ('{"type": "ping", "x": ' + "[" * 5_000 + "]" * 5_000 + "}", "bad_json", "nested too deeply"),
        ('{"a": ' * 2_000 + "1" + "}" * 2_000, "bad_json", "nested too deeply"),
        # Below the 300 KiB close limit, but far more than any real message needs: refused unparsed.
        ("[" * 150_000 + "]" * 150_000, "invalid_message", f"{MAX_TEXT_CHARS:,} characters"),
        (start_text("9" * 5_000), "bad_json", "too many digits"),
        (start_text("9" * 4_000), "invalid_message", "size"),
        (start_text(str(MAX_SAFE_INTEGER + 1)), "invalid_message", "size"),
        (start_text(str(2**64)), "invalid_message", "size"),
        (start_text("1e400"), "invalid_message", "size"),
        (
            '{"type": "voice.start", "id": "voice-huge", "sample_rate": ' + "9" * 4_000 + "}",
            "invalid_message",
            "",
        ),
    ],
    ids=[
        "deep-array",
        "deep-extra-field",
        "deep-objects",
        "300k-nested",
        "5000-digit-size",
        "4000-digit-size",
        "size-past-2**53",
        "size-2**64",
        "size-1e400",
        "4000-digit-sample-rate",
    ],
)
def test_a_hostile_text_message_gets_an_error_and_the_socket_stays_open(
    web: TestClient, text: str, code: str, words: str
) -> None:
    with page(web) as p:
        p.ws.send_text(text)
        error = p.expect("error", code=code)
        assert words in error["detail"] and error["detail"].endswith(".")
        assert len(error["detail"]) < 200  # the offending number is never echoed back
        p.ping()
        # Still fully usable: an upload goes through on the same socket.
        data = photo_bytes(1)
        p.upload("after-the-storm", data)
        p.expect("upload.done", id="after-the-storm")
    assert stored(web) == (1, 2)
    assert partials(web) == []


def test_a_4000_digit_size_names_the_upload(web: TestClient) -> None:
    with page(web) as p:
        p.ws.send_text(start_text("9" * 4_000))
        p.expect("error", code="invalid_message", id="huge-size")
        assert partials(web) == []
        p.ping()


def test_the_largest_declarable_size_is_too_large_not_a_crash(web: TestClient) -> None:
    with page(web) as p:
        p.send(type="upload.start", id="max-safe", name="a.jpg", size=MAX_SAFE_INTEGER, mime="image/jpeg")
        assert "the limit is 5 MB" in p.rejected("max-safe", "too_large")["detail"]
        p.ping()
    assert_holds(web, 0, 0)


def test_a_chunk_at_a_huge_offset_is_a_bad_offset_and_the_upload_goes_on(web: TestClient) -> None:
    data = photo_bytes(2)
    with page(web) as p:
        p.start("far-away", data)
        p.expect("upload.accepted", id="far-away")
        for offset in (2**64 - 1, 2**63, len(data) + 1):
            p.chunk("far-away", offset, data[:10])
            p.expect("upload.rejected", id="far-away", code="bad_offset", offset=0)
        p.ping()
        p.chunk("far-away", 0, data)
        p.expect("upload.ack", id="far-away", offset=len(data))
        p.end("far-away", data)
        p.expect("upload.done", id="far-away")
    assert stored(web) == (1, 2)


def test_an_unexpected_failure_answers_internal_error_and_is_logged_once(
    web: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: UploadHandler, message: object) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(UploadHandler, "cancel", broken)
    with caplog.at_level(logging.DEBUG, logger="capsearch.ws.connection"), page(web) as p:
        for _ in range(3):
            p.send(type="upload.cancel", id="any-upload")
            error = p.expect("error", code="internal_error")
            assert error["detail"].endswith(".")
            p.ping()
        data = photo_bytes(3)
        p.upload("still-works", data)
        p.expect("upload.done", id="still-works")
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "capsearch.ws.connection"]
    assert len(logged) == 1
    assert "ws-" in logged[0].getMessage() and logged[0].exc_info is not None


# ---- per-client and global caps on partial uploads -----------------------------------------------


def test_one_client_holds_at_most_max_per_client_uploads_across_its_sockets(settings: Settings) -> None:
    settings.uploads.max_per_client = 4
    with fake_app_client(settings) as web:
        dropped, _ = signal_after(state_of(web).uploads, "detach")
        with page(web) as second:
            with page(web) as first:
                for i in range(3):
                    start(first, f"first-up-{i}")
                    first.expect("upload.accepted", id=f"first-up-{i}")
                start(second, "second-0")
                second.expect("upload.accepted", id="second-0")
                start(second, "second-1")
                refused = second.rejected("second-1", "too_many_uploads")
                assert "At most 4 uploads from one address" in refused["detail"]
                first.ws.close(1006)  # dropped: its three partials wait for a resume, still counted
                assert dropped.wait(10)
            start(second, "second-2")
            second.rejected("second-2", "too_many_uploads")
            assert_holds(web, 4, 400)
            # Resuming one takes over its slot; it needs no new one.
            second.send(type="upload.resume", id="first-up-0")
            second.expect("upload.accepted", id="first-up-0", offset=0)
            second.send(type="upload.cancel", id="first-up-0")
            start(second, "second-3")
            second.expect("upload.accepted", id="second-3")
            assert_holds(web, 4, 400)
            assert len(partials(web)) == 4


def test_all_partials_together_reserve_at_most_max_partial_bytes(settings: Settings) -> None:
    settings.uploads.max_partial_bytes = 1024 * 1024
    with fake_app_client(settings) as web, page(web) as p:
        start(p, "big-first", size=600_000)
        p.expect("upload.accepted", id="big-first")
        start(p, "big-second", size=600_000)
        refused = p.rejected("big-second", "server_busy")
        assert refused["retry_after"] >= 1
        start(p, "small-one", size=400_000)  # still fits beside the first
        p.expect("upload.accepted", id="small-one")
        assert_holds(web, 2, 1_000_000)
        p.send(type="upload.cancel", id="big-first")
        start(p, "big-second", size=600_000)
        p.expect("upload.accepted", id="big-second")
        assert_holds(web, 2, 1_000_000)
        assert [f.name for f in partials(web)] == ["big-second.part", "small-one.part"]


def test_every_ending_gives_the_slot_and_the_bytes_back(settings: Settings) -> None:
    settings.uploads.max_per_client = 1
    with fake_app_client(settings) as web:
        registry = state_of(web).uploads

        def only_slot(p: Page, upload_id: str) -> None:
            """Start an upload, and show it holds the client's one slot."""
            start(p, upload_id)
            p.expect("upload.accepted", id=upload_id)
            start(p, "one-too-many")
            p.rejected("one-too-many", "too_many_uploads")
            assert_holds(web, 1, 100)

        with page(web) as p:
            only_slot(p, "cancelled")
            p.send(type="upload.cancel", id="cancelled")
            p.ping()
            assert_holds(web, 0, 0)

            data = photo_bytes(4)
            p.upload("completed", data)
            p.expect("upload.done", id="completed")
            assert_holds(web, 0, 0)

            only_slot(p, "damaged-file")
            p.chunk("damaged-file", 0, b"x" * 100)
            p.expect("upload.ack", offset=100)
            p.end("damaged-file", b"x" * 100, sha256=hashlib.sha256(b"other bytes").hexdigest())
            p.rejected("damaged-file", "sha256_mismatch")
            assert_holds(web, 0, 0)

            only_slot(p, "overrun-size")
            p.chunk("overrun-size", 0, b"x" * 101)
            p.rejected("overrun-size", "past_declared_size")
            assert_holds(web, 0, 0)

            only_slot(p, "stalling")
            assert sweep(web, time.monotonic() + registry.settings.stall_timeout_s + 1).stalled == 1
            p.rejected("stalling", "stalled")
            assert_holds(web, 0, 0)

            only_slot(p, "abandoned")
            dropped, _ = signal_after(registry, "detach")
            p.ws.close(1006)
            assert dropped.wait(10)
        assert_holds(web, 1, 100)  # waiting for a resume
        assert sweep(web, time.monotonic() + registry.settings.partial_ttl_s + 1).expired == 1
        assert_holds(web, 0, 0)

        closed, _ = signal_after(state_of(web).images, "release_owner")
        with page(web) as p:
            start(p, "closed-with-the-page")
            p.expect("upload.accepted", id="closed-with-the-page")
            p.ws.close(1000)
            assert closed.wait(10)
        assert_holds(web, 0, 0)
        assert partials(web) == []


# ---- rate limit -----------------------------------------------------------------------------------


def test_upload_starts_are_rate_limited_per_client(settings: Settings) -> None:
    settings.rate_limits = RateLimitSettings(uploads_burst=2, uploads_per_minute=1)
    with fake_app_client(settings) as web, page(web) as first, page(web) as second:
        first.upload("allowed-1", photo_bytes(5))
        first.expect("upload.done", id="allowed-1")
        start(second, "allowed-2")  # another socket, the same client: the same bucket
        second.expect("upload.accepted", id="allowed-2")
        start(first, "rate-limited")
        refused = first.rejected("rate-limited", "rate_limited")
        assert isinstance(refused["retry_after"], int) and 1 <= refused["retry_after"] <= 60
        assert f"try again in {refused['retry_after']} s" in refused["detail"]
        first.ping()
        # Only the refused start is affected: the upload already under way goes on.
        second.chunk("allowed-2", 0, b"x" * 10)
        second.expect("upload.ack", id="allowed-2", offset=10)
        assert_holds(web, 1, 100)
