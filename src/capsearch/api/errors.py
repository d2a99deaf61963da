"""Every error leaves the API as JSON `{"detail", "code"}` with a fitting status."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from capsearch.errors import CapsearchError

RETRY_AFTER_S = "2"


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


async def _capsearch_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CapsearchError)
    retry = exc.retry_after if exc.retry_after is not None else (2.0 if exc.status_code == 503 else None)
    headers = {"Retry-After": str(math.ceil(retry))} if retry is not None else None
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status_code, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return JSONResponse(
        error_body("invalid_request", "; ".join(parts) or "The request is not valid.", errors=exc.errors()),
        status_code=422,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CapsearchError, _capsearch_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
