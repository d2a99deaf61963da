"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from capsearch.api.schemas import Health
from capsearch.batching.metrics import render_metrics
from capsearch.deps import StateDep

if TYPE_CHECKING:
    from capsearch.broker.web import WebBroker

MODELS = ("captioner", "transcriber", "embedder")

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep) -> JSONResponse:
    """The database answers and every model is loaded (distributed mode: has a live worker)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2), state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # any failure means "not ready", with the reason shown
        checks["database"] = f"unreachable: {type(e).__name__}"
    if state.broker is None:
        checks["captioner"] = "ok" if state.caption_batcher.running else "not running"
        checks["embedder"] = "ok" if state.embed_batcher.running else "not running"
        checks["transcriber"] = "ok" if state.transcriber_lanes.running else "not running"
    else:  # distributed mode: which models have live workers
        checks.update(await worker_checks(state.broker))
    ready = all(v == "ok" or v.startswith("ok (") for v in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def worker_checks(broker: WebBroker) -> dict[str, str]:
    checks: dict[str, str] = {}
    for model in MODELS:
        try:
            async with asyncio.timeout(2):
                live = await broker.census.live(model)
        except Exception as e:
            checks[model] = f"broker unreachable: {type(e).__name__}"
            continue
        checks[model] = f"ok ({live} worker{'s' if live != 1 else ''})" if live else "no live workers"
    return checks


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus metrics: batch sizes, queue wait, model time, queue depth."""
    payload, content_type = render_metrics()
    return Response(payload, media_type=content_type)
