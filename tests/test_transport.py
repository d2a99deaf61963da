"""Transport limits against a real uvicorn (capsearch.server.uvicorn_config) over raw sockets: header
size, a head that never completes (slowloris), idle connections, request bodies that never end or
trickle in, the concurrency cap, and a client that gives up mid-upload.

The limits are set small so the tests are quick; the clients' pauses pace the attack, they never
stand in for waiting on the server (every wait is for the server's own answer or close).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from capsearch.config import ServerSettings, Settings
from tests.browserkit import serve
from tests.conftest import TEST_HOSTS

pytestmark = pytest.mark.fake_captioner

LIMITS = ServerSettings(
    allowed_hosts=TEST_HOSTS,
    keep_alive_s=1,
    max_header_bytes=16 * 1024,
    header_timeout_s=1,
    body_timeout_s=2,
    body_idle_timeout_s=1.5,
)
SAFETY_S = 30  # only a broken server gets this far
BOUNDARY = "capsearchboundary"
MULTIPART = f"Content-Type: multipart/form-data; boundary={BOUNDARY}"
FORM = "Content-Type: application/x-www-form-urlencoded"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"server": LIMITS})


@pytest.fixture
async def port(app: FastAPI, settings: Settings) -> AsyncIterator[int]:
    async with serve(app, settings.server) as url:
        try:
            yield int(url.rsplit(":", 1)[1])
        finally:
            await close_all()


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        if self.writer.transport.is_closing():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError:
            return False
        return True

    async def trickle(self, data: bytes, every_s: float) -> bool:
        """Send `data` a byte at a time; True if all of it went out before the server closed."""
        for i in range(len(data)):
            if not await self.send(data[i : i + 1]):
                return False
            await asyncio.sleep(every_s)
        return True

    async def until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        chunks = []
        async with asyncio.timeout(SAFETY_S):
            try:
                while chunk := await self.reader.read(65536):
                    chunks.append(chunk)
            except OSError:  # reset: what was not read yet is lost
                pass
        return b"".join(chunks)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(SAFETY_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.writer.close()


# Every connection a test opened, closed (and waited for) when its server goes: an unclosed stream is
# a ResourceWarning, which this suite treats as a failure.
_OPEN: list[Conn] = []


async def connect(port: int) -> Conn:
    conn = Conn(*await asyncio.open_connection("127.0.0.1", port))
    _OPEN.append(conn)
    return conn


async def close_all() -> None:
    while _OPEN:
        conn = _OPEN.pop()
        conn.close()
        with contextlib.suppress(OSError):
            await conn.writer.wait_closed()


def parse(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def request(method: str, path: str, *headers: str, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def multipart_start() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


async def test_oversized_headers_are_refused_with_431(port: int) -> None:
    big = "X-Big: " + "a" * 20_000
    for raw in (request("GET", "/healthz", big), request("GET", "/healthz", big)[:-4]):  # whole, unfinished
        c = await connect(port)
        await c.send(raw)
        status, body = parse(await c.until_closed())
        assert status == 431 and body["code"] == "headers_too_large"
    # 8 MiB: refused long before it is all read, with a 431 or by closing the connection.
    c = await connect(port)
    head = request("GET", "/healthz", "X-Big: ")[:-4]
    sent_all = await c.send(head) and all([await c.send(b"a" * 65536) for _ in range(128)])
    answer = await c.until_closed()
    assert answer.startswith(b"HTTP/1.1 431") or (answer == b"" and not sent_all), answer[:200]
    c = await connect(port)
    await c.send(request("GET", "/healthz"))
    assert (await c.response())[0] == 200  # and the server still serves


async def test_slowloris_head_is_cut_off(port: int) -> None:
    c = await connect(port)
    pending = asyncio.ensure_future(c.trickle(request("GET", "/healthz", "X-Slow: " + "a" * 200), 0.1))
    status, body = parse(await c.until_closed())
    assert status == 408 and body["code"] == "header_timeout"
    assert not await pending, "the head was never complete"
    # A connection that sends nothing at all is closed too.
    c = await connect(port)
    assert await c.until_closed() == b""


async def test_idle_keep_alive_connection_is_closed(port: int) -> None:
    c = await connect(port)
    await c.send(request("GET", "/healthz"))
    assert (await c.response())[0] == 200
    await c.send(request("GET", "/healthz"))  # the connection is kept for the next request ...
    assert (await c.response())[0] == 200
    assert await c.until_closed() == b""  # ... but not for ever


@pytest.mark.parametrize(
    ("head", "first"),
    [
        (request("POST", "/api/images", MULTIPART, length=10**5), multipart_start()),
        (request("PATCH", "/api/images/1", "Content-Type: application/json", length=1000), b'{"caption": "'),
        (request("POST", "/ui/images/1/caption", FORM, length=500), b"caption="),
    ],
    ids=["multipart", "json", "form"],
)  # fmt: skip
async def test_body_that_stops_gets_408(port: int, head: bytes, first: bytes) -> None:
    c = await connect(port)
    await c.send(head + first)
    status, body = parse(await c.until_closed())  # closed after answering: the rest is never read
    assert status == 408 and body["code"] == "body_timeout" and "stopped arriving" in str(body["detail"])


async def test_body_at_a_trickle_gets_408(port: int) -> None:
    c = await connect(port)
    await c.send(
        request(
            "POST", "/api/images", f"Content-Type: multipart/form-data; boundary={BOUNDARY}", length=10**5
        )
    )
    pending = asyncio.ensure_future(c.trickle(multipart_start() + b"x" * 1000, 0.1))
    status, body = parse(await c.until_closed())
    assert (
        status == 408
        and body["code"] == "body_timeout"
        and "did not arrive within 2 s" in str(body["detail"])
    )
    assert not await pending


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.loop = asyncio.get_running_loop()
        self.gone = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "went away" in record.getMessage():
            self.loop.call_soon_threadsafe(self.gone.set)


@pytest.fixture
async def records() -> AsyncIterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("capsearch", "uvicorn", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


async def test_aborted_upload_is_one_quiet_line(port: int, records: Records) -> None:
    c = await connect(port)
    await c.send(
        request(
            "POST", "/api/images", f"Content-Type: multipart/form-data; boundary={BOUNDARY}", length=10**5
        )
    )
    await c.send(multipart_start() + b"\xff\xd8" + b"x" * 5000)
    c.close()
    async with asyncio.timeout(SAFETY_S):
        await records.gone.wait()
    # A full request after it: the aborted one's last steps (in memory, on the same loop) are done too.
    c = await connect(port)
    await c.send(request("GET", "/healthz"))
    assert (await c.response())[0] == 200
    gone = [r for r in records.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO and "POST /api/images" in gone[0].getMessage()
    assert not [r for r in records.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_past_the_concurrency_cap_requests_get_json_503(app: FastAPI, settings: Settings) -> None:
    limits = settings.server.model_copy(update={"max_concurrency": 3, "body_idle_timeout_s": 60})
    async with serve(app, limits) as url:
        port = int(url.rsplit(":", 1)[1])
        held = []
        for _ in range(2):
            c = await connect(port)
            await c.send(request("POST", "/api/images", MULTIPART, "Expect: 100-continue", length=10**5))
            # The app asked for the body: this request is in flight, holding its slot.
            async with asyncio.timeout(SAFETY_S):
                assert (await c.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            held.append(c)
        c = await connect(port)
        await c.send(request("GET", "/healthz"))
        status, headers, body = await c.response()
        assert status == 503 and json.loads(body)["code"] == "server_busy" and headers["retry-after"] == "1"
        await close_all()
