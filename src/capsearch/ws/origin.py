"""Which pages may open the socket: browsers always send `Origin`, so a foreign one is refused."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.websockets import WebSocket

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalise_origin(origin: str) -> str:
    """`scheme://host[:port]` in lower case, without a default port or trailing slash."""
    origin = origin.strip().rstrip("/").lower()
    scheme, sep, host = origin.partition("://")
    if not sep:
        return origin
    port = _DEFAULT_PORTS.get(scheme)
    if port and host.endswith(f":{port}"):
        host = host[: -len(port) - 1]
    return f"{scheme}://{host}"


def own_origin(websocket: WebSocket) -> str | None:
    host = websocket.headers.get("host")
    if not host:
        return None
    scheme = "https" if websocket.url.scheme in ("wss", "https") else "http"
    return normalise_origin(f"{scheme}://{host}")


def origin_allowed(websocket: WebSocket, allowed: Iterable[str]) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # scripts and other non-browser clients; a browser cannot omit it
    origin = normalise_origin(origin)
    return origin == own_origin(websocket) or origin in {normalise_origin(a) for a in allowed}
