"""How capsearch runs under uvicorn — one place, so `serve`, the benchmarks and the tests agree.

The transport limits (docs/security.md) come from `ServerSettings`: idle keep-alive connections close
after `keep_alive_s`, a request's head must arrive within `header_timeout_s` and be at most
`max_header_bytes`, and past `max_concurrency` connections or requests at once new requests get 503.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from capsearch.config import ServerSettings
from capsearch.shutdown import ShutdownClock
from capsearch.transport import http_protocol

# The socket mostly carries image bytes that are already compressed: permessage-deflate would burn
# CPU on both ends for nothing (measured: it cut loopback upload throughput from hundreds of MB/s
# to about 25 MB/s).
WS_PER_MESSAGE_DEFLATE = False
# The protocol's largest frame is a 256 KiB chunk plus its header; the app enforces its own
# (smaller, configurable) limit and closes with 1009, this is only the transport's backstop.
WS_MAX_SIZE = 1 << 20


def uvicorn_config(
    app: FastAPI,
    server: ServerSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    **extra: Any,
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=server.host if host is None else host,
        port=server.port if port is None else port,
        log_level=log_level,
        http=http_protocol(server),
        # uvicorn counts keep-alive in whole seconds.
        timeout_keep_alive=max(1, math.ceil(server.keep_alive_s)),
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=WS_PER_MESSAGE_DEFLATE,
        # The app answers requests waiting for captions within `shutdown_grace_s` (503 shutting_down;
        # see `Server`); a second more, then whatever still runs is cut off.
        timeout_graceful_shutdown=math.ceil(server.shutdown_grace_s) + 1,
        **extra,
    )


class Server(uvicorn.Server):
    """uvicorn's server, telling the app the moment shutdown begins (SIGTERM), before it waits for
    open requests: their grace (`server.shutdown_grace_s`) counts from here."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        clock = getattr(getattr(self.config.app, "state", None), "shutdown_clock", None)
        if isinstance(clock, ShutdownClock):
            clock.begin()
        await super().shutdown(sockets)
