"""The streaming multipart reader, driven through a real Starlette app over ASGI."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from capsearch.api import multipart
from capsearch.api.multipart import body_limit, read_uploaded_files
from capsearch.config import LimitSettings
from capsearch.errors import CapsearchError
from capsearch.text import clean_filename

BOUNDARY = "testboundary1234"
SMALL = LimitSettings(max_image_bytes=1000, max_files_per_request=3)


def make_app(limits: LimitSettings) -> Starlette:
    async def upload(request: Request) -> JSONResponse:
        try:
            files = await read_uploaded_files(request, "images", limits)
        except CapsearchError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status_code)
        return JSONResponse(
            [
                {
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "size": len(f.data),
                    "sha256": hashlib.sha256(f.data).hexdigest(),
                    "error": f.error.code if f.error else None,
                    "message": f.error.message if f.error else None,
                }
                for f in files
            ]
        )

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


def part(name: str, data: bytes, filename: str | None = None, content_type: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def post(
    content: bytes | AsyncIterator[bytes],
    limits: LimitSettings = SMALL,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_app(limits))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/upload", content=content, headers={"content-type": content_type})


async def test_each_file_gets_its_own_outcome() -> None:
    a, big, c = b"a" * 1000, b"B" * 2500, b"c" * 10
    resp = await post(
        body(
            part("note", b"ignored text field"),
            part("images", a, "a.jpg", "image/jpeg"),
            part("images", big, "big.png", "image/png"),
            part("other", b"x" * 5000, "not-ours.jpg"),
            part("images", c, "c.gif", "image/gif"),
        )
    )
    assert resp.status_code == 200
    files = resp.json()
    assert [f["filename"] for f in files] == ["a.jpg", "big.png", "c.gif"]
    assert [f["content_type"] for f in files] == ["image/jpeg", "image/png", "image/gif"]
    assert files[0]["size"] == 1000 and files[0]["sha256"] == hashlib.sha256(a).hexdigest()
    assert files[0]["error"] is None
    assert files[1]["error"] == "too_large" and files[1]["size"] == 0
    assert files[1]["message"] == "This file is 2.4 KB; the limit is 1000 bytes."
    assert files[2]["sha256"] == hashlib.sha256(c).hexdigest() and files[2]["error"] is None


async def test_httpx_multipart_encoding_works_too() -> None:
    transport = httpx.ASGITransport(app=make_app(SMALL))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        resp = await client.post(
            "/upload",
            files=[("images", ("one.jpg", b"1" * 10, "image/jpeg")), ("images", ("two.png", b"2" * 20))],
            data={"caption": "hello"},
        )
    assert resp.status_code == 200
    assert [(f["filename"], f["size"]) for f in resp.json()] == [("one.jpg", 10), ("two.png", 20)]


async def test_oversize_part_streamed_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    original = multipart._Collector.on_part_data
    largest = 0

    def spy(self: multipart._Collector, data: bytes, start: int, end: int) -> None:
        nonlocal largest
        original(self, data, start, end)
        largest = max(largest, len(self._buffer))

    monkeypatch.setattr(multipart._Collector, "on_part_data", spy)
    payload = body(part("images", b"Z" * 50_000, "huge.jpg"), part("images", b"ok", "ok.jpg"))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 333):
            yield payload[i : i + 333]

    resp = await post(chunks(), LimitSettings(max_image_bytes=1000, max_files_per_request=2))
    assert resp.status_code == 200
    files = resp.json()
    assert [f["error"] for f in files] == ["too_large", None]
    assert files[1]["size"] == 2
    assert 0 < largest <= 1000  # never held more of the big part than the cap


async def test_too_many_files() -> None:
    parts = [part("images", b"x", f"{i}.jpg") for i in range(4)]
    resp = await post(body(*parts))
    assert resp.status_code == 413
    assert resp.json()["code"] == "too_many_files"
    assert "at most 3" in resp.json()["message"]


async def test_too_many_files_is_refused_without_reading_the_rest() -> None:
    async def endless() -> AsyncIterator[bytes]:
        for i in range(4):
            yield part("images", b"x", f"{i}.jpg")
        while True:
            yield b"y" * 8192

    resp = await post(endless(), LimitSettings(max_image_bytes=10**9, max_files_per_request=3))
    assert (resp.status_code, resp.json()["code"]) == (413, "too_many_files")


async def test_not_multipart() -> None:
    resp = await post(b'{"images": []}', content_type="application/json")
    assert resp.status_code == 422
    assert resp.json()["code"] == "bad_request"
    assert "multipart/form-data" in resp.json()["message"]


async def test_multipart_without_boundary() -> None:
    resp = await post(body(part("images", b"x", "a.jpg")), content_type="multipart/form-data")
    assert (resp.status_code, resp.json()["code"]) == (422, "bad_request")


@pytest.mark.parametrize(
    "payload",
    [
        b"this is not multipart at all",
        body(part("images", b"x", "a.jpg"))[:-20],  # cut off before the closing boundary
        b"",
    ],
)
async def test_malformed_body(payload: bytes) -> None:
    resp = await post(payload)
    assert (resp.status_code, resp.json()["code"]) == (422, "bad_request")


async def test_no_files() -> None:
    resp = await post(body(part("note", b"just text")))
    assert resp.status_code == 422
    assert resp.json()["code"] == "no_files"
    assert '"images"' in resp.json()["message"]


async def test_empty_browser_file_input_is_not_a_file() -> None:
    resp = await post(body(part("images", b"", "", "application/octet-stream")))
    assert resp.json()["code"] == "no_files"


async def test_filename_directories_are_stripped() -> None:
    resp = await post(body(part("images", b"x", "../../etc/passwd")))
    assert resp.json()[0]["filename"] == "passwd"


def test_clean_filename() -> None:
    assert clean_filename("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert clean_filename("evil\u202egpj.exe") == "evilgpj.exe"
    assert clean_filename("tab\there\x00.png") == "tab here.png"
    assert clean_filename("..") is None
    assert clean_filename("dir/") is None
    assert clean_filename(None) is None
    assert clean_filename("é" * 300) == "é" * 255


async def test_utf8_filename() -> None:
    resp = await post(body(part("images", b"x", "café.jpg")))
    assert resp.json()[0]["filename"] == "café.jpg"


async def test_declared_length_over_limit_is_refused_before_reading() -> None:
    limits = LimitSettings(max_image_bytes=100, max_files_per_request=2)

    async def receive() -> Message:
        raise AssertionError("the body was read")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(body_limit(limits) + 1).encode()),
        ],
    }
    with pytest.raises(CapsearchError) as info:
        await read_uploaded_files(Request(scope, receive), "images", limits)
    assert (info.value.code, info.value.status_code) == ("too_large", 413)


async def test_chunked_body_over_limit_is_cut_off() -> None:
    limits = LimitSettings(max_image_bytes=100, max_files_per_request=1)

    async def endless() -> AsyncIterator[bytes]:
        yield part("images", b"", "a.jpg")[:-2]
        while True:  # never ends: the reader must stop on its own
            yield b"x" * 8192

    resp = await post(endless(), limits)
    assert (resp.status_code, resp.json()["code"]) == (413, "too_large")
