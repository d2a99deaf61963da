"""Every error leaves the API as JSON `{"detail", "code"}` with a fitting status.

Two askers get the same error in their own shape: an htmx request refused with a status the page
swaps (422, 429, 503) gets a toast fragment, and a browser navigating to a page gets a readable HTML
page. Whatever the input was, building the answer never fails: a 422 echoes at most a short, cleaned
preview of what it refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, JSONResponse, Response

from capsearch.errors import CapsearchError
from capsearch.templating import render

RETRY_AFTER_S = "2"
# The page's htmx config (web/templates/base.html) swaps these like a success, so a JSON answer
# would land in the page as text: htmx requests get a toast fragment with them instead.
HTMX_SWAPPED = frozenset({422, 429, 503})
# Everything else a browser may navigate to is a page, and gets its errors as one.
_API_PREFIXES = ("/api/", "/ui/", "/media/", "/static/", "/ws", "/healthz", "/readyz", "/metrics")
# Where the request id lives in the ASGI scope (set by capsearch.api.middleware.ErrorBoundary).
REQUEST_ID_KEY = "capsearch.request_id"
MAX_ECHO_CHARS = 200
MAX_MESSAGE_CHARS = 300
MAX_ERRORS_SHOWN = 20
_SURROGATES = re.compile("[\ud800-\udfff]")
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class ErrorJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            # Text that cannot be UTF-8 (a lone surrogate) slipped through: escape it, never fail.
            return json.dumps(content, ensure_ascii=True, default=repr, separators=(",", ":")).encode()


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def request_id_of(conn: HTTPConnection) -> str | None:
    rid = conn.scope.get(REQUEST_ID_KEY)
    return rid if isinstance(rid, str) else None


def is_htmx(conn: HTTPConnection) -> bool:
    return conn.headers.get("hx-request") == "true"


def wants_page(conn: HTTPConnection) -> bool:
    """A browser navigating (not a script, not htmx) to something other than the API."""
    return (
        conn.scope.get("method") in ("GET", "HEAD")
        and not is_htmx(conn)
        and "text/html" in conn.headers.get("accept", "")
        and not conn.url.path.startswith(_API_PREFIXES)
    )


def error_response(
    conn: HTTPConnection,
    status: int,
    code: str,
    detail: str,
    *,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The answer to a refused request, in the shape its asker reads (see the module docstring)."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    rid = request_id_of(conn) if status >= 500 else None
    if is_htmx(conn) and status in HTMX_SWAPPED:
        # Only the out-of-band toast applies; the element that asked keeps what it shows.
        headers["HX-Reswap"] = "none"
        html = render("partials/toast.html", level="error", message=detail)
        return HTMLResponse(html, status_code=status, headers=headers)
    if wants_page(conn):
        html = render("error.html", status=status, code=code, detail=detail, request_id=rid)
        headers["Cache-Control"] = "no-store"
        return HTMLResponse(html, status_code=status, headers=headers)
    body = error_body(code, detail, **extra)
    if rid is not None:
        body["request_id"] = rid
    return ErrorJSONResponse(body, status_code=status, headers=headers or None)


def capsearch_error_response(conn: HTTPConnection, exc: CapsearchError) -> Response:
    retry = exc.retry_after if exc.retry_after is not None else (2.0 if exc.status_code == 503 else None)
    return error_response(conn, exc.status_code, exc.code, exc.message, retry_after=retry)


async def _capsearch_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CapsearchError)
    return capsearch_error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_clean_error(e) for e in exc.errors()]
    parts = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(x) for x in err["loc"] if x not in ("query", "body", "path", "header", "cookie"))
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    if len(errors) > MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more problems")
    detail = "; ".join(parts) or "The request is not valid."
    return error_response(request, 422, "invalid_request", detail, errors=errors[:MAX_ERRORS_SHOWN])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(
        request, exc.status_code, code, clip(str(exc.detail), MAX_MESSAGE_CHARS), headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CapsearchError, _capsearch_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` made safe to send back: no lone surrogates (they cannot be UTF-8), at most `limit` chars."""
    text = _SURROGATES.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean_error(err: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": clip(str(err.get("type", "")), 100),
        "loc": [x if isinstance(x, int) else clip(str(x), 100) for x in err.get("loc", ())],
        "msg": clip(str(err.get("msg", "")), MAX_MESSAGE_CHARS),
    }
    if "input" in err:
        out["input"] = _echo(err["input"])
    ctx = {k: _echo(v) for k, v in (err.get("ctx") or {}).items() if isinstance(v, (str, int, float, bool))}
    if ctx:
        out["ctx"] = ctx
    return out


def _echo(value: Any) -> Any:
    """What a 422 shows of a refused input: a scalar as it is (text cut short), anything else as a
    short JSON preview, so a 1 MB body is never sent back whole."""
    try:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if abs(value) < 1 << 64 else clip(str(value), 40)
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if isinstance(value, str):
            return clip(value)
        if isinstance(value, bytes):
            return clip(value[: MAX_ECHO_CHARS * 4].decode("utf-8", "replace"))
        return clip(json.dumps(value, ensure_ascii=False, default=repr))
    except (ValueError, TypeError, RecursionError):
        return f"<{type(value).__name__}>"
