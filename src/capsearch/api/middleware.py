"""Two pure ASGI middlewares around every HTTP request (WebSockets pass through untouched).

`ErrorBoundary` gives each request an id (the `X-Request-ID` header; a proxy's own id is kept) and
answers whatever escapes the app: a database outage is 503 `database_unavailable`, anything else 500
`internal_error` with the id, its traceback logged once with that id. Starlette's own last resort
would answer plain text and re-raise, so uvicorn logs the traceback a second time.

`BodyDeadline` bounds how long a request body may take: all of it within `server.body_timeout_s`,
no pause longer than `server.body_idle_timeout_s`; past either the request is abandoned with 408
`body_timeout` and the connection closed, so a client sending 1 byte/s cannot hold a worker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capsearch.api.errors import (
    REQUEST_ID_KEY,
    ErrorJSONResponse,
    capsearch_error_response,
    error_body,
    error_response,
)
from capsearch.config import ServerSettings
from capsearch.db.outage import is_unavailable
from capsearch.errors import CapsearchError, DatabaseUnavailableError

log = logging.getLogger("capsearch.errors")

_PROXY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
INTERNAL = "Something went wrong on the server; try again, and if it keeps happening, report the request id."
GONE = "The client closed the connection before the request was complete."
DB_DOWN = "The database is not available right now; nothing was changed. Try again in a moment."


class BodyTimeoutError(CapsearchError):
    code = "body_timeout"
    status_code = 408


class ErrorBoundary:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        given = conn.headers.get("x-request-id", "")
        rid = given if _PROXY_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        scope[REQUEST_ID_KEY] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # Routine (a closed tab, a cancelled upload): one line, no traceback.
            log.info("%s %s: the client went away before sending the whole request [%s]", *_what(conn), rid)
            if not started:
                # Nobody reads it (nginx's "client closed request"), but every layer sees an answer: an
                # outer BaseHTTPMiddleware would raise "No response returned." without one.
                gone = ErrorJSONResponse(error_body("client_disconnected", GONE), status_code=499)
                await gone(scope, receive, send_with_id)
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("%s %s: database unavailable (%s: %s) [%s]", *_what(conn), *_short(exc), rid)
                response = capsearch_error_response(conn, DatabaseUnavailableError(DB_DOWN))
            else:
                log.error(
                    "%s %s: unexpected error [%s]", *_what(conn), rid, exc_info=exc, extra={"request_id": rid}
                )
                response = error_response(conn, 500, "internal_error", INTERNAL)
            if started:
                # Half an answer is already out; nothing valid can follow it.
                log.warning("%s %s: response cut short [%s]", *_what(conn), rid)
                return
            await response(scope, receive, send_with_id)


class BodyDeadline:
    def __init__(self, app: ASGIApp, server: ServerSettings) -> None:
        self.app = app
        self.total_s = server.body_timeout_s
        self.idle_s = server.body_idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_s
        body_done = False
        expired: BodyTimeoutError | None = None
        started = False
        answered = False  # the 408 went out instead of whatever the app answers

        async def timed_receive() -> Message:
            nonlocal body_done, expired
            if body_done or expired is not None:
                # After the body only a disconnect can come, and waiting for it is not reading a body.
                return await receive()
            remaining = deadline - loop.time()
            try:
                async with asyncio.timeout(max(0.0, min(self.idle_s, remaining))):
                    message = await receive()
            except TimeoutError:
                whole = remaining <= self.idle_s
                expired = _timeout_error(whole=whole, seconds=self.total_s if whole else self.idle_s)
                raise expired from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, answered
            if message["type"] == "http.response.start":
                if expired is not None and not started:
                    # Whatever the app made of the timeout (FastAPI calls it a parse error), it is a 408.
                    answered = True
                    await _answer_timeout(scope, expired, send)
                started = True
            if not answered:
                await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if expired is None:
                raise
        if expired is not None and not started:
            answered = True
            await _answer_timeout(scope, expired, send)


def install_middleware(app: FastAPI, server: ServerSettings) -> None:
    """The boundary outside the deadline, so the 408 carries the request id too."""
    app.add_middleware(BodyDeadline, server=server)
    app.add_middleware(ErrorBoundary)


def _timeout_error(*, whole: bool, seconds: float) -> BodyTimeoutError:
    if whole:
        msg = f"The request body did not arrive within {seconds:g} s; send it again on a faster connection."
    else:
        msg = f"The request body stopped arriving for {seconds:g} s; send it again."
    return BodyTimeoutError(msg)


async def _answer_timeout(scope: Scope, exc: BodyTimeoutError, send: Send) -> None:
    conn = HTTPConnection(scope)
    log.info("%s %s: %s", *_what(conn), exc.message)
    response = error_response(conn, exc.status_code, exc.code, exc.message, headers={"Connection": "close"})

    async def no_more_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_more_body, send)


def _what(conn: HTTPConnection) -> tuple[str, str]:
    return conn.scope.get("method", "?"), conn.url.path[:200]


def _short(exc: BaseException) -> tuple[str, str]:
    text = str(exc)
    return type(exc).__name__, (text.splitlines()[0][:200] if text else "")
