"""The page's WebSocket (docs/protocol.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from capsearch.deps import SocketServicesDep
from capsearch.hosts import HostPolicy
from capsearch.ws.connection import Connection
from capsearch.ws.origin import origin_allowed

router = APIRouter(tags=["websocket"])

POLICY_VIOLATION = 1008


@router.websocket("/ws")
async def page_socket(websocket: WebSocket, services: SocketServicesDep) -> None:
    """Uploads in, acks and live HTML fragments out."""
    if not origin_allowed(websocket, HostPolicy(services.settings.server)):
        # Closing before accepting is answered with HTTP 403 by the server (uvicorn, hypercorn);
        # a denial-response body would say no more, and uvicorn logs it as an error.
        await websocket.close(code=POLICY_VIOLATION)
        return
    await Connection(websocket, services).serve()
