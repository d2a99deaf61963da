"""Which pages may open the socket: the app's one rule for origins (capsearch.hosts), applied to the
handshake. Browsers always send `Origin` here, so a page on another site cannot open it."""

from __future__ import annotations

from starlette.websockets import WebSocket

from capsearch.hosts import HostPolicy


def origin_allowed(websocket: WebSocket, policy: HostPolicy) -> bool:
    headers = websocket.headers
    return policy.write_allowed(headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host"))
