"""The request guard: a foreign `Host` is refused before anything is read, and so is a write from a
page on another site (capsearch.hosts has the rule). A pure ASGI middleware, so streamed bodies and
WebSockets pass through untouched."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from capsearch.api.errors import error_body
from capsearch.hosts import HostPolicy

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Load balancers and Prometheus probe by IP address; these answers say nothing about the collection.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
POLICY_VIOLATION = 1008

CROSS_SITE = "A page on another site cannot change anything here; use this server's own page."


class RequestGuard:
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        # No Host at all is no browser (every browser sends it), so it cannot be a rebound name.
        host_ok = host is None or self.policy.host_allowed(host)
        if scope["type"] == "websocket":
            # The socket's Origin is checked where it is accepted (ws/route.py), by the same rule.
            if not host_ok:
                # Closed before accepting: the server answers the handshake with 403.
                await WebSocketClose(POLICY_VIOLATION, "host not allowed")(scope, receive, send)
                return
        elif not host_ok and not (scope["method"] in ("GET", "HEAD") and scope["path"] in PROBE_PATHS):
            await JSONResponse(error_body("host_not_allowed", _host_refused(host)), 400)(scope, receive, send)
            return
        elif scope["method"] in UNSAFE_METHODS and not self.policy.write_allowed(
            headers.get("origin"), headers.get("sec-fetch-site"), host
        ):
            await JSONResponse(error_body("cross_site_request", CROSS_SITE), 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _host_refused(host: str | None) -> str:
    name = (host or "")[:100]
    return (
        f"This server does not answer to the name {name!r}; open it by its own address, or add the name"
        " to the server's allowed hosts (CAPSEARCH_SERVER__ALLOWED_HOSTS)."
    )
