"""Uploads over `/ws` end to end: chunks and acks, interleaving, resume, clean-up, the live feed."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi.testclient import TestClient

from capsearch.app import create_app
from capsearch.batching import Priority
from capsearch.config import Settings
from capsearch.intake.images import normalise_image
from capsearch.ws.uploads import UploadRegistry
from tests import imagefactory as make
from tests.conftest import photo_bytes
from tests.fakes import FakeCaptioner
from tests.ws_page import CHUNK, page, partials, signal_after, state_of, stored, sweep, text_of


def test_a_large_photo_arrives_in_chunks_and_is_captioned(web: TestClient) -> None:
    """The real (tiny) captioner: acks, done, then the status card and the collection card reach done."""
    data = make.encode(make.noise((1100, 800)), "JPEG", quality=95)
    assert 900_000 < len(data) < 5 * 1024 * 1024
    chunks = [(o, data[o : o + CHUNK]) for o in range(0, len(data), CHUNK)]
    with page(web) as p:
        p.start("big-photo-1", data, name="../holiday/beach.jpg")
        accepted = p.expect("upload.accepted", id="big-photo-1", offset=0, chunk_size=CHUNK)
        window = accepted["window"]
        acks: list[int] = []
        sent = 0
        while len(acks) < len(chunks):
            # Keep up to `window` chunks in flight, as the page does.
            while sent < len(chunks) and sent - len(acks) < window:
                p.chunk("big-photo-1", *chunks[sent])
                sent += 1
            acks.append(p.expect("upload.ack", id="big-photo-1")["offset"])
        assert acks == [min(o + CHUNK, len(data)) for o, _ in chunks]
        p.end("big-photo-1", data)
        done = p.expect("upload.done", id="big-photo-1", duplicate=False)
        image_id = done["image_id"]
        status = p.fragment("upload-big-photo-1-status", "done")
        card = p.fragment(f"image-{image_id}", "done")
    image = web.get(f"/api/images/{image_id}").json()
    assert image["status"] == "ready"
    assert image["filename"] == "beach.jpg"  # display text only, never a path
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert image["caption"] and image["caption"] in text_of(status) and image["caption"] in text_of(card)
    assert partials(web) == []


def test_two_uploads_interleave_on_one_socket(web: TestClient) -> None:
    a, b = photo_bytes(1, size=(900, 700)), photo_bytes(2, size=(900, 700))
    step = 8 * 1024
    with page(web) as p:
        p.start("upload-aaa", a)
        p.expect("upload.accepted", id="upload-aaa")
        p.start("upload-bbb", b)
        p.expect("upload.accepted", id="upload-bbb")
        for offset in range(0, max(len(a), len(b)), step):
            for uid, data in (("upload-aaa", a), ("upload-bbb", b)):
                if offset < len(data):
                    p.chunk(uid, offset, data[offset : offset + step])
                    p.expect("upload.ack", id=uid, offset=min(offset + step, len(data)))
        p.end("upload-aaa", a)
        p.end("upload-bbb", b)
        done = {m["id"]: m for m in (p.expect("upload.done"), p.expect("upload.done"))}
        assert done.keys() == {"upload-aaa", "upload-bbb"}
        assert done["upload-aaa"]["image_id"] != done["upload-bbb"]["image_id"]
        p.fragment("upload-upload-aaa-status", "done")
        p.fragment("upload-upload-bbb-status", "done")
    assert stored(web) == (2, 4)


def test_an_upload_resumes_on_a_new_socket_after_a_drop(web: TestClient) -> None:
    data = photo_bytes(3, size=(900, 700))
    half = len(data) // 2
    with page(web) as p:
        p.start("resumable-1", data)
        p.expect("upload.accepted")
        p.chunk("resumable-1", 0, data[:half])
        p.expect("upload.ack", offset=half)
        p.ws.close(1006)  # dropped, not closed by the page: the partial must survive
    assert [f.name for f in partials(web)] == ["resumable-1.part"]
    with page(web) as p:
        p.send(type="upload.resume", id="resumable-1")
        p.expect("upload.accepted", id="resumable-1", offset=half)
        p.chunk("resumable-1", half, data[half:])
        p.expect("upload.ack", offset=len(data))
        p.end("resumable-1", data)
        done = p.expect("upload.done", id="resumable-1", duplicate=False)
        p.fragment("upload-resumable-1-status", "done")
        p.send(type="upload.resume", id="resumable-1")  # finished uploads cannot be resumed
        p.rejected("resumable-1", "unknown_upload")
    assert stored(web) == (1, 2)
    assert web.get(f"/api/images/{done['image_id']}").json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert partials(web) == []


def test_the_same_photo_twice_is_stored_once(web: TestClient) -> None:
    data = photo_bytes(4)
    with page(web) as p:
        p.upload("first-copy", data)
        first = p.expect("upload.done", duplicate=False)
        p.fragment("upload-first-copy-status", "done")
        p.upload("second-copy", data)
        p.expect("upload.done", image_id=first["image_id"], duplicate=True)
        p.fragment("upload-second-copy-status", "done")
    assert stored(web) == (1, 2)


def test_every_open_page_sees_new_images(web: TestClient) -> None:
    with page(web) as watcher, page(web) as uploader:
        uploader.upload("shared-photo", photo_bytes(5))
        image_id = uploader.expect("upload.done")["image_id"]
        card = watcher.fragment(f"image-{image_id}", "done")
        assert "hx-swap-oob" in card
        watcher.ping()
        # The watcher started no upload, so it gets no upload status cards.
        assert not any("upload-" in f for f in watcher.fragments)


def test_abandoned_partials_expire(web: TestClient) -> None:
    registry = state_of(web).uploads
    dropped, _ = signal_after(registry, "detach")
    with page(web) as p:
        p.send(type="upload.start", id="abandoned-1", name="a.jpg", size=100, mime="image/jpeg")
        p.expect("upload.accepted")
        p.chunk("abandoned-1", 0, b"x" * 10)
        p.expect("upload.ack", offset=10)
        p.ws.close(1006)
        assert dropped.wait(10)
    ttl = registry.settings.partial_ttl_s
    # Within the TTL it waits for a resume; after it, it is gone.
    assert sweep(web, time.monotonic() + ttl - 5).expired == 0
    assert [f.name for f in partials(web)] == ["abandoned-1.part"]
    assert sweep(web, time.monotonic() + ttl + 1).expired == 1
    assert partials(web) == []
    with page(web) as p:
        p.send(type="upload.resume", id="abandoned-1")
        p.rejected("abandoned-1", "unknown_upload")


async def test_leftovers_of_a_previous_process_are_deleted_at_start(
    settings: Settings, tmp_path: Any
) -> None:
    directory = tmp_path / "uploads"
    (directory / "stray-dir").mkdir(parents=True)
    (directory / "old-upload.part").write_bytes(b"half a photo")
    registry = UploadRegistry(settings.uploads, directory)
    await registry.start()
    try:
        assert list(directory.iterdir()) == []
    finally:
        await registry.stop()


def test_closing_the_page_deletes_its_partials_and_releases_its_captions(settings: Settings) -> None:
    fake = FakeCaptioner()
    fake.gate.clear()
    with TestClient(create_app(settings, captioner_factory=lambda _s: fake)) as web:
        state = state_of(web)
        released, moved = signal_after(state.images, "release_owner")
        priorities: list[Priority] = []
        submit = state.caption_batcher.submit

        def record(item: Any, priority: Priority = Priority.INTERACTIVE, *args: Any, **kw: Any) -> Any:
            priorities.append(priority)
            return submit(item, priority, *args, **kw)

        state.caption_batcher.submit = record  # type: ignore[method-assign]
        with page(web) as watcher:
            with page(web) as p:
                p.upload("in-the-model", photo_bytes(6))
                running = p.expect("upload.done")["image_id"]
                assert fake.entered.wait(10)  # the model now holds this one
                p.upload("waiting-behind", photo_bytes(7))
                waiting = p.expect("upload.done")["image_id"]
                p.fragment("upload-waiting-behind-status", "queued")
                p.send(type="upload.start", id="half-sent", name="h.jpg", size=100, mime="image/jpeg")
                p.expect("upload.accepted")
                p.chunk("half-sent", 0, b"x" * 10)
                p.expect("upload.ack", offset=10)
                p.ws.close(1000)
                assert released.wait(10)
            assert moved == [1]  # the waiting one; the running one cannot be taken back
            assert partials(web) == []
            fake.gate.set()
            watcher.fragment(f"image-{running}", "done")
            watcher.fragment(f"image-{waiting}", "done")
        assert priorities == [Priority.INTERACTIVE, Priority.INTERACTIVE, Priority.BACKGROUND]
        assert web.get(f"/api/images/{waiting}").json()["status"] == "ready"


def test_a_socket_upload_is_moved_into_the_store_not_written_again(web: TestClient, monkeypatch: Any) -> None:
    """Its bytes were hashed as they arrived and lie on the store's filesystem: the temp file becomes
    the stored original (same inode), and neither a second write nor a second hash happens."""
    state = state_of(web)
    data = photo_bytes(77)
    inodes: list[int] = []
    real_complete = state.uploads.complete

    async def complete_and_note(upload: Any, sha256: str) -> Any:
        received = await real_complete(upload, sha256)
        inodes.append(received.path.stat().st_ino)
        return received

    def no_second_write(*_args: object) -> None:
        raise AssertionError("a socket upload's original must be moved in, not written again")

    monkeypatch.setattr(state.uploads, "complete", complete_and_note)
    monkeypatch.setattr(state.store, "put", no_second_write)
    digests: list[str | None] = []

    def normalise_noting_the_digest(*args: Any, sha256: str | None = None) -> Any:
        digests.append(sha256)  # given: the bytes are not hashed again
        return normalise_image(*args, sha256=sha256)

    monkeypatch.setattr("capsearch.pipelines.images.normalise_image", normalise_noting_the_digest)
    with page(web) as p:
        p.upload("moved-in", data)
        done = p.expect("upload.done", id="moved-in", duplicate=False)
        p.fragment("upload-moved-in-status", "done")
    image = web.get(f"/api/images/{done['image_id']}").json()
    original = state.store.original_path(image["sha256"], "image/jpeg")
    assert original.read_bytes() == data and original.stat().st_ino == inodes[0]
    assert digests == [hashlib.sha256(data).hexdigest()]
    assert partials(web) == []
