"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from capsearch.api.schemas import Health
from capsearch.batching.metrics import render_metrics
from capsearch.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep) -> JSONResponse:
    """Models are loaded and the database answers."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2), state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # any failure means "not ready", with the reason shown
        checks["database"] = f"unreachable: {type(e).__name__}"
    checks["captioner"] = "ok" if state.caption_batcher.running else "not running"
    checks["embedder"] = "ok" if state.embed_batcher.running else "not running"
    checks["transcriber"] = "ok" if state.transcriber_lanes.running else "not running"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus metrics: batch sizes, queue wait, model time, queue depth."""
    payload, content_type = render_metrics()
    return Response(payload, media_type=content_type)
