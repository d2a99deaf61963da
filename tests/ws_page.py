"""A scripted page for the `/ws` tests: speaks docs/protocol.md over Starlette's TestClient."""

from __future__ import annotations

import hashlib
import html
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from capsearch.app import create_app
from capsearch.config import Settings, UploadSettings
from capsearch.state import AppState
from capsearch.ws.frames import encode_chunk
from capsearch.ws.uploads import SweepResult
from tests.fakes import FakeCaptioner

CHUNK = UploadSettings().chunk_size
TIMEOUT_S = 30.0  # safety net only: every wait below ends as soon as its message arrives


def fake_app_client(settings: Settings) -> TestClient:
    """A TestClient over a fresh app with these settings and the fake captioner (not yet entered)."""
    return TestClient(create_app(settings, captioner_factory=lambda _s: FakeCaptioner()))


def state_of(client: TestClient) -> AppState:
    app: FastAPI = client.app  # type: ignore[assignment]
    s: AppState = app.state.capsearch
    return s


def stored(client: TestClient) -> tuple[int, int]:
    """(rows, files) the collection holds: both 0 means nothing of a rejected file was kept."""
    total = client.get("/api/images").json()["total"]
    return total, len(state_of(client).store.all_files())


def partials(client: TestClient) -> list[Path]:
    return sorted(state_of(client).uploads.directory.iterdir())


def sweep(client: TestClient, now: float) -> SweepResult:
    """Run the upload sweeper once, on the app's loop, as if the clock read `now`."""
    assert client.portal is not None
    return client.portal.call(state_of(client).uploads.sweep, now)


def root_of(fragment: str) -> dict[str, str | None]:
    """The attributes of a fragment's first element (its id, data-stage, hx-swap-oob...)."""

    class First(HTMLParser):
        attrs: dict[str, str | None] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if self.attrs is None:
                self.attrs = dict(attrs)

    parser = First()
    parser.feed(fragment)
    return parser.attrs or {}


def text_of(fragment: str) -> str:
    return html.unescape(fragment)


def signal_after(obj: object, name: str) -> tuple[threading.Event, list[Any]]:
    """Wrap a (sync) method so a test thread can wait for the app to have called it."""
    called, results = threading.Event(), []
    original: Callable[..., Any] = getattr(obj, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        results.append(result)
        called.set()
        return result

    setattr(obj, name, spy)
    return called, results


async def _receive(ws: WebSocketTestSession, within_s: float) -> dict[str, Any]:
    with anyio.fail_after(within_s):
        # TestClient's own receive() has no timeout; its stream does.
        return dict(await ws._send_rx.receive())


class Page:
    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.fragments: list[str] = []
        self._controls: deque[dict[str, Any]] = deque()

    def send(self, **message: Any) -> None:
        self.ws.send_json(message)

    def _pump(self) -> None:
        message = self.ws.portal.call(_receive, self.ws, TIMEOUT_S)
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason", ""))
        data = json.loads(message["text"])
        if data["type"] == "fragment":
            self.fragments.append(data["html"])
        else:
            self._controls.append(data)

    def until(self, condition: Callable[[], bool]) -> None:
        """Read messages until `condition()` holds (each read waits at most TIMEOUT_S)."""
        while not condition():
            self._pump()

    def next(self) -> dict[str, Any]:
        """The next control message, whatever its type (fragments are collected on the way)."""
        while not self._controls:
            self._pump()
        return self._controls.popleft()

    def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The next control message (fragments are collected on the way); must match `kind`/`fields`."""
        while not self._controls:
            self._pump()
        message = self._controls.popleft()
        assert message["type"] == kind, message
        assert {k: message.get(k) for k in fields} == fields, message
        return message

    def fragment(self, element_id: str, stage: str | None = None) -> str:
        """The first fragment (received already or next) for this element, at this stage if given."""
        seen = 0
        while True:
            for fragment in self.fragments[seen:]:
                root = root_of(fragment)
                if root.get("id") == element_id and stage in (None, root.get("data-stage")):
                    return fragment
            seen = len(self.fragments)
            self._pump()

    def toast(self, containing: str) -> str:
        seen = 0
        while True:
            for fragment in self.fragments[seen:]:
                if "#toasts" in (root_of(fragment).get("hx-swap-oob") or "") and containing in text_of(
                    fragment
                ):
                    return fragment
            seen = len(self.fragments)
            self._pump()

    def ping(self) -> None:
        self.send(type="ping")
        self.expect("pong")

    def start(
        self, upload_id: str, data: bytes, *, mime: str = "image/jpeg", name: str = "photo.jpg"
    ) -> None:
        self.send(type="upload.start", id=upload_id, name=name, size=len(data), mime=mime)

    def chunk(self, upload_id: str, offset: int, payload: bytes) -> None:
        self.ws.send_bytes(encode_chunk(upload_id, offset, payload))

    def end(self, upload_id: str, data: bytes, sha256: str | None = None) -> None:
        self.send(type="upload.end", id=upload_id, sha256=sha256 or hashlib.sha256(data).hexdigest())

    def upload(self, upload_id: str, data: bytes, *, mime: str = "image/jpeg", chunk: int = CHUNK) -> None:
        """Start, send every chunk (one ack at a time) and end; the caller reads the outcome."""
        self.start(upload_id, data, mime=mime)
        self.expect("upload.accepted", id=upload_id, offset=0)
        for offset in range(0, len(data), chunk):
            self.chunk(upload_id, offset, data[offset : offset + chunk])
            self.expect("upload.ack", id=upload_id, offset=min(offset + chunk, len(data)))
        self.end(upload_id, data)

    def rejected(self, upload_id: str, code: str) -> dict[str, Any]:
        """A rejection, as the page sees it: the message, a failed status card and a toast."""
        message = self.expect("upload.rejected", id=upload_id, code=code)
        assert message["detail"].endswith(".")
        card = self.fragment(f"upload-{upload_id}-status", "failed")
        assert message["detail"] in text_of(card)
        self.toast(message["detail"])
        return message


@contextmanager
def page(client: TestClient, **headers: str) -> Iterator[Page]:
    with client.websocket_connect("/ws", headers=dict(headers)) as ws:
        yield Page(ws)
