"""uvicorn's HTTP/1.1 protocol (httptools) with the limits it lacks: a deadline for a request's head,
a cap on its size, and JSON answers where uvicorn would answer plain text.

httptools parses a header of any size (an 8 MiB header was served) and uvicorn has no timer while a
request's head arrives: a client sending one header byte a second (slowloris) held a connection for
ever, and so did one that connected and sent nothing. The body has its own deadline, in the app
(capsearch.api.middleware.BodyDeadline); idle keep-alive connections are uvicorn's `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from capsearch.api.errors import error_response
from capsearch.config import ServerSettings

BUSY = "The server is handling as many requests as it can; try again in a moment."


class _HeadTooLarge(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    # Set per server by `http_protocol(settings)`.
    head_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_concurrency: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own check answers plain text; this class checks the same numbers, answering JSON.
        self.limit_concurrency = None
        self._awaiting_head = True
        self._head_bytes = 0  # received since the head began, while it is incomplete
        self._head_size = 0  # of the head being parsed: its URL and headers
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Counts from the connect: a client that connects and sends nothing is not kept either.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._arm_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._awaiting_head
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            # Still no end of the head, and already too much of it.
            self._refuse(431, "headers_too_large", self._too_large_message())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_head(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        busy = (
            self.max_concurrency is not None
            and not (self.parser.should_upgrade() and self._should_upgrade())
            and max(len(self.connections), len(self.tasks)) >= self.max_concurrency
        )
        if not busy:
            super().on_headers_complete()
            return
        self.logger.warning("Exceeded concurrency limit.")
        app, self.app = self.app, _busy  # uvicorn starts `self.app` for this request
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What arrives next is the next request's head, on its own clock (armed by its first byte).
        self._awaiting_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to anything httptools cannot parse (and to _HeadTooLarge, raised above).
        status, code, detail = self._refusal or (400, "bad_http", "The request is not valid HTTP/1.1.")
        self._refusal = None
        self._write_json(status, code, detail)

    def _count_head(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self.max_header_bytes:
            self._refusal = (431, "headers_too_large", self._too_large_message())
            raise _HeadTooLarge  # httptools stops parsing; uvicorn then calls send_400_response

    def _too_large_message(self) -> str:
        kib = self.max_header_bytes // 1024
        return f"The request's headers are larger than {kib} KiB; send fewer or smaller ones."

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self.logger.warning("Refused a request: %s.", code)
        self._write_json(status, code, detail)

    def _write_json(self, status: int, code: str, detail: str) -> None:
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail, "code": code}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            # Nothing of a request yet (a fresh or an idle connection): just close it.
            self.transport.close()
            return
        seconds = f"{self.head_timeout_s:g}"
        self._refuse(408, "header_timeout", f"The request's headers did not arrive within {seconds} s.")


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        HTTPConnection(scope), 503, "server_busy", BUSY, retry_after=1, headers={"Connection": "close"}
    )
    await response(scope, receive, send)


def http_protocol(server: ServerSettings) -> type[GuardedHttpProtocol]:
    """The protocol class for one server's limits (uvicorn builds it with its own arguments)."""

    class Protocol(GuardedHttpProtocol):
        head_timeout_s = server.header_timeout_s
        max_header_bytes = server.max_header_bytes
        max_concurrency = server.max_concurrency

    return Protocol
